package imap

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mailbox/store"
	"mailbox/store/storetest"
)

const (
	alice     = "alice@example.test"
	alicePass = "alice secret"
	bob       = "bob@example.test"
	bobPass   = "bob secret"
)

// testServer is a real Server on a loopback port over a real store.
type testServer struct {
	st   *store.Store
	srv  *Server
	addr string
}

// newTestServer starts a server for alice and bob, alice's INBOX holding
// msgs. opts may adjust the Options before New.
func newTestServer(t testing.TB, msgs []string, opts ...func(*Options)) *testServer {
	t.Helper()
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{alice: alicePass, bob: bobPass},
		Messages: map[string][]string{alice: msgs},
	})
	o := Options{Store: st, Logger: testLogger(t)}
	for _, f := range opts {
		f(&o)
	}
	srv := New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{st: st, srv: srv, addr: ln.Addr().String()}
}

// testLogger sends server logs to the test log with -v.
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

// updates collects unilateral responses as short strings: "EXISTS 3",
// "EXPUNGE 2", "FETCH 1 FLAGS (\Seen)".
type updates struct {
	mu   sync.Mutex
	list []string
	ch   chan struct{}
}

func (u *updates) add(s string) {
	u.mu.Lock()
	u.list = append(u.list, s)
	u.mu.Unlock()
	select {
	case u.ch <- struct{}{}:
	default:
	}
}

// wait returns once want has been seen (and removes everything up to
// it), or fails the test after timeout.
func (u *updates) wait(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		u.mu.Lock()
		for i, s := range u.list {
			if s == want {
				u.list = u.list[i+1:]
				u.mu.Unlock()
				return
			}
		}
		got := strings.Join(u.list, "; ")
		u.mu.Unlock()
		select {
		case <-u.ch:
		case <-deadline:
			t.Fatalf("no %q within %v; got %q", want, timeout, got)
		}
	}
}

func (u *updates) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.list
	u.list = nil
	return l
}

type client struct {
	*imapclient.Client
	up *updates
}

// dial connects without logging in.
func (ts *testServer) dial(t testing.TB) *client {
	t.Helper()
	up := &updates{ch: make(chan struct{}, 1)}
	c, err := imapclient.DialInsecure(ts.addr, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Expunge: func(seq uint32) { up.add(fmt.Sprintf("EXPUNGE %d", seq)) },
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					up.add(fmt.Sprintf("EXISTS %d", *d.NumMessages))
				}
			},
			Fetch: func(msg *imapclient.FetchMessageData) {
				buf, err := msg.Collect()
				if err != nil {
					up.add("FETCH error " + err.Error())
					return
				}
				var flags []string
				for _, f := range buf.Flags {
					flags = append(flags, string(f))
				}
				up.add(fmt.Sprintf("FETCH %d FLAGS (%s)", buf.SeqNum, strings.Join(flags, " ")))
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{Client: c, up: up}
}

// login connects and logs in.
func (ts *testServer) login(t testing.TB, user, pass string) *client {
	t.Helper()
	c := ts.dial(t)
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

func (c *client) mustSelect(t testing.TB, name string) *imap.SelectData {
	t.Helper()
	d, err := c.Select(name, nil).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", name, err)
	}
	// imapclient completes the command before it records the selected
	// mailbox; wait for that.
	for range 100 {
		if c.Mailbox() != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return d
}

func (c *client) fetch(t testing.TB, set imap.NumSet, opts *imap.FetchOptions) []*imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(set, opts).Collect()
	if err != nil {
		t.Fatalf("fetch %v: %v", set, err)
	}
	return msgs
}

func testMessages(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = storetest.Message("carol@elsewhere.test", alice, fmt.Sprintf("message %d", i+1), fmt.Sprintf("body of message %d", i+1))
	}
	return out
}

func flagStrings(fl []imap.Flag) string {
	var s []string
	for _, f := range fl {
		s = append(s, string(f))
	}
	return strings.Join(s, " ")
}
