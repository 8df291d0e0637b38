package smtp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

// TestRunnerHelperProcess is not a test: it is the queue runner process
// that TestKillDuringDelivery starts and kills with SIGKILL.
func TestRunnerHelperProcess(t *testing.T) {
	dir := os.Getenv("MAILBOX_RUNNER_DIR")
	if dir == "" {
		t.Skip("helper process for TestKillDuringDelivery")
	}
	port, _ := strconv.Atoi(os.Getenv("MAILBOX_RUNNER_MXPORT"))
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := store.Open(ctx, store.Options{Dir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(RunnerOptions{Store: st, Logger: log, Hostname: "mx.a.test", NoDKIM: true,
		Resolver: NewResolver(os.Getenv("MAILBOX_RUNNER_DNS"), 2*time.Second), MXPort: port})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Minute) // until killed
	os.Exit(3)
}

// TestKillDuringDelivery: A's runner is killed with SIGKILL while B has
// received the message data but not yet answered. B never acknowledged
// it, so it stored nothing; after the restart A sends it again, and bob
// has it exactly once.
func TestKillDuringDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	d := startDNS(t)
	d.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
	ctx := context.Background()

	// A's data directory, with one message for bob queued.
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	st.AddDomain(ctx, "a.test")
	alice, err := st.CreateAccount(ctx, aliceA, password)
	if err != nil {
		t.Fatal(err)
	}
	msg := storetest.CRLF(storetest.Message(aliceA, bobB, "once", "exactly once, please"))
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{bobB}, Data: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// B at first: takes the data, then never answers.
	ln := listen(t)
	port := ln.Addr().(*net.TCPAddr).Port
	gotData := make(chan struct{})
	go stallingServer(ln, gotData)

	cmd := exec.Command(os.Args[0], "-test.run=^TestRunnerHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "MAILBOX_RUNNER_DIR="+dir, "MAILBOX_RUNNER_DNS="+d.addr,
		"MAILBOX_RUNNER_MXPORT="+strconv.Itoa(port))
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	select {
	case <-gotData:
	case <-time.After(15 * time.Second):
		t.Fatalf("the runner never sent the data; its log:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	ln.Close()

	// B for real, on the same port; A restarts.
	b := newInstance(t, "b.test", []string{bobB}, Options{}, store.Options{})
	bln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	bsrv := New(Options{Store: b.st, Logger: b.log, Hostname: "mx.b.test"})
	go bsrv.Serve(bln)
	defer bsrv.Shutdown(context.Background())

	a := &instance{t: t, logs: &syncBuffer{}}
	a.log = slog.New(slog.NewTextHandler(a.logs, nil))
	if a.st, err = store.Open(ctx, store.Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	defer a.st.Close()
	q, _ := a.st.Queue(ctx, store.QueueFilter{})
	if len(q) != 1 || !q[0].Sending {
		t.Fatalf("after the kill the entry should be marked in flight: %+v", q)
	}
	opts := fastRetry(d, port)
	opts.NoDKIM = true
	a.startRunner(opts)
	b.waitInbox(bobB, 1, 10*time.Second)
	a.waitQueueEmpty(5 * time.Second)
	time.Sleep(500 * time.Millisecond)
	if got := inboxOf(t, b.st, bobB); len(got) != 1 || !strings.Contains(string(got[0]), "exactly once, please") {
		t.Fatalf("bob has %d copies, want 1", len(got))
	}
	if !strings.Contains(a.logs.String(), "attempts interrupted by a restart are retried") {
		t.Errorf("recovery not logged:\n%s", a.logs.String())
	}
}

// stallingServer speaks SMTP until the end of the message data, closes
// gotData, and then never answers.
func stallingServer(ln net.Listener, gotData chan struct{}) {
	nc, err := ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	fmt.Fprintf(nc, "220 stall.test ESMTP\r\n")
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if inData {
			if line == ".\r\n" {
				close(gotData)
				io.Copy(io.Discard, r) // until the client dies
				return
			}
			continue
		}
		switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); verb {
		case "EHLO":
			fmt.Fprintf(nc, "250-stall.test\r\n250 8BITMIME\r\n")
		case "DATA":
			fmt.Fprintf(nc, "354 go on\r\n")
			inData = true
		case "QUIT":
			fmt.Fprintf(nc, "221 bye\r\n")
			return
		default:
			fmt.Fprintf(nc, "250 ok\r\n")
		}
	}
}
