package main

// End-to-end tests: the real mailbox binary, built once in TestMain, runs as
// a subprocess on 127.0.0.1 with a temporary config and data directory, and
// is driven by real third-party clients (swaks, fetchmail, getmail6) and by
// plain sockets. Tools that are missing make a test skip locally, and fail
// it when CI=true.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	netsmtp "net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mailboxBin is the binary under test, built by TestMain.
var mailboxBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailbox-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mailboxBin = filepath.Join(dir, "mailbox")
	args := []string{"build", "-o", mailboxBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mailbox:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTool skips the test when a third-party client is not installed,
// except in CI, where .ci/run installs it and a missing tool is a failure.
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (CI must install it: see .ci/run)", name)
			}
			t.Skipf("%s is not installed (apt-get install %s)", name, name)
		}
	}
}

// instance is one data directory and config, served by successive
// processes (a restart is a new process on the same instance).
type instance struct {
	t      *testing.T
	dir    string
	config string // "": no config file, the built-in defaults
	// workDir is the commands' working directory ("" is the test's);
	// with no config file, data lives in workDir/data.
	workDir string
}

// configArgs is the --config flag for the instance's commands, if any.
func (in *instance) configArgs() []string {
	if in.config == "" {
		return nil
	}
	return []string{"--config", in.config}
}

func newInstance(t *testing.T, extra string) *instance {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`hostname = "localhost"
data_dir = %q
shutdown_timeout = "10s"

[listen]
smtp = "127.0.0.1:0"
submission = "127.0.0.1:0"
submissions = "127.0.0.1:0"
pop3 = "127.0.0.1:0"
pop3s = "127.0.0.1:0"
imap = ""
imaps = ""
http = ""
https = ""

[log]
level = "debug"
%s`, filepath.Join(dir, "data"), extra)
	p := filepath.Join(dir, "mailbox.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &instance{t: t, dir: dir, config: p}
}

// result of one mailbox command.
type result struct {
	code           int
	stdout, stderr string
}

// run runs a mailbox command against the instance, with stdin.
func (in *instance) run(stdin string, args ...string) result {
	in.t.Helper()
	cmd := exec.Command(mailboxBin, append(args, in.configArgs()...)...)
	cmd.Env = cleanEnv()
	cmd.Dir = in.workDir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		in.t.Fatalf("mailbox %s: %v", strings.Join(args, " "), err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// must runs a command that has to succeed.
func (in *instance) must(stdin string, args ...string) string {
	in.t.Helper()
	r := in.run(stdin, args...)
	if r.code != 0 {
		in.t.Fatalf("mailbox %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// addUser creates an account with a password.
func (in *instance) addUser(addr, pass string) {
	in.t.Helper()
	in.must(pass+"\n", "user", "add", addr, "--password-stdin")
}

// cleanEnv is the environment without MAILBOX_* variables of the caller.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAILBOX_") {
			env = append(env, kv)
		}
	}
	return env
}

// proc is one running `mailbox serve`.
type proc struct {
	t        *testing.T
	cmd      *exec.Cmd
	addrs    map[string]string // listener key -> bound address
	stdout   string            // everything printed up to "Stop it with"
	mu       sync.Mutex
	stderr   bytes.Buffer
	exited   chan struct{}
	exitCode int
}

var listenerLine = regexp.MustCompile(`^\s+(\S+)\s+(\S+)\s+up\s`)

// start runs `mailbox serve` and waits until it reports its listeners.
func (in *instance) start() *proc {
	in.t.Helper()
	p := &proc{t: in.t, addrs: map[string]string{}, exited: make(chan struct{})}
	p.cmd = exec.Command(mailboxBin, append([]string{"serve"}, in.configArgs()...)...)
	p.cmd.Env = cleanEnv()
	p.cmd.Dir = in.workDir
	p.cmd.Stderr = lockedWriter{&p.mu, &p.stderr}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		in.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var all strings.Builder
		done := false
		for sc.Scan() {
			line := sc.Text()
			if done {
				continue // keep draining
			}
			all.WriteString(line + "\n")
			if m := listenerLine.FindStringSubmatch(line); m != nil {
				p.addrs[m[1]] = m[2]
			}
			if strings.HasPrefix(line, "Stop it with") {
				p.stdout = all.String()
				done = true
				ready <- nil
			}
		}
		if !done {
			p.stdout = all.String()
			ready <- errors.New("mailbox exited before it was ready")
		}
	}()
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.exitCode = ee.ExitCode()
		}
		close(p.exited)
	}()
	in.t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if strings.Contains(p.logs(), "WARNING: DATA RACE") {
			in.t.Errorf("the race detector found a data race in mailbox serve")
		}
		if in.t.Failed() {
			in.t.Logf("mailbox serve stderr:\n%s", p.logs())
		}
	})
	select {
	case err := <-ready:
		if err != nil {
			<-p.exited
			in.t.Fatalf("%v (exit %d)\nstdout:\n%s\nstderr:\n%s", err, p.exitCode, p.stdout, p.logs())
		}
	case <-time.After(30 * time.Second):
		in.t.Fatalf("mailbox serve not ready after 30s\nstderr:\n%s", p.logs())
	}
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *proc) addr(key string) string {
	p.t.Helper()
	a, ok := p.addrs[key]
	if !ok {
		p.t.Fatalf("listener %s is not up; start-up output:\n%s", key, p.stdout)
	}
	return a
}

