package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/internal/transcript"
	"mailbox/store"
	"mailbox/store/storetest"
)

const (
	alice    = "alice@example.test"
	alicePwd = "secret pass"
)

// bigMessage returns a message of about size bytes with CRLF line ends,
// lines of many lengths, lines starting with dots at every position
// relative to the server's read chunks, and no CRLF at the very end.
func bigMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: big\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		if i%3 == 0 {
			b.WriteString(".")
		}
		b.WriteString(strings.Repeat("x", i%5000))
		b.WriteString("\r\n")
	}
	b.WriteString(".last line without CRLF")
	return b.Bytes()
}

func deliver(t testing.TB, st *store.Store, addr string, data []byte) {
	t.Helper()
	if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{addr}, Data: data}); err != nil {
		t.Fatal(err)
	}
}

func TestExactOctetsLargeMessages(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	// One below the inline limit (in the database), two above (files).
	msgs := [][]byte{bigMessage(100 << 10), bigMessage(1 << 20), bigMessage(5<<20 + 12345)}
	for _, m := range msgs {
		deliver(t, st, alice, m)
	}
	ts := startServer(t, Options{Store: st}, "")
	c := dial(t, ts.addr)
	c.login(alice, alicePwd)
	c.ok("LIST")
	list := c.multi()
	for i, m := range msgs {
		n := i + 1
		if want := fmt.Sprintf("%d %d\r\n", n, len(m)); !strings.Contains(string(list), want) {
			t.Errorf("LIST lacks %q:\n%s", want, list)
		}
		if got := c.ok("RETR %d", n); got != fmt.Sprintf("+OK %d octets", len(m)) {
			t.Errorf("RETR %d: %q", n, got)
		}
		// The message lacks a final CRLF: RETR adds one before the dot.
		if got := c.multi(); !bytes.Equal(got, append(m, "\r\n"...)) {
			t.Errorf("RETR %d: %d bytes differ from the %d delivered", n, len(got), len(m))
		}
	}
	c.ok("TOP 3 2")
	top := string(c.multi())
	if want := "Subject: big\r\n\r\n.\r\nx\r\n"; !strings.HasSuffix(top, want) {
		t.Errorf("TOP 3 2 = %q, want suffix %q", top, want)
	}
	c.ok("QUIT")
}

func TestUIDLMatchesStoreAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{alice: alicePwd},
		Messages: map[string][]string{alice: {storetest.Message("bob@example.test", alice, "1", "one"), storetest.Message("bob@example.test", alice, "2", "two")}},
		Options:  store.Options{Dir: dir},
	})
	uidls := func(st *store.Store) string {
		ts := startServer(t, Options{Store: st}, "")
		c := dial(t, ts.addr)
		c.login(alice, alicePwd)
		c.ok("UIDL")
		got := string(c.multi())
		c.ok("QUIT")
		return got
	}
	acct, err := st.Account(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(context.Background(), store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := acct.Messages(context.Background(), inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&want, "%d %s\r\n", i+1, UIDL(inbox.UIDValidity, m.UID))
	}
	if got := uidls(st); got != want.String() {
		t.Fatalf("UIDL = %q, want %q", got, want.String())
	}
	st.Close()
	st2, err := store.Open(context.Background(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if got := uidls(st2); got != want.String() {
		t.Fatalf("after reopening the store UIDL = %q, want %q", got, want.String())
	}
}

func TestConcurrentSessions(t *testing.T) {
	const users, perUser = 6, 5
	fx := storetest.Fixture{Users: map[string]string{}, Messages: map[string][]string{}}
	for u := range users {
		addr := fmt.Sprintf("user%d@example.test", u)
		fx.Users[addr] = "pw " + addr
		for m := range perUser {
			fx.Messages[addr] = append(fx.Messages[addr], storetest.Message("bob@example.test", addr, fmt.Sprint(m), strings.Repeat(addr+" ", 100*(m+1))))
		}
	}
	st := storetest.New(t, fx)
	ts := startServer(t, Options{Store: st}, "")
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		addr := fmt.Sprintf("user%d@example.test", u)
		wg.Go(func() {
			c := dial(t, ts.addr)
			c.login(addr, "pw "+addr)
			for m := 1; m <= perUser; m++ {
				c.ok("RETR %d", m)
				body := c.multi()
				if !bytes.Contains(body, []byte(strings.Repeat(addr+" ", 100*m))) {
					errs <- fmt.Errorf("%s RETR %d: wrong body", addr, m)
				}
				if m%2 == 1 {
					c.ok("DELE %d", m)
				}
			}
			if got := c.ok("QUIT"); got != "+OK bye (3 deleted)" {
				errs <- fmt.Errorf("%s QUIT: %q", addr, got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for u := range users {
		msgs, err := mailboxMessages(context.Background(), st, fmt.Sprintf("user%d@example.test", u), store.RoleInbox)
		if err != nil || len(msgs) != perUser-3 {
			t.Errorf("user%d: %d messages left (%v), want %d", u, len(msgs), err, perUser-3)
		}
	}
}

// TestShutdownFinishesRETR: Shutdown waits for a RETR in progress, the
// client gets the whole message, the session is then closed, and the
// message marked with DELE is still there.
func TestShutdownFinishesRETR(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	big := bigMessage(8 << 20) // more than the socket buffers hold (4 MiB + 64 KiB)
	deliver(t, st, alice, big)
	deliver(t, st, alice, []byte("Subject: small\r\n\r\nsmall\r\n"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: st, Logger: testLogger(t), Limiter: fastLimiter()})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c := dial(t, ln.Addr().String())
	c.conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.login(alice, alicePwd)
	c.ok("DELE 2")
	c.ok("RETR 1")
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a RETR was in progress", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got := c.multi(); !bytes.Equal(got, append(big, "\r\n"...)) {
		t.Fatalf("RETR during shutdown: got %d bytes, want %d", len(got), len(big)+2)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if !c.closed(2 * time.Second) {
		t.Fatal("connection still open after Shutdown")
	}
	if msgs, _ := mailboxMessages(context.Background(), st, alice, store.RoleInbox); len(msgs) != 2 {
		t.Fatalf("%d messages after shutdown, want 2: nothing is deleted without QUIT", len(msgs))
	}
	// Serve on a server that was shut down returns at once.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := srv.Serve(ln2); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestShutdownDeadline: a client that stops reading in the middle of a
// RETR cannot hold Shutdown past its context.
func TestShutdownDeadline(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	deliver(t, st, alice, bigMessage(8<<20))
	deliver(t, st, alice, []byte("Subject: small\r\n\r\nsmall\r\n"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: st, Logger: testLogger(t), Limiter: fastLimiter()})
	go srv.Serve(ln)
	c := dial(t, ln.Addr().String())
	c.conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	c.login(alice, alicePwd)
	c.ok("DELE 2")
	c.send("RETR 1") // and never read it
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("Shutdown took %s", d)
	}
	if msgs, _ := mailboxMessages(context.Background(), st, alice, store.RoleInbox); len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
}

func TestShutdownIdleSessions(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: st, Logger: testLogger(t)})
	go srv.Serve(ln)
	before := dial(t, ln.Addr().String())
	after := dial(t, ln.Addr().String())
	after.login(alice, alicePwd)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !before.closed(time.Second) || !after.closed(time.Second) {
		t.Fatal("idle sessions still open after Shutdown")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after Shutdown")
	}
}

func TestIdleTimeout(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{alice: alicePwd},
		Messages: map[string][]string{alice: {storetest.Message("bob@example.test", alice, "x", "y")}},
	})
	const idle = time.Second
	ts := startServer(t, Options{Store: st, IdleTimeout: idle, AuthTimeout: 10 * time.Second}, "")
	c := dial(t, ts.addr)
	c.login(alice, alicePwd)
	// Activity restarts the timer: together these pauses are longer than
	// IdleTimeout.
	for range 3 {
		time.Sleep(idle * 4 / 10)
		c.ok("NOOP")
	}
	c.ok("DELE 1")
	begin := time.Now()
	if !c.closed(3 * time.Second) {
		t.Fatal("session not closed after IdleTimeout")
	}
	if d := time.Since(begin); d < idle-20*time.Millisecond {
		t.Fatalf("closed after %s, before IdleTimeout %s", d, idle)
	}
	waitSessions(ts.srv, 0)
	if msgs, _ := mailboxMessages(context.Background(), st, alice, store.RoleInbox); len(msgs) != 1 {
		t.Fatalf("%d messages after autologout, want 1", len(msgs))
	}
}

// TestAuthTimeoutIsABudget: before login, activity does not extend the
// time a connection has to log in.
func TestAuthTimeoutIsABudget(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{})
	const budget = 300 * time.Millisecond
	ts := startServer(t, Options{Store: st, AuthTimeout: budget}, "")
	begin := time.Now()
	c := dial(t, ts.addr)
	for range 4 {
		time.Sleep(budget / 4)
		c.send("CAPA")
	}
	// Whatever replies came, the connection ends near the budget.
	for {
		c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.r.ReadString('\n'); err != nil {
			break
		}
	}
	if d := time.Since(begin); d > budget+2*time.Second {
		t.Fatalf("pre-login connection lived %s, budget %s", d, budget)
	}
}

// TestThrottle: after the free failures every reply to a login attempt
// waits the delay, for an unknown account as for a wrong password and for
// the right password too; a success clears the account's count.
func TestThrottle(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	const delay = 300 * time.Millisecond
	lim := throttle.New(throttle.Options{Free: 1, BaseDelay: delay, MaxDelay: delay})
	ts := startServer(t, Options{Store: st, Limiter: lim, MaxErrors: 100}, "")
	timed := func(c *client, user, pass string) (string, time.Duration) {
		c.ok("USER %s", user)
		begin := time.Now()
		return c.cmd("PASS %s", pass), time.Since(begin)
	}
	c := dial(t, ts.addr)
	// The first failure is free (how fast it is depends on the machine's
	// load, so only the reply is checked).
	if got, _ := timed(c, "nobody@example.test", "x"); got != "-ERR [AUTH] invalid login" {
		t.Fatalf("first failure: %q", got)
	}
	// Now the address has a failure: every attempt from it waits.
	for _, tt := range []struct{ user, pass, want string }{
		{"nobody@example.test", "x", "-ERR [AUTH] invalid login"},
		{alice, "wrong", "-ERR [AUTH] invalid login"},
		{alice, alicePwd, "+OK 0 messages (0 octets)"},
	} {
		got, d := timed(c, tt.user, tt.pass)
		if got != tt.want || d < delay {
			t.Errorf("%s/%s: %q after %s, want %q after at least %s", tt.user, tt.pass, got, d, tt.want, delay)
		}
	}
	c.ok("QUIT")
	if d := lim.Delay("192.0.2.1", alice); d != 0 {
		t.Errorf("alice's delay after a success from another address: %s, want 0", d)
	}
}

func TestPOP3S(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	serverTLS, clientTLS := transcript.TLSPair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A non-loopback address: only TLS makes plaintext logins acceptable.
	tlsLn := tls.NewListener(fakeRemoteListener{ln, "192.0.2.9"}, serverTLS)
	srv := New(Options{Store: st, TLS: serverTLS, Logger: testLogger(t), Limiter: fastLimiter()})
	go srv.Serve(tlsLn)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	conn, err := tls.Dial("tcp", ln.Addr().String(), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: newReader(conn)}
	if l := c.line(); !strings.HasPrefix(l, "+OK ") {
		t.Fatalf("greeting %q", l)
	}
	c.ok("CAPA")
	capa := string(c.multi())
	if !strings.Contains(capa, "USER\r\n") || !strings.Contains(capa, "SASL PLAIN\r\n") || strings.Contains(capa, "STLS") {
		t.Fatalf("CAPA over POP3S:\n%s", capa)
	}
	c.login(alice, alicePwd)
	c.ok("QUIT")

	// A client that never finishes the handshake is dropped at the
	// login budget; a plain-text client gets nothing.
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte("USER alice\r\n"))
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, _ := raw.Read(buf)
	if bytes.Contains(buf[:n], []byte("+OK")) {
		t.Fatalf("plain client on POP3S got %q", buf[:n])
	}
}

