package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/internal/transcript"
	"mailbox/store"
	"mailbox/store/storetest"
)

// testHostname is the greeting name in tests.
const testHostname = "mail.example.test"

// testLogger sends server logs to the test log when -v is given, so a
// failing test shows what the server saw.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fastLimiter throttles like production but with delays short enough for
// tests.
func fastLimiter() *throttle.Limiter {
	return throttle.New(throttle.Options{BaseDelay: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond})
}

// testServer is a real Server on a loopback listener.
type testServer struct {
	srv  *Server
	addr string
	done chan error // Serve's result
}

// startServer runs a Server for opts on 127.0.0.1. remote, if set, is the
// client address the server sees instead of loopback (to test the
// plaintext rules). Shutdown runs when the test ends.
func startServer(t testing.TB, opts Options, remote string) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), done: make(chan error, 1)}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Limiter == nil {
		opts.Limiter = fastLimiter()
	}
	if opts.Hostname == "" {
		opts.Hostname = testHostname
	}
	if remote != "" {
		ln = fakeRemoteListener{ln, remote}
	}
	ts.srv = New(opts)
	go func() { ts.done <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-ts.done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ts
}

// fakeRemoteListener makes every connection look as if it came from addr.
type fakeRemoteListener struct {
	net.Listener
	addr string
}

func (l fakeRemoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ap, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(l.addr, "40000"))
	if err != nil {
		c.Close()
		return nil, err
	}
	return fakeRemoteConn{c, ap}, nil
}

type fakeRemoteConn struct {
	net.Conn
	remote net.Addr
}

func (c fakeRemoteConn) RemoteAddr() net.Addr { return c.remote }

// CloseWrite keeps the server's lingering close working through the
// wrapper.
func (c fakeRemoteConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// harness turns a transcript's @ lines into a store and a server.
type harness struct {
	t         *testing.T
	st        *store.Store
	opts      Options
	remote    string
	noTLS     bool
	clientTLS *tls.Config
	server    *testServer
	domains   map[string]bool
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, st: storetest.New(t, storetest.Fixture{}), domains: map[string]bool{}}
	h.opts.TLS, h.clientTLS = transcript.TLSPair(t)
	return h
}

func (h *harness) runner() *transcript.Runner {
	return &transcript.Runner{
		Dial: func() (net.Conn, error) {
			if h.server == nil {
				h.opts.Store = h.st
				if h.noTLS {
					h.opts.TLS = nil
				}
				h.server = startServer(h.t, h.opts, h.remote)
			}
			return net.Dial("tcp", h.server.addr)
		},
		Setup: h.setup,
		TLS:   h.clientTLS,
	}
}