func (p *proc) port(key string) string {
	_, port, _ := net.SplitHostPort(p.addr(key))
	return port
}

// stop sends sig and waits for the process to exit; it returns the exit code.
func (p *proc) stop(sig os.Signal, within time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(within):
		p.t.Fatalf("mailbox did not exit within %v of %v", within, sig)
	}
	return p.exitCode
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// pop3Conn is a plain-socket POP3 client.
type pop3Conn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialPOP3(t *testing.T, addr string) *pop3Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &pop3Conn{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expectOK(c.line())
	return c
}

func (c *pop3Conn) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("pop3 read: %v (got %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

func (c *pop3Conn) expectOK(line string) string {
	c.t.Helper()
	if !strings.HasPrefix(line, "+OK") {
		c.t.Fatalf("pop3: want +OK, got %q", line)
	}
	return line
}

// cmd sends one command and returns its first reply line, which must be +OK.
func (c *pop3Conn) cmd(format string, args ...any) string {
	c.t.Helper()
	fmt.Fprintf(c.conn, format+"\r\n", args...)
	return c.expectOK(c.line())
}

// multi reads a multi-line body after +OK, un-stuffing dots; lines keep CRLF.
func (c *pop3Conn) multi() []byte {
	c.t.Helper()
	var out []byte
	for {
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		s, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("pop3 read: %v", err)
		}
		if s == ".\r\n" {
			return out
		}
		out = append(out, strings.TrimPrefix(s, ".")...)
	}
}

func (c *pop3Conn) login(user, pass string) {
	c.t.Helper()
	c.cmd("USER %s", user)
	c.cmd("PASS %s", pass)
}

// stat returns the message count.
func (c *pop3Conn) stat() int {
	c.t.Helper()
	var n, size int
	if _, err := fmt.Sscanf(c.cmd("STAT"), "+OK %d %d", &n, &size); err != nil {
		c.t.Fatalf("STAT: %v", err)
	}
	return n
}

func (c *pop3Conn) retr(n int) []byte {
	c.t.Helper()
	c.cmd("RETR %d", n)
	return c.multi()
}

// countMessages logs in, counts the INBOX and quits.
func countMessages(t *testing.T, addr, user, pass string) int {
	t.Helper()
	c := dialPOP3(t, addr)
	c.login(user, pass)
	n := c.stat()
	c.cmd("QUIT")
	return n
}

