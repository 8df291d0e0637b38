package main

// End-to-end tests across protocols: the real binary with every listener
// on, an IMAP client (go-imap's imapclient) watching while SMTP delivers
// and POP3 deletes, the POP3 UIDL checked against what IMAP reports, TLS
// clients that trust only `mailbox tls ca`, and `mailbox serve` with no
// configuration at all on its default ports.

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mailbox/pop3"
)

// imapWait bounds the wait for a change to reach an IMAP session.
const imapWait = 10 * time.Second

// newInstanceAll is newInstance with every listener on, on loopback ports
// the system picks.
func newInstanceAll(t *testing.T, extra string) *instance {
	t.Helper()
	in := newInstance(t, extra)
	cfg, err := os.ReadFile(in.config)
	if err != nil {
		t.Fatal(err)
	}
	on := regexp.MustCompile(`(?m)^(imap|imaps|http|https) = ""$`).ReplaceAllString(string(cfg), `$1 = "127.0.0.1:0"`)
	if err := os.WriteFile(in.config, []byte(on), 0o600); err != nil {
		t.Fatal(err)
	}
	return in
}

// localCA is a pool holding only the certificate `mailbox tls ca` prints.
func localCA(t *testing.T, in *instance) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(in.must("", "tls", "ca"))) {
		t.Fatal("mailbox tls ca printed no PEM certificate")
	}
	return pool
}

// updates collects what an IMAP server tells a session unasked
// ("EXISTS 2", "EXPUNGE 1", "FETCH 1 FLAGS (\Flagged)").
type updates struct {
	mu    sync.Mutex
	lines []string
	added chan struct{} // signalled after each add
}

func (u *updates) add(line string) {
	u.mu.Lock()
	u.lines = append(u.lines, line)
	u.mu.Unlock()
	select {
	case u.added <- struct{}{}:
	default:
	}
}

// wait waits until some update matches want, and consumes everything up to
// and including it.
func (u *updates) wait(t *testing.T, want *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(imapWait)
	for {
		u.mu.Lock()
		for i, l := range u.lines {
			if want.MatchString(l) {
				u.lines = u.lines[i+1:]
				u.mu.Unlock()
				return l
			}
		}
		seen := slices.Clone(u.lines)
		u.mu.Unlock()
		select {
		case <-u.added:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no IMAP update matching %q within %v; got %q", want, imapWait, seen)
		}
	}
}

func (u *updates) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { u.add(fmt.Sprintf("EXPUNGE %d", seq)) },
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				u.add(fmt.Sprintf("EXISTS %d", *d.NumMessages))
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				u.add("FETCH error " + err.Error())
				return
			}
			var flags []string
			for _, f := range buf.Flags {
				flags = append(flags, string(f))
			}
			u.add(fmt.Sprintf("FETCH %d FLAGS (%s)", buf.SeqNum, strings.Join(flags, " ")))
		},
	}
}

// dialIMAPS logs in over implicit TLS, trusting only roots.
func dialIMAPS(t *testing.T, addr string, roots *x509.CertPool, user, pass string, u *updates) *imapclient.Client {
	t.Helper()
	opts := &imapclient.Options{TLSConfig: &cryptotls.Config{RootCAs: roots, ServerName: "localhost"}}
	if u != nil {
		opts.UnilateralDataHandler = u.handler()
	}
	c, err := imapclient.DialTLS(addr, opts)
	if err != nil {
		t.Fatalf("imaps %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("imaps login: %v", err)
	}
	return c
}

// pop3UIDLs lists UIDL of a fresh POP3 session: message number -> UIDL.
func pop3UIDLs(t *testing.T, addr, user, pass string) map[int]string {
	t.Helper()
	c := dialPOP3(t, addr)
	c.login(user, pass)
	c.cmd("UIDL")
	out := map[int]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(c.multi())), "\r\n") {
		var n int
		var uidl string
		if _, err := fmt.Sscanf(line, "%d %s", &n, &uidl); err != nil {
			t.Fatalf("UIDL line %q: %v", line, err)
		}
		out[n] = uidl
	}
	c.cmd("QUIT")
	return out
}