// setup runs one @ line:
//
//	@user ADDR PASSWORD          create an account (and its domain)
//	@deliver ADDR FILE           deliver testdata/mail/FILE to ADDR's INBOX
//	@trash ADDR                  POP3 deletions move to Trash for ADDR
//	@count ADDR ROLE N           ADDR's mailbox with ROLE holds N messages
//	@seen ADDR N                 N messages of ADDR's INBOX are \Seen
//	@sessions N                  wait until the server runs N sessions
//	@server KEY=VALUE...         server options, before the first connection:
//	    tls=off remote=IP allow-plaintext max-errors=N max-line=N
//	    idle-timeout=D auth-timeout=D max-conns=N max-conns-per-ip=N
func (h *harness) setup(name string, args []string) error {
	ctx := context.Background()
	switch name {
	case "user":
		if len(args) != 2 {
			return errors.New("@user ADDR PASSWORD")
		}
		d := args[0][strings.LastIndexByte(args[0], '@')+1:]
		if !h.domains[d] {
			if err := h.st.AddDomain(ctx, d); err != nil {
				return err
			}
			h.domains[d] = true
		}
		_, err := h.st.CreateAccount(ctx, args[0], args[1])
		return err
	case "deliver":
		if len(args) != 2 {
			return errors.New("@deliver ADDR FILE")
		}
		data, err := os.ReadFile("testdata/mail/" + args[1])
		if err != nil {
			return err
		}
		_, err = h.st.Deliver(ctx, store.Delivery{Recipients: []string{args[0]}, Data: data})
		return err
	case "trash":
		if len(args) != 1 {
			return errors.New("@trash ADDR")
		}
		return h.st.SetPOP3Delete(ctx, args[0], store.POP3Trash)
	case "count", "seen":
		role, want := store.RoleInbox, ""
		switch {
		case name == "count" && len(args) == 3:
			role, want = args[1], args[2]
		case name == "seen" && len(args) == 2:
			want = args[1]
		default:
			return errors.New("@count ADDR ROLE N, @seen ADDR N")
		}
		msgs, err := mailboxMessages(ctx, h.st, args[0], role)
		if err != nil {
			return err
		}
		got := len(msgs)
		if name == "seen" {
			got = 0
			for _, m := range msgs {
				if hasFlag(m.Flags, store.FlagSeen) {
					got++
				}
			}
		}
		if strconv.Itoa(got) != want {
			return fmt.Errorf("%s %s %s: %d messages, want %s", name, args[0], role, got, want)
		}
		return nil
	case "sessions":
		// Wait until the server runs N sessions, e.g. until a dropped
		// connection has released its maildrop lock.
		want, err := strconv.Atoi(strings.Join(args, ""))
		if err != nil || h.server == nil {
			return errors.New("@sessions N, after the first connection")
		}
		return waitSessions(h.server.srv, want)
	case "server":
		if h.server != nil {
			return errors.New("@server must come before the first connection")
		}
		for _, a := range args {
			if err := h.option(a); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown setup @%s", name)
}

func (h *harness) option(kv string) error {
	k, v, _ := strings.Cut(kv, "=")
	num := func() (int, error) { return strconv.Atoi(v) }
	dur := func() (time.Duration, error) { return time.ParseDuration(v) }
	var err error
	switch k {
	case "tls":
		h.noTLS = v == "off"
	case "remote":
		h.remote = v
	case "allow-plaintext":
		h.opts.AllowPlaintext = true
	case "max-errors":
		h.opts.MaxErrors, err = num()
	case "max-line":
		h.opts.MaxLineBytes, err = num()
	case "max-conns":
		h.opts.MaxConns, err = num()
	case "max-conns-per-ip":
		h.opts.MaxConnsPerIP, err = num()
	case "idle-timeout":
		h.opts.IdleTimeout, err = dur()
	case "auth-timeout":
		h.opts.AuthTimeout, err = dur()
	default:
		return fmt.Errorf("unknown @server option %q", kv)
	}
	return err
}

// mailboxMessages lists a mailbox of an account by role, straight from
// the store.
func mailboxMessages(ctx context.Context, st *store.Store, addr, role string) ([]store.Message, error) {
	acct, err := st.Account(ctx, addr)
	if err != nil {
		return nil, err
	}
	mb, err := acct.MailboxByRole(ctx, role)
	if err != nil {
		return nil, err
	}
	return acct.Messages(ctx, mb.ID)
}

// client is a plain-socket POP3 client for Go tests.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	if l := c.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("greeting %q", l)
	}
	return c
}

// line reads one reply line without CRLF; failures end the test.
func (c *client) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// cmd sends a command and returns the first reply line.
func (c *client) cmd(format string, args ...any) string {
	c.t.Helper()
	c.send(format, args...)
	return c.line()
}

func (c *client) send(format string, args ...any) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c.conn, format+"\r\n", args...); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// ok sends a command and fails unless the reply is +OK.
func (c *client) ok(format string, args ...any) string {
	c.t.Helper()
	l := c.cmd(format, args...)
	if !strings.HasPrefix(l, "+OK") {
		c.t.Fatalf("%s: %q", strings.Fields(fmt.Sprintf(format, args...))[0], l)
	}
	return l
}

// login runs USER and PASS.
func (c *client) login(user, pass string) {
	c.t.Helper()
	c.ok("USER %s", user)
	c.ok("PASS %s", pass)
}

// multi reads the rest of a multi-line reply and undoes byte-stuffing; the
// result has CRLF line ends, as sent.
func (c *client) multi() []byte {
	c.t.Helper()
	var out []byte
	bol := true
	for {
		c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		l, err := c.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			c.t.Fatalf("read: %v", err)
		}
		if bol && string(l) == ".\r\n" {
			return out
		}
		if bol && l[0] == '.' {
			l = l[1:]
		}
		out = append(out, l...)
		bol = err == nil
	}
}

// closed reports whether the server has closed the connection (reading
// within d gives EOF or a reset, not data).
func (c *client) closed(d time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(d))
	_, err := c.r.ReadByte()
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || err != nil
}

// waitSessions waits up to 5s until srv runs n sessions.
func waitSessions(srv *Server, n int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.mu.Lock()
		got := len(srv.sessions)
		srv.mu.Unlock()
		if got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server runs %d sessions, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}