// testMessage is a message with CRLF line ends and a unique Message-ID.
func testMessage(id, body string) string {
	return "From: Bob <bob@example.org>\r\n" +
		"To: Alice <alice@localhost>\r\n" +
		"Subject: e2e " + id + "\r\n" +
		"Date: Sun, 22 Nov 2026 04:00:00 +0000\r\n" +
		"Message-ID: <" + id + "@example.org>\r\n" +
		"\r\n" +
		body + "\r\n" +
		".a line that starts with a dot\r\n" +
		"last line\r\n"
}

// sendSMTP delivers one message with net/smtp and returns once the server
// has answered the end of DATA.
func sendSMTP(t *testing.T, addr, from, to, msg string) error {
	t.Helper()
	c, err := netsmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("e2e.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil { // reads the reply to the final dot
		return err
	}
	return c.Quit()
}

// checkDelivered checks got is msg with the trace headers mailbox adds on
// top: Return-Path (RFC 5321 §4.4) and Received.
func checkDelivered(t *testing.T, got []byte, msg string) {
	t.Helper()
	if !bytes.HasSuffix(got, []byte(msg)) {
		t.Fatalf("message bytes differ from what was sent:\ngot:\n%q\nsent:\n%q", got, msg)
	}
	head := string(got[:len(got)-len(msg)])
	if !regexp.MustCompile(`^Return-Path: <[^>]*>\r\nReceived: from [^\r]*\r\n(\t[^\r]*\r\n)*(Authentication-Results: [^\r]*\r\n(\t[^\r]*\r\n)*)?$`).MatchString(head) ||
		!strings.Contains(head, "by localhost") {
		t.Errorf("added headers are not Return-Path and a Received: by localhost:\n%q", head)
	}
}