// One account, every protocol at once: an IMAP session in IDLE hears of
// mail delivered over SMTP and of a POP3 deletion, a flag set by a second
// IMAP session reaches the first, and POP3's UIDL of each INBOX message is
// pop3.UIDL of the UIDVALIDITY and UID that IMAP reports.
func TestCrossProtocolIMAP(t *testing.T) {
	t.Parallel()
	in := newInstanceAll(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "alice pass")
	p := in.start()
	roots := localCA(t, in)
	smtpAddr, pop3Addr := p.addr("smtp"), p.addr("pop3")

	var watch updates
	watch.added = make(chan struct{}, 1)
	c1 := dialIMAPS(t, p.addr("imaps"), roots, "alice@localhost", "alice pass", &watch)
	sel, err := c1.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	if sel.NumMessages != 0 || sel.UIDValidity == 0 {
		t.Fatalf("SELECT INBOX: %d messages, UIDVALIDITY %d", sel.NumMessages, sel.UIDValidity)
	}
	idle, err := c1.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}

	// SMTP delivers three messages; each arrives in IDLE as EXISTS.
	for i := 1; i <= 3; i++ {
		msg := testMessage(fmt.Sprintf("cross-%d", i), fmt.Sprintf("message %d", i))
		if err := sendSMTP(t, smtpAddr, "bob@example.org", "alice@localhost", msg); err != nil {
			t.Fatalf("SMTP delivery %d: %v", i, err)
		}
		watch.wait(t, regexp.MustCompile(fmt.Sprintf(`^EXISTS %d$`, i)))
	}
	if err := idle.Close(); err != nil {
		t.Fatalf("DONE: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE: %v", err)
	}

	// The identity every protocol shares: UIDL = pop3.UIDL(UIDVALIDITY, UID).
	checkUIDLs := func(want int) []imap.UID {
		t.Helper()
		var all imap.SeqSet
		all.AddRange(1, 0) // 1:*
		msgs, err := c1.Fetch(all, &imap.FetchOptions{UID: true}).Collect()
		if err != nil {
			t.Fatalf("FETCH 1:* (UID): %v", err)
		}
		if len(msgs) != want {
			t.Fatalf("IMAP shows %d messages, want %d", len(msgs), want)
		}
		uidls := pop3UIDLs(t, pop3Addr, "alice@localhost", "alice pass")
		if len(uidls) != want {
			t.Fatalf("POP3 UIDL lists %d messages, want %d: %v", len(uidls), want, uidls)
		}
		var uids []imap.UID
		for _, m := range msgs {
			wantUIDL := pop3.UIDL(sel.UIDValidity, uint32(m.UID))
			if got := uidls[int(m.SeqNum)]; got != wantUIDL {
				t.Errorf("message %d (UID %d, UIDVALIDITY %d): POP3 UIDL %q, want %q", m.SeqNum, m.UID, sel.UIDValidity, got, wantUIDL)
			}
			if len(wantUIDL) != 16 || wantUIDL != fmt.Sprintf("%08X%08X", uint32(m.UID), sel.UIDValidity) {
				t.Errorf("pop3.UIDL(%d, %d) = %q, not %%08X%%08X of UID then UIDVALIDITY", sel.UIDValidity, m.UID, wantUIDL)
			}
			uids = append(uids, m.UID)
		}
		return uids
	}
	uids := checkUIDLs(3)

	// A second IMAP session, over STARTTLS, sets a flag; the first one,
	// back in IDLE, sees it.
	c2, err := imapclient.DialStartTLS(p.addr("imap"), &imapclient.Options{
		TLSConfig: &cryptotls.Config{RootCAs: roots, ServerName: "localhost"},
	})
	if err != nil {
		t.Fatalf("imap STARTTLS: %v", err)
	}
	t.Cleanup(func() { c2.Close() })
	if err := c2.Login("alice@localhost", "alice pass").Wait(); err != nil {
		t.Fatalf("imap login: %v", err)
	}
	if _, err := c2.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("second SELECT: %v", err)
	}
	if idle, err = c1.Idle(); err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	flagged := imap.UIDSetNum(uids[2])
	if err := c2.Store(flagged, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatalf("UID STORE +FLAGS.SILENT (\\Flagged): %v", err)
	}
	watch.wait(t, regexp.MustCompile(`^FETCH 3 FLAGS \(.*\\Flagged.*\)$`))

	// POP3 deletes message 1 at QUIT; the IMAP session gets EXPUNGE 1, and
	// the second session sees the change with its next command.
	pc := dialPOP3(t, pop3Addr)
	pc.login("alice@localhost", "alice pass")
	pc.cmd("DELE 1")
	pc.cmd("QUIT")
	watch.wait(t, regexp.MustCompile(`^EXPUNGE 1$`))
	if err := idle.Close(); err != nil {
		t.Fatalf("DONE: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	if err := c2.Noop().Wait(); err != nil {
		t.Fatalf("NOOP: %v", err)
	}
	if n := c2.Mailbox().NumMessages; n != 2 {
		t.Errorf("second session: %d messages after the POP3 deletion, want 2", n)
	}
	got, err := c2.Fetch(flagged, &imap.FetchOptions{Flags: true, UID: true}).Collect()
	if err != nil || len(got) != 1 || !slices.Contains(got[0].Flags, imap.FlagFlagged) {
		t.Fatalf("second session: UID FETCH %d FLAGS: %v %+v", uids[2], err, got)
	}

	// After the deletion, the remaining messages keep their UIDLs.
	if left := checkUIDLs(2); !slices.Equal(left, uids[1:]) {
		t.Errorf("UIDs after the deletion %v, want %v", left, uids[1:])
	}
	if err := c1.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
	if code := p.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// IMAPS and the webmail over HTTPS work for clients that trust nothing but
// the certificate `mailbox tls ca` prints, and plain HTTP redirects there.
func TestTLSClientsTrustLocalCA(t *testing.T) {
	t.Parallel()
	in := newInstanceAll(t, "")
	in.must("", "domain", "add", "localhost")
	in.addUser("alice@localhost", "alice pass")
	p := in.start()
	roots := localCA(t, in)

	c := dialIMAPS(t, p.addr("imaps"), roots, "alice@localhost", "alice pass", nil)
	if !c.Caps().Has(imap.CapIMAP4rev2) || !c.Caps().Has(imap.CapIdle) {
		t.Errorf("capabilities %v lack IMAP4rev2 or IDLE", c.Caps())
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
	// Without the CA, the handshake must fail.
	if conn, err := cryptotls.Dial("tcp", p.addr("imaps"), &cryptotls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool()}); err == nil {
		conn.Close()
		t.Errorf("imaps handshake succeeded with an empty root pool")
	}

	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &cryptotls.Config{RootCAs: roots, ServerName: "localhost"},
			ForceAttemptHTTP2: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + p.addr("https") + "/login")
	if err != nil {
		t.Fatalf("GET /login over HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /login: %s", resp.Status)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("GET /login over %s, want HTTP/2", resp.Proto)
	}
	for header, want := range map[string]string{
		"Content-Security-Policy":   "default-src 'none'",
		"Strict-Transport-Security": "max-age=",
		"X-Frame-Options":           "DENY",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "no-referrer",
	} {
		if got := resp.Header.Get(header); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want it to contain %q", header, got, want)
		}
	}

	// Plain HTTP redirects to the HTTPS listener's real port.
	resp, err = client.Get("http://" + p.addr("http") + "/login")
	if err != nil {
		t.Fatalf("GET /login over HTTP: %v", err)
	}
	resp.Body.Close()
	_, httpsPort, _ := net.SplitHostPort(p.addr("https"))
	if want := "https://127.0.0.1:" + httpsPort + "/login"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("GET http://.../login: %s to %q, want 301 to %q", resp.Status, resp.Header.Get("Location"), want)
	}
	if code := p.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// defaultPorts are the listeners of `mailbox serve` with no configuration