// TestStoreFailure: when the store fails, the client gets [SYS/TEMP] with
// a reference, and a failed QUIT deletes nothing.
func TestStoreFailure(t *testing.T) {
	dir := t.TempDir()
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{alice: alicePwd},
		Messages: map[string][]string{alice: {storetest.Message("bob@example.test", alice, "x", "y")}},
		Options:  store.Options{Dir: dir},
	})
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	ts := startServer(t, Options{Store: st, Logger: logger, MaxErrors: 100}, "")
	c := dial(t, ts.addr)
	c.login(alice, alicePwd)
	c.ok("DELE 1")
	st.Close()
	got := c.cmd("RSET")
	if got != "+OK 1 message (0 octets)" && !strings.HasPrefix(got, "+OK 1 message") {
		t.Fatalf("RSET after the store closed (works on the snapshot): %q", got)
	}
	got = c.cmd("RETR 1")
	if !strings.HasPrefix(got, "-ERR [SYS/TEMP] try again later (ref ") {
		t.Fatalf("RETR with a closed store: %q", got)
	}
	ref := strings.TrimSuffix(strings.TrimPrefix(got, "-ERR [SYS/TEMP] try again later (ref "), ")")
	c.ok("DELE 1")
	if got := c.cmd("QUIT"); !strings.HasPrefix(got, "-ERR [SYS/TEMP]") {
		t.Fatalf("QUIT with a closed store: %q", got)
	}
	if !c.closed(2 * time.Second) {
		t.Fatal("session open after a failed QUIT")
	}
	waitSessions(ts.srv, 0)
	if !strings.Contains(logs.String(), "conn="+ref) || !strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("log lacks an error with the reference %s:\n%s", ref, logs.String())
	}
	st2, err := store.Open(context.Background(), store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if msgs, _ := mailboxMessages(context.Background(), st2, alice, store.RoleInbox); len(msgs) != 1 {
		t.Fatalf("%d messages after a failed QUIT, want 1", len(msgs))
	}
}