// swaks sends msg through swaks to the SMTP listener.
func swaks(t *testing.T, addr, to, msg string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	f := filepath.Join(t.TempDir(), "msg.eml")
	// swaks ends DATA with CRLF "." CRLF after the file's content, so the
	// file leaves out the message's final CRLF.
	if err := os.WriteFile(f, []byte(strings.TrimSuffix(msg, "\r\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("swaks", "--server", host, "--port", port,
		"--from", "bob@example.org", "--to", to, "--helo", "e2e.test",
		"--data", "@"+f, "--timeout", "20").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^<-\s+250 `).Match(out) {
		t.Fatalf("swaks: no 250 in\n%s", out)
	}
}

// fetchmail downloads alice's mail over POP3 into files under out/, one per
// message, and returns their contents. keep leaves the messages on the server.
func fetchmail(t *testing.T, addr, user, pass string, keep bool) [][]byte {
	t.Helper()
	home := t.TempDir()
	out := filepath.Join(home, "out")
	os.Mkdir(out, 0o700)
	host, port, _ := net.SplitHostPort(addr)
	keepWord := "nokeep"
	if keep {
		keepWord = "keep"
	}
	// The MDA writes each message to its own file; fetchmail hands it over
	// with LF line ends and its own Received: header on top.
	mda := filepath.Join(home, "mda.sh")
	os.WriteFile(mda, []byte("#!/bin/sh\ncat > \""+out+"\"/msg.$$.$(date +%s%N)\n"), 0o700)
	rc := filepath.Join(home, "fetchmailrc")
	os.WriteFile(rc, []byte(fmt.Sprintf(`set no bouncemail
set no syslog
poll %s service %s protocol pop3 auth password timeout 20
  user "%s" there with password "%s" is "tester" here
  %s fetchall sslproto ''
  mda "%s"
`, host, port, user, pass, keepWord, mda)), 0o600)
	cmd := exec.Command("fetchmail", "-f", rc, "-v", "--nodetach", "--idfile", filepath.Join(home, "fetchids"), "--pidfile", filepath.Join(home, "pid"))
	cmd.Env = append(cleanEnv(), "HOME="+home, "FETCHMAILHOME="+home)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, b)
	}
	entries, _ := os.ReadDir(out)
	var msgs [][]byte
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, data)
	}
	if len(msgs) == 0 {
		t.Fatalf("fetchmail delivered nothing:\n%s", b)
	}
	return msgs
}

// stripFetchmail undoes what fetchmail does to a message on its way to the
// MDA: LF line ends, and its own Received: header, which it inserts below
// the Return-Path.
func stripFetchmail(t *testing.T, b []byte) string {
	t.Helper()
	s := strings.ReplaceAll(string(b), "\n", "\r\n")
	head, body, ok := strings.Cut(s, "\r\n\r\n")
	if !ok {
		t.Fatalf("no header/body separator in:\n%s", s)
	}
	var fields []string // header fields with their folded lines
	for _, line := range strings.SplitAfter(head+"\r\n", "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
		} else {
			fields = append(fields, line)
		}
	}
	var kept strings.Builder
	found := false
	for _, f := range fields {
		if !found && strings.HasPrefix(f, "Received: ") && strings.Contains(f, "(fetchmail-") {
			found = true
			continue
		}
		kept.WriteString(f)
	}
	if !found {
		t.Fatalf("no fetchmail Received: header in:\n%s", s)
	}
	return kept.String() + "\r\n" + body
}

// swaks delivers, fetchmail downloads in keep mode (the message stays, bytes
// match) and then in delete mode (the message is gone).
func TestSwaksFetchmail(t *testing.T) {
	t.Parallel()
	needTool(t, "swaks", "fetchmail")
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "correct horse battery staple")
	p := in.start()

	msg := testMessage("fetchmail-1", "Hello over SMTP and POP3.")
	swaks(t, p.addr("smtp"), "alice@localhost", msg)

	// Our own client sees exactly what was sent, plus our Received: header.
	c := dialPOP3(t, p.addr("pop3"))
	c.login("alice@localhost", "correct horse battery staple")
	if n := c.stat(); n != 1 {
		t.Fatalf("STAT: %d messages, want 1", n)
	}
	stored := c.retr(1)
	checkDelivered(t, stored, msg)
	c.cmd("QUIT")

	// keep: downloaded, and still there.
	got := fetchmail(t, p.addr("pop3"), "alice@localhost", "correct horse battery staple", true)
	if len(got) != 1 {
		t.Fatalf("fetchmail keep: %d messages, want 1", len(got))
	}
	if s := stripFetchmail(t, got[0]); s != string(stored) {
		t.Errorf("fetchmail keep: bytes differ:\ngot:\n%q\nwant:\n%q", s, stored)
	}
	if n := countMessages(t, p.addr("pop3"), "alice@localhost", "correct horse battery staple"); n != 1 {
		t.Fatalf("after fetchmail keep: %d messages on the server, want 1", n)
	}

	// delete: downloaded, and gone.
	got = fetchmail(t, p.addr("pop3"), "alice@localhost", "correct horse battery staple", false)
	if len(got) != 1 || stripFetchmail(t, got[0]) != string(stored) {
		t.Fatalf("fetchmail nokeep: %d messages, or bytes differ", len(got))
	}
	if n := countMessages(t, p.addr("pop3"), "alice@localhost", "correct horse battery staple"); n != 0 {
		t.Fatalf("after fetchmail nokeep: %d messages on the server, want 0", n)
	}
	if code := p.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// getmail6 downloads into a Maildir in keep mode (bytes match exactly, as
// getmail writes them) and then with delete (the message is gone).
func TestSwaksGetmail(t *testing.T) {
	t.Parallel()
	needTool(t, "swaks", "getmail")
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "s3cret pass")
	p := in.start()

	msg := testMessage("getmail-1", "Hello, getmail.")
	swaks(t, p.addr("smtp"), "alice@localhost", msg)
	c := dialPOP3(t, p.addr("pop3"))
	c.login("alice@localhost", "s3cret pass")
	stored := c.retr(1)
	checkDelivered(t, stored, msg)
	c.cmd("QUIT")

	run := func(deleteAfter bool) []byte {
		t.Helper()
		home := t.TempDir()
		out := filepath.Join(home, "msg")
		host, port, _ := net.SplitHostPort(p.addr("pop3"))
		// An external MDA rather than a Maildir: getmail refuses Maildir
		// delivery as root, and CI runs as root.
		rc := fmt.Sprintf(`[retriever]
type = SimplePOP3Retriever
server = %s
port = %s
username = alice@localhost
password = s3cret pass

[destination]
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat >> %s")
allow_root_commands = true

[options]
read_all = true
delete = %v
received = false
delivered_to = false
message_log_syslog = false
`, host, port, out, deleteAfter)
		os.WriteFile(filepath.Join(home, "getmailrc"), []byte(rc), 0o600)
		b, err := exec.Command("getmail", "--getmaildir", home, "--rcfile", "getmailrc").CombinedOutput()
		if err != nil {
			t.Fatalf("getmail: %v\n%s", err, b)
		}
		if !strings.Contains(string(b), "1 messages") {
			t.Fatalf("getmail did not retrieve one message:\n%s", b)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("getmail delivered nothing: %v\n%s", err, b)
		}
		return data
	}
	// getmail stores with LF line ends (Maildir convention).
	want := strings.ReplaceAll(string(stored), "\r\n", "\n")
	if got := run(false); string(got) != want {
		t.Errorf("getmail keep: bytes differ:\ngot:\n%q\nwant:\n%q", got, want)
	}
	if n := countMessages(t, p.addr("pop3"), "alice@localhost", "s3cret pass"); n != 1 {
		t.Fatalf("after getmail keep: %d messages, want 1", n)
	}
	if got := run(true); string(got) != want {
		t.Errorf("getmail delete: bytes differ:\ngot:\n%q\nwant:\n%q", got, want)
	}
	if n := countMessages(t, p.addr("pop3"), "alice@localhost", "s3cret pass"); n != 0 {
		t.Fatalf("after getmail delete: %d messages, want 0", n)
	}
}

// The server is killed with SIGKILL right after each 250 to DATA and
// restarted on the same data directory: every acknowledged message is
// there, exactly once.
func TestCrashAfterDATA(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "pw")
	const rounds = 3
	var sent []string
	for i := range rounds {
		p := in.start()
		msg := testMessage(fmt.Sprintf("crash-%d", i), strings.Repeat("payload ", 100*(i+1)))
		c, err := netsmtp.Dial(p.addr("smtp"))
		if err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(c.Hello("e2e.test"))
		must(c.Mail("bob@example.org"))
		must(c.Rcpt("alice@localhost"))
		w, err := c.Data()
		must(err)
		io.WriteString(w, msg)
		must(w.Close()) // the 250 has arrived
		p.cmd.Process.Kill()
		<-p.exited
		c.Close()
		sent = append(sent, msg)
	}
	p := in.start()
	c := dialPOP3(t, p.addr("pop3"))
	c.login("alice@localhost", "pw")
	if n := c.stat(); n != rounds {
		t.Fatalf("after %d crashes: %d messages, want %d", rounds, n, rounds)
	}
	for i, msg := range sent {
		checkDelivered(t, c.retr(i+1), msg)
	}
	c.cmd("QUIT")
}

// Admin commands work on the database while the server runs, and the
// server sees their changes at once.
func TestAdminWhileServing(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	p := in.start()
	if !strings.Contains(p.stdout, "Created account postmaster@localhost with password ") {
		t.Fatalf("first start did not create postmaster:\n%s", p.stdout)
	}
	pw := regexp.MustCompile(`with password (\S+)`).FindStringSubmatch(p.stdout)[1]
	if n := countMessages(t, p.addr("pop3"), "postmaster@localhost", pw); n != 0 {
		t.Errorf("postmaster has %d messages", n)
	}

	// A second server on the same data directory is refused.
	second := in.run("", "serve")
	if second.code != exitError || !strings.Contains(second.stderr, fmt.Sprintf("another mailbox serve (pid %d) is using", p.cmd.Process.Pid)) {
		t.Errorf("second serve: exit %d, stderr %q", second.code, second.stderr)
	}

	in.must("", "domain", "add", "example.org")
	in.addUser("carol@example.org", "carol's pass")
	c := dialPOP3(t, p.addr("pop3"))
	c.login("carol@example.org", "carol's pass")
	c.cmd("QUIT")

	// A catch-all added now takes mail at once.
	in.must("", "alias", "add", "@example.org", "carol@example.org")
	msg := testMessage("alias-1", "to a catch-all")
	if err := sendSMTP(t, p.addr("smtp"), "bob@example.org", "anyone@example.org", msg); err != nil {
		t.Fatalf("send to catch-all: %v", err)
	}
	c = dialPOP3(t, p.addr("pop3"))
	c.login("carol@example.org", "carol's pass")
	checkDelivered(t, c.retr(1), msg)
	c.cmd("QUIT")

	// Password change applies to the next login.
	in.must("new pass\n", "user", "passwd", "carol@example.org", "--password-stdin")
	countMessages(t, p.addr("pop3"), "carol@example.org", "new pass")

	list := in.must("", "user", "list")
	if !regexp.MustCompile(`(?m)^carol@example\.org\s+1\s`).MatchString(list) {
		t.Errorf("user list:\n%s", list)
	}
	status := in.must("", "status")
	for _, want := range []string{"carol@example.org", "postmaster@localhost", "Domains (2): example.org, localhost", "local"} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	// Deleting a user while serving: its login fails afterwards.
	in.must("", "alias", "del", "@example.org")
	in.must("", "user", "del", "carol@example.org")
	c = dialPOP3(t, p.addr("pop3"))
	c.cmd("USER carol@example.org")
	fmt.Fprintf(c.conn, "PASS new pass\r\n")
	if line := c.line(); !strings.HasPrefix(line, "-ERR") {
		t.Errorf("login of a deleted user: %q", line)
	}
}

// SIGTERM while a POP3 session has marked a message deleted and a message
// is streaming in over SMTP: the process exits 0, the DELE is not applied,
// and the streaming message is received, answered 250 and kept.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "pw")
	p := in.start()
	msgs := []string{testMessage("keep-1", "one"), testMessage("keep-2", "two")}
	for _, m := range msgs {
		if err := sendSMTP(t, p.addr("smtp"), "bob@example.org", "alice@localhost", m); err != nil {
			t.Fatal(err)
		}
	}

	pop := dialPOP3(t, p.addr("pop3"))
	pop.login("alice@localhost", "pw")
	pop.cmd("DELE 1")

	// An SMTP transaction in the middle of DATA.
	sc, err := net.Dial("tcp", p.addr("smtp"))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sr := bufio.NewReader(sc)
	expect := func(prefix string) {
		t.Helper()
		for {
			sc.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := sr.ReadString('\n')
			if err != nil {
				t.Fatalf("smtp read: %v", err)
			}
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("smtp: want %s, got %q", prefix, line)
			}
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	expect("220")
	for _, step := range []struct{ cmd, want string }{
		{"EHLO e2e.test", "250"}, {"MAIL FROM:<bob@example.org>", "250"},
		{"RCPT TO:<alice@localhost>", "250"}, {"DATA", "354"},
	} {
		fmt.Fprintf(sc, "%s\r\n", step.cmd)
		expect(step.want)
	}
	late := testMessage("during-shutdown", "sent while the server shuts down")
	stuffed := strings.ReplaceAll(late, "\r\n.", "\r\n..") // RFC 5321 §4.5.2
	half := len(stuffed) / 2
	io.WriteString(sc, stuffed[:half])
	time.Sleep(200 * time.Millisecond)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	io.WriteString(sc, stuffed[half:]+".\r\n")
	expect("250")

	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("mailbox did not exit within 20s of SIGTERM")
	}
	if p.exitCode != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", p.exitCode)
	}

	p = in.start()
	c := dialPOP3(t, p.addr("pop3"))
	c.login("alice@localhost", "pw")
	if n := c.stat(); n != 3 {
		t.Fatalf("after shutdown: %d messages, want 3 (DELE without QUIT deletes nothing)", n)
	}
	checkDelivered(t, c.retr(1), msgs[0])
	checkDelivered(t, c.retr(3), late)
	c.cmd("QUIT")
}

// Configuration mistakes stop start-up with exit code 2 and a message
// naming the key and the value.
func TestConfigErrorsStopStartup(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, extra, want string
	}{
		{"unknown key", "[smtp]\nmax_mesage_size = \"1MiB\"\n", "smtp.max_mesage_size: unknown key"},
		{"bad size unit", "[smtp]\nmax_message_size = \"25 MB\"\n", `smtp.max_message_size: "25 MB": unknown unit`},
		{"bad duration", "[pop3]\nidle_timeout = \"ten minutes\"\n", `pop3.idle_timeout: "ten minutes": want a duration`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := newInstance(t, tt.extra)
			r := in.run("", "serve")
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, tt.want)
			}
			if _, err := os.Stat(filepath.Join(in.dir, "data")); err == nil {
				t.Errorf("a bad config created the data directory")
			}
		})
	}
	// A port in use names the listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	in := newInstance(t, "")
	r := in.run("", "serve", "--set", "listen.pop3="+ln.Addr().String())
	if r.code == 0 || !strings.Contains(r.stderr, "listen.pop3") || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("port in use: exit %d, stderr %q", r.code, r.stderr)
	}
}

// The README's walk-through: curl reads the message over POP3, over POP3S
// and over POP3 with STLS, trusting the CA that `mailbox tls ca` prints.
func TestCurlPOP3(t *testing.T) {
	t.Parallel()
	needTool(t, "curl")
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "pass word")
	p := in.start()
	msg := testMessage("curl-1", "Hello, curl.")
	if err := sendSMTP(t, p.addr("smtp"), "bob@example.org", "alice@localhost", msg); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(in.dir, "ca.crt")
	if err := os.WriteFile(ca, []byte(in.must("", "tls", "ca")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"plain", []string{"pop3://" + p.addr("pop3") + "/1"}},
		{"pop3s", []string{"--cacert", ca, "pop3s://" + p.addr("pop3s") + "/1"}},
		{"stls", []string{"--ssl-reqd", "--cacert", ca, "pop3://" + p.addr("pop3") + "/1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-sS", "--max-time", "20", "-u", "alice@localhost:pass word"}, tt.args...)
			out, err := exec.Command("curl", args...).Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
				}
				t.Fatal(err)
			}
			checkDelivered(t, out, msg)
		})
	}
}

// An authenticated user submits mail with swaks on both submission
// listeners: STARTTLS + AUTH on submission, implicit TLS on submissions,
// verifying the certificate against the local CA.
func TestSwaksSubmission(t *testing.T) {
	t.Parallel()
	needTool(t, "swaks")
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "pw alice")
	in.addUser("bob@localhost", "pw bob")
	p := in.start()
	ca := filepath.Join(in.dir, "ca.crt")
	if err := os.WriteFile(ca, []byte(in.must("", "tls", "ca")), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, tt := range []struct {
		listener string
		tls      string
	}{
		{"submission", "--tls"},
		{"submissions", "--tls-on-connect"},
	} {
		out, err := exec.Command("swaks", "--server", "127.0.0.1", "--port", p.port(tt.listener),
			tt.tls, "--tls-verify", "--tls-ca-path", ca,
			"--auth", "PLAIN", "--auth-user", "bob@localhost", "--auth-password", "pw bob",
			"--from", "bob@localhost", "--to", "alice@localhost", "--helo", "e2e.test",
			"--header", "Subject: via "+tt.listener, "--timeout", "20").CombinedOutput()
		if err != nil {
			t.Fatalf("swaks on %s: %v\n%s", tt.listener, err, out)
		}
		if n := countMessages(t, p.addr("pop3"), "alice@localhost", "pw alice"); n != i+1 {
			t.Fatalf("after submission on %s: %d messages, want %d", tt.listener, n, i+1)
		}
	}
	// No AUTH, no submission.
	out, err := exec.Command("swaks", "--server", "127.0.0.1", "--port", p.port("submission"), "--tls", "--tls-verify", "--tls-ca-path", ca,
		"--from", "bob@localhost", "--to", "alice@localhost", "--timeout", "20").CombinedOutput()
	if err == nil || !regexp.MustCompile(`(?m)^<[~*]\* +5\d\d `).Match(out) {
		t.Errorf("submission without AUTH was not refused with 5xx: %v\n%s", err, out)
	}
}

// SIGKILL in the middle of concurrent deliveries: every message answered
// 250 before the kill is there after a restart, and no message is there
// twice.
func TestCrashUnderLoad(t *testing.T) {
	t.Parallel()
	in := newInstance(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "pw")
	p := in.start()
	const senders = 8
	const maxPerSender = 200 // bounds the loop whatever the timing
	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			c, err := netsmtp.Dial(p.addr("smtp"))
			if err != nil {
				return
			}
			defer c.Close()
			if c.Hello("e2e.test") != nil {
				return
			}
			for i := range maxPerSender {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("load-%d-%d", s, i)
				if c.Mail("bob@example.org") != nil || c.Rcpt("alice@localhost") != nil {
					return
				}
				w, err := c.Data()
				if err != nil {
					return
				}
				io.WriteString(w, testMessage(id, "under load"))
				if w.Close() != nil {
					return // no 250: the kill came first
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(700 * time.Millisecond)
	p.cmd.Process.Kill()
	<-p.exited
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged before the kill")
	}

	p = in.start()
	c := dialPOP3(t, p.addr("pop3"))
	c.login("alice@localhost", "pw")
	n := c.stat()
	seen := map[string]int{}
	idRE := regexp.MustCompile(`(?m)^Message-ID: <([^@>]+)@`)
	for i := 1; i <= n; i++ {
		m := idRE.FindSubmatch(c.retr(i))
		if m == nil {
			t.Fatalf("message %d has no Message-ID", i)
		}
		seen[string(m[1])]++
	}
	c.cmd("QUIT")
	for id, k := range seen {
		if k > 1 {
			t.Errorf("%s is there %d times", id, k)
		}
	}
	for _, id := range acked {
		if seen[id] != 1 {
			t.Errorf("%s was acknowledged with 250 but is not there after the crash", id)
		}
	}
	t.Logf("%d acknowledged before SIGKILL, %d in the mailbox after restart", len(acked), n)
}

// writeSelfSigned writes a self-signed certificate for localhost and its
// key as PEM files; serial tells one certificate from the next.
func writeSelfSigned(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Write to temporary names and rename, as an operator's tooling would.
	for file, block := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file+".new", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, file := range []string{keyFile, certFile} {
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
}

// servedSerial connects with TLS and returns the serial of the leaf served.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	conn, err := cryptotls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&cryptotls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// tls.mode = "files": the operator's certificate is served on the TLS
// ports, and a replaced one after SIGHUP, without a restart.
func TestFilesCertificateSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile, 1001)
	in := newInstance(t, fmt.Sprintf("[tls]\nmode = \"files\"\ncert_file = %q\nkey_file = %q\n", certFile, keyFile))
	p := in.start()
	if !strings.Contains(p.stdout, "TLS: certificate from "+certFile) {
		t.Errorf("start-up does not say where the certificate comes from:\n%s", p.stdout)
	}
	for _, l := range []string{"pop3s", "submissions"} {
		if got := servedSerial(t, p.addr(l)); got != 1001 {
			t.Fatalf("%s serves serial %d, want 1001", l, got)
		}
	}
	writeSelfSigned(t, certFile, keyFile, 1002)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for servedSerial(t, p.addr("pop3s")) != 1002 {
		if time.Now().After(deadline) {
			t.Fatal("pop3s still serves the old certificate 10s after SIGHUP")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for time.Now().Before(deadline) && !strings.Contains(p.logs(), "reloaded certificates") {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(p.logs(), "reloaded certificates") {
		t.Error("no \"reloaded certificates\" log line after SIGHUP")
	}
	if got := servedSerial(t, p.addr("submissions")); got != 1002 {
		t.Errorf("submissions serves serial %d after SIGHUP, want 1002", got)
	}
	if code := p.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}
