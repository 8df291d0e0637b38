package web

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/store"
	"mailbox/store/storetest"
)

const (
	alice = "alice@example.test"
	bob   = "bob@example.test"
	pass  = "correct horse"
)

type env struct {
	t   testing.TB
	st  *store.Store
	srv *Server
	ts  *httptest.Server
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("WEB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newEnv starts the webmail over a real store with alice and bob on a
// loopback httptest server.
func newEnv(t testing.TB, opts Options, f storetest.Fixture) *env {
	t.Helper()
	if f.Users == nil {
		f.Users = map[string]string{alice: pass, bob: pass}
	}
	st := storetest.New(t, f)
	opts.Store = st
	opts.Logger = testLogger(t)
	if opts.Limiter == nil {
		opts.Limiter = throttle.New(throttle.Options{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
	}
	srv := New(opts)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ts.Close()
	})
	return &env{t: t, st: st, srv: srv, ts: ts}
}

// client is a browser-like HTTP client: cookies, no automatic redirects.
type client struct {
	e    *env
	http *http.Client
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{e: e, http: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type resp struct {
	*http.Response
	body string
}

func (c *client) do(req *http.Request) resp {
	c.e.t.Helper()
	r, err := c.http.Do(req)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r, string(b)}
}

func (c *client) get(path string) resp {
	c.e.t.Helper()
	req, _ := http.NewRequest("GET", c.e.ts.URL+path, nil)
	return c.do(req)
}

func (c *client) post(path string, form url.Values) resp {
	c.e.t.Helper()
	req, _ := http.NewRequest("POST", c.e.ts.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page.
func (c *client) csrf(path string) string {
	c.e.t.Helper()
	r := c.get(path)
	m := csrfRE.FindStringSubmatch(r.body)
	if m == nil {
		c.e.t.Fatalf("no csrf token on %s (%d): %.300s", path, r.StatusCode, r.body)
	}
	return m[1]
}

func (c *client) login(addr, password string) resp {
	c.e.t.Helper()
	tok := c.csrf("/login")
	return c.post("/login", url.Values{"csrf": {tok}, "address": {addr}, "password": {password}, "next": {"/"}})
}

func (c *client) mustLogin(addr string) {
	c.e.t.Helper()
	r := c.login(addr, pass)
	if r.StatusCode != http.StatusSeeOther {
		c.e.t.Fatalf("login %s: %d %.300s", addr, r.StatusCode, r.body)
	}
}

func (e *env) account(addr string) *store.Account {
	e.t.Helper()
	a, err := e.st.Account(context.Background(), addr)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func (e *env) box(addr, role string) store.Mailbox {
	e.t.Helper()
	mb, err := e.account(addr).MailboxByRole(context.Background(), role)
	if err != nil {
		e.t.Fatal(err)
	}
	return mb
}

func (e *env) messages(addr, role string) []store.Message {
	e.t.Helper()
	msgs, err := e.account(addr).Messages(context.Background(), e.box(addr, role).ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

func (e *env) raw(addr string, m store.Message) string {
	e.t.Helper()
	rc, err := e.account(addr).Open(context.Background(), m.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func (e *env) deliver(to, raw string) store.Delivered {
	e.t.Helper()
	return storetest.Deliver(e.t, e.st, to, raw)
}

func msgURL(d store.Delivered) string { return fmt.Sprintf("/msg/%d/%d", d.MailboxID, d.UID) }

func regexpMust(re string) *regexp.Regexp { return regexp.MustCompile(re) }
