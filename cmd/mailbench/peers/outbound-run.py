#!/usr/bin/python3
"""Postfix -> Postfix outbound figure: N messages of 4 KiB are put on hold in
oa (so the queue is full before the clock starts, as in mailbox's
BenchmarkOutbound1000), then released; the clock runs until ob's Maildir has
all N. Bounded: 120 s."""
import os, smtplib, subprocess, sys, time
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
B = "/tmp/pfbench"
body = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n" * 64
tag = str(int(time.time()))
s = smtplib.SMTP("127.0.0.1", 2611)
for i in range(N):
    msg = f"From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: bench {i}\r\nMessage-ID: <{tag}.{i}@a.test>\r\n\r\n{body}"
    s.sendmail("alice@a.test", ["bob@b.test"], msg)
s.quit()
def count(d):
    n = 0
    for _, _, files in os.walk(d):
        n += len(files)
    return n
deadline = time.time() + 60
while count(f"{B}/oa/spool/hold") < N:
    if time.time() > deadline:
        sys.exit("messages not on hold after 60 s")
    time.sleep(0.05)
def masters():
    return [int(open(f"{B}/{i}/spool/pid/master.pid").read().split()[0]) for i in ("oa", "ob")]
def cpu_ticks():
    """utime+stime of both instances' processes, plus what their masters
    have reaped (children that exited)."""
    ms = set(masters())
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(f[1])
        if int(pid) in ms:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        elif ppid in ms:
            total += int(f[11]) + int(f[12])
    return total
new = f"{B}/ob/mail/bob/new"
before = count(new) if os.path.isdir(new) else 0
c0 = cpu_ticks()
t0 = time.time()
subprocess.run(["postsuper", "-c", f"{B}/oa/etc", "-H", "ALL"], check=True, capture_output=True)
subprocess.run(["postqueue", "-c", f"{B}/oa/etc", "-f"], check=True)
deadline = t0 + 120
while True:
    got = (count(new) if os.path.isdir(new) else 0) - before
    if got >= N:
        break
    if time.time() > deadline:
        sys.exit(f"only {got}/{N} delivered after 120 s")
    time.sleep(0.01)
dt = time.time() - t0
time.sleep(0.2)  # let the last deliveries' processes settle
cpu = (cpu_ticks() - c0) / os.sysconf("SC_CLK_TCK")
load = open("/proc/loadavg").read().split()[:3]
print(f"postfix->postfix n={N} dur={dt:.2f}s rate={N/dt:.1f}/s cpu-ms/msg={cpu*1000/N:.2f} load={' '.join(load)}")
for f in os.listdir(new):
    os.remove(os.path.join(new, f))
