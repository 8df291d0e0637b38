package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailbox/internal/throttle"
	"mailbox/internal/transcript"
	"mailbox/store"
	"mailbox/store/storetest"
)

const (
	alice    = "alice@example.test"
	bob      = "bob@example.test"
	carol    = "carol@catchall.test" // catchall.test sends unknown users to her
	password = "correct horse battery"
)

// harness is a real server on 127.0.0.1 over a real store, for one test.
type harness struct {
	t         testing.TB
	st        *store.Store
	srv       *Server
	addr      string
	clientTLS *tls.Config
	logs      *syncBuffer
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newStore returns a store with alice and bob in example.test, carol in
// catchall.test (with a catch-all to her), and aliases.
func newStore(t testing.TB) *store.Store {
	t.Helper()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: password, bob: password, carol: password}})
	ctx := context.Background()
	for _, a := range [][2]string{
		{"postmaster@example.test", alice},
		{"team@example.test", alice},
		{"team@example.test", bob},
		{"@catchall.test", carol},
	} {
		if err := st.AddAlias(ctx, a[0], a[1]); err != nil {
			t.Fatalf("alias %s: %v", a[0], err)
		}
	}
	return st
}

// start runs a server with opts (Store, TLS, Logger and a fast Limiter
// filled in when empty) and stops it when the test ends.
func start(t testing.TB, opts Options) *harness {
	t.Helper()
	serverTLS, clientTLS := transcript.TLSPair(t)
	h := &harness{t: t, clientTLS: clientTLS, logs: &syncBuffer{}}
	if opts.Store == nil {
		opts.Store = newStore(t)
	}
	h.st = opts.Store
	if opts.TLS == nil {
		opts.TLS = serverTLS
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.Limiter == nil {
		opts.Limiter = throttle.New(throttle.Options{BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
	}
	h.srv = New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	if opts.Mode == ModeSubmissions {
		ln = tls.NewListener(ln, opts.TLS)
	}
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", h.logs.String())
		}
	})
	return h
}

// client dials with go-smtp's client and says EHLO (over TLS on 465).
func (h *harness) client() *gosmtp.Client {
	h.t.Helper()
	var c *gosmtp.Client
	var err error
	if h.srv.opts.Mode == ModeSubmissions {
		c, err = gosmtp.DialTLS(h.addr, h.clientTLS)
	} else {
		c, err = gosmtp.Dial(h.addr)
	}
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		h.t.Fatalf("EHLO: %v", err)
	}
	return c
}

// send delivers one message over a fresh connection and returns the DATA
// reply error (nil for 250).
func (h *harness) send(from string, to []string, msg string) error {
	h.t.Helper()
	c := h.client()
	defer c.Quit()
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	return w.Close()
}

// inbox returns the raw messages in addr's INBOX, oldest first.
func (h *harness) inbox(addr string) [][]byte {
	h.t.Helper()
	return inboxOf(h.t, h.st, addr)
}

func inboxOf(t testing.TB, st *store.Store, addr string) [][]byte {
	t.Helper()
	ctx := context.Background()
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatalf("account %s: %v", addr, err)
	}
	mb, err := acct.MailboxByRole(ctx, store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := acct.Messages(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		r, err := acct.Open(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// wantCode checks that err is an SMTP reply with code and enhanced code.
func wantCode(t testing.TB, err error, code int, enh string) {
	t.Helper()
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want %d %s", err, code, enh)
	}
	e := se.EnhancedCode
	got := fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	if se.Code != code || got != enh {
		t.Fatalf("got %d %s %q, want %d %s", se.Code, got, se.Message, code, enh)
	}
}

// raw is a plain socket for protocol-level tests.
type raw struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func (h *harness) raw() *raw {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	x := &raw{t: h.t, c: c, r: bufio.NewReader(c)}
	x.expect(`^220 `)
	return x
}

func (x *raw) send(s string) {
	x.t.Helper()
	x.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(x.c, s); err != nil {
		x.t.Fatalf("send: %v", err)
	}
}

// line reads one reply line (without CRLF).
func (x *raw) line() string {
	x.t.Helper()
	x.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := x.r.ReadString('\n')
	if err != nil {
		x.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// reply reads a whole (possibly multi-line) reply and returns its last line.
func (x *raw) reply() string {
	x.t.Helper()
	for {
		l := x.line()
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// expect reads one reply and checks its last line against a regexp.
func (x *raw) expect(re string) string {
	x.t.Helper()
	l := x.reply()
	if !regexp.MustCompile(re).MatchString(l) {
		x.t.Fatalf("got %q, want %s", l, re)
	}
	return l
}

func tlsPair(t testing.TB) (server, client *tls.Config) { return transcript.TLSPair(t) }

// listen opens a loopback listener closed at the end of the test.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// closed reports whether the server closed the connection (after
// draining what it sent): EOF, or a reset when it closed with our bytes
// unread, as opposed to a timeout.
func (x *raw) closed() bool {
	x.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(x.r)
	var ne net.Error
	return err == nil || !(errors.As(err, &ne) && ne.Timeout())
}