// TestPanicIsContained: a panic in a handler (here: no store at all)
// ends that session with [SYS/TEMP]; the server keeps serving.
func TestPanicIsContained(t *testing.T) {
	ts := startServer(t, Options{}, "")
	c := dial(t, ts.addr)
	c.ok("USER %s", alice)
	if got := c.cmd("PASS x"); !strings.HasPrefix(got, "-ERR [SYS/TEMP] try again later (ref ") {
		t.Fatalf("PASS with a panicking store: %q", got)
	}
	if !c.closed(2 * time.Second) {
		t.Fatal("session open after a panic")
	}
	dial(t, ts.addr).ok("CAPA")
}

func TestMaxConns(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{})
	ts := startServer(t, Options{Store: st, MaxConns: 2}, "")
	a, b := dial(t, ts.addr), dial(t, ts.addr)
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: newReader(conn)}
	if got := c.line(); got != "-ERR [SYS/TEMP] too many connections, try again later" {
		t.Fatalf("third connection: %q", got)
	}
	a.ok("QUIT")
	waitSessions(ts.srv, 1)
	dial(t, ts.addr).ok("QUIT")
	b.ok("QUIT")
}

// TestLogsNeverHoldPasswords runs logins of every kind with debug logging
// and looks for the secrets in the log.
func TestLogsNeverHoldPasswords(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := startServer(t, Options{Store: st, Logger: logger, MaxErrors: 100}, "")
	c := dial(t, ts.addr)
	c.ok("USER %s", alice)
	c.cmd("PASS wrong horse")
	c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==")
	c.login(alice, alicePwd)
	c.ok("QUIT")
	waitSessions(ts.srv, 0)
	out := logs.String()
	for _, secret := range []string{"wrong horse", "AGFsaWNl", alicePwd, "wrong\""} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"proto=pop3", "user=" + alice, "msg=\"login failed\"", "msg=\"connection end\"", "cmd=PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestTrashRecreated: trash mode still keeps mail when the user removed
// the Trash mailbox.
func TestTrashRecreated(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{alice: alicePwd},
		Messages: map[string][]string{alice: {storetest.Message("bob@example.test", alice, "x", "y")}},
	})
	if err := st.SetPOP3Delete(ctx, alice, store.POP3Trash); err != nil {
		t.Fatal(err)
	}
	acct, _ := st.Account(ctx, alice)
	trash, err := acct.MailboxByRole(ctx, store.RoleTrash)
	if err != nil {
		t.Fatal(err)
	}
	if err := acct.DeleteMailbox(ctx, trash.Name); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Options{Store: st}, "")
	c := dial(t, ts.addr)
	c.login(alice, alicePwd)
	c.ok("RETR 1")
	c.multi()
	c.ok("DELE 1")
	if got := c.ok("QUIT"); got != "+OK bye (1 deleted)" {
		t.Fatalf("QUIT: %q", got)
	}
	msgs, err := mailboxMessages(ctx, st, alice, store.RoleTrash)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("trash holds %d messages (%v), want 1", len(msgs), err)
	}
	if !hasFlag(msgs[0].Flags, store.FlagSeen) {
		t.Errorf("message retrieved then moved to Trash is not \\Seen: %v", msgs[0].Flags)
	}
}

// TestPipelinedRepliesFlushTogether: replies to a pipelined batch leave in
// a few writes, not one per command.
func TestPipelinedRepliesFlushTogether(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingListener{Listener: ln}
	srv := New(Options{Store: st, Logger: testLogger(t), Limiter: fastLimiter()})
	go srv.Serve(counted)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := dial(t, ln.Addr().String())
	c.login(alice, alicePwd)
	const n = 200
	before := counted.writes.Load()
	c.conn.Write([]byte(strings.Repeat("NOOP\r\n", n)))
	for i := range n {
		if got := c.line(); got != "+OK" {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
	if w := counted.writes.Load() - before; w > 10 {
		t.Errorf("%d pipelined replies took %d writes", n, w)
	}
	c.ok("QUIT")
}

type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