// (the README's connection-settings table and `mailbox serve -h`).
var defaultPorts = map[string]string{
	"smtp": "2525", "submission": "5870", "submissions": "4650",
	"pop3": "1100", "pop3s": "9950", "imap": "1430", "imaps": "9930",
	"http": "8080", "https": "8443",
}

// `mailbox serve` with no config file, in an empty working directory,
// starts all nine listeners on their default ports with data in ./data.
// Another server on one of those ports makes it skip locally; CI has them
// free, so there it must run.
func TestServeDefaultsAllListeners(t *testing.T) {
	// Not parallel: it takes fixed ports.
	for key, port := range defaultPorts {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("default port %s (listen.%s) is taken in CI: %v", port, key, err)
			}
			t.Skipf("default port %s (listen.%s) is in use here: %v", port, key, err)
		}
		ln.Close()
	}
	dir := t.TempDir()
	in := &instance{t: t, dir: dir, workDir: dir}
	p := in.start()
	if !strings.Contains(p.stdout, "Created account postmaster@localhost") {
		t.Errorf("first start did not create postmaster@localhost:\n%s", p.stdout)
	}
	if len(p.addrs) != len(defaultPorts) {
		t.Errorf("%d listeners up, want %d:\n%s", len(p.addrs), len(defaultPorts), p.stdout)
	}
	for key, port := range defaultPorts {
		if got := p.port(key); got != port {
			t.Errorf("listen.%s on port %s, want %s", key, got, port)
		}
	}
	if _, err := os.Stat(dir + "/data/mailbox.db"); err != nil {
		t.Errorf("no database in the working directory's data/: %v", err)
	}

	// Each listener answers as its protocol does.
	roots := localCA(t, in)
	tlsCfg := func(alpn string) *cryptotls.Config {
		return &cryptotls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{alpn}}
	}
	greetings := map[string]string{"smtp": "220 ", "submission": "220 ", "submissions": "220 ",
		"pop3": "+OK", "pop3s": "+OK", "imap": "* OK", "imaps": "* OK"}
	alpn := map[string]string{"submissions": "smtp", "pop3s": "pop3", "imaps": "imap", "https": "h2"}
	for key, port := range defaultPorts {
		addr := "127.0.0.1:" + port
		var conn net.Conn
		var err error
		if a, ok := alpn[key]; ok {
			conn, err = cryptotls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tlsCfg(a))
		} else {
			conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		}
		if err != nil {
			t.Errorf("listen.%s: %v", key, err)
			continue
		}
		want, ok := greetings[key]
		if !ok { // the web listeners: one request
			req := "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
			if key == "https" {
				// h2 needs its preface; the handshake with ALPN h2 is the check.
				if got := conn.(*cryptotls.Conn).ConnectionState().NegotiatedProtocol; got != "h2" {
					t.Errorf("listen.https: ALPN %q, want h2", got)
				}
				conn.Close()
				continue
			}
			conn.Write([]byte(req))
			want = "HTTP/1.1 200 "
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		conn.Close()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && n == 0 {
			t.Errorf("listen.%s: read: %v", key, err)
			continue
		}
		if got := string(buf[:n]); !strings.HasPrefix(got, want) {
			t.Errorf("listen.%s: first bytes %q, want %q", key, got, want)
		}
	}
	if code := p.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}
