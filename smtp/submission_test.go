package smtp

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailbox/internal/throttle"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestSubmissionBeforeSTARTTLS: no AUTH is offered or accepted in clear,
// and MAIL is refused until TLS and AUTH.
func TestSubmissionBeforeSTARTTLS(t *testing.T) {
	h := start(t, Options{Mode: ModeSubmission})
	c := h.client()
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH advertised before STARTTLS")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not advertised")
	}
	x := h.raw()
	x.send("EHLO client.test\r\n")
	x.expect("^250 ")
	x.send("AUTH PLAIN " + b64("\x00"+alice+"\x00"+password) + "\r\n")
	x.expect(`^530 5\.7\.0 Must issue a STARTTLS command first$`)
	x.send("AUTH LOGIN\r\n")
	x.expect(`^530 5\.7\.0 Must issue a STARTTLS command first$`)
	x.send("MAIL FROM:<alice@example.test>\r\n")
	x.expect(`^530 5\.7\.0 Must issue a STARTTLS command first$`)
	if strings.Contains(h.logs.String(), password) || strings.Contains(h.logs.String(), b64("\x00"+alice+"\x00"+password)) {
		t.Fatal("credentials in the log")
	}
}

// submitClient connects to 587 and runs STARTTLS and EHLO.
func (h *harness) submitClient() *gosmtp.Client {
	h.t.Helper()
	c, err := gosmtp.DialStartTLS(h.addr, h.clientTLS)
	if err != nil {
		h.t.Fatalf("STARTTLS: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		h.t.Fatalf("EHLO: %v", err)
	}
	return c
}

func TestSubmission(t *testing.T) {
	h := start(t, Options{Mode: ModeSubmission})
	c := h.submitClient()
	if ok, p := c.Extension("AUTH"); !ok || p != "PLAIN LOGIN" {
		t.Fatalf("AUTH %q after STARTTLS", p)
	}
	// MAIL without AUTH.
	wantCode(t, c.Mail(alice, nil), 530, "5.7.0")
	// Wrong password.
	wantCode(t, c.Auth(sasl.NewPlainClient("", alice, "wrong")), 535, "5.7.8")
	// Right password.
	if err := c.Auth(sasl.NewPlainClient("", alice, password)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("someone@remote.test", nil); err != nil {
		t.Fatalf("remote recipient in submission: %v", err)
	}
	wantCode(t, c.Rcpt("nobody@example.test", nil), 550, "5.1.1")
	wantCode(t, c.Rcpt("x%remote.test@example.test", nil), 554, "5.7.1")
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: submitted\r\n\r\nhi bob\r\n"
	w.Write([]byte(msg))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	got := h.inbox(bob)
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	// A submission carries no Return-Path (the final delivery adds it);
	// the missing Date: and Message-ID: are added.
	if !bytes.HasPrefix(got[0], []byte("Received: from client.test ([127.0.0.1])\r\n\t(using TLS")) ||
		!bytes.Contains(got[0], []byte("\r\nDate: ")) || !bytes.Contains(got[0], []byte("\r\nMessage-ID: <")) ||
		!bytes.Contains(got[0], []byte(" with ESMTPSA id ")) || !bytes.HasSuffix(got[0], []byte(msg)) {
		t.Fatalf("got %q", got[0])
	}
	logs := h.logs.String()
	if strings.Contains(logs, password) || strings.Contains(logs, b64("\x00"+alice+"\x00"+password)) {
		t.Fatal("credentials in the log")
	}
	if !strings.Contains(logs, `msg=authenticated`) || !strings.Contains(logs, "user="+alice) {
		t.Errorf("login not logged:\n%s", logs)
	}
}

// TestAuthLogin: the LOGIN mechanism, with and without an initial
// response, and a cancelled exchange.
func TestAuthLogin(t *testing.T) {
	h := start(t, Options{Mode: ModeSubmission, AllowPlaintext: true})
	x := h.raw()
	x.send("EHLO client.test\r\n")
	x.expect("^250 ")
	x.send("AUTH LOGIN\r\n")
	x.expect(`^334 ` + b64("Username:") + `$`)
	x.send(b64(alice) + "\r\n")
	x.expect(`^334 ` + b64("Password:") + `$`)
	x.send(b64("wrong") + "\r\n")
	x.expect(`^535 5\.7\.8 authentication failed$`)
	x.send("AUTH LOGIN " + b64(alice) + "\r\n")
	x.expect(`^334 ` + b64("Password:") + `$`)
	x.send("*\r\n")
	x.expect(`^501 `)
	x.send("AUTH PLAIN\r\n")
	x.expect(`^334 ?$`)
	x.send(b64("no-nuls") + "\r\n")
	x.expect(`^501 5\.5\.2 malformed authentication data$`)
	x.send("AUTH CRAM-MD5\r\n")
	x.expect(`^504 5\.5\.4 `)
	x.send("AUTH LOGIN " + b64(alice) + "\r\n")
	x.expect(`^334 `)
	x.send(b64(password) + "\r\n")
	x.expect(`^235 2\.0\.0 `)
	x.send("AUTH LOGIN\r\n")
	x.expect(`^503 5\.5\.1 `)
	x.send("MAIL FROM:<alice@example.test>\r\n")
	x.expect(`^250 `)
	if logs := h.logs.String(); strings.Contains(logs, password) || strings.Contains(logs, b64(password)) || strings.Contains(logs, b64("wrong")) {
		t.Fatal("credentials in the log")
	}
}

// TestAllowPlaintext: with AllowPlaintext AUTH is offered without TLS.
func TestAllowPlaintext(t *testing.T) {
	h := start(t, Options{Mode: ModeSubmission, AllowPlaintext: true})
	c := h.client()
	if ok, p := c.Extension("AUTH"); !ok || p != "PLAIN LOGIN" {
		t.Fatalf("AUTH %q", p)
	}
	if err := c.Auth(sasl.NewLoginClient(alice, password)); err != nil {
		t.Fatal(err)
	}
}

// TestAuthThrottle: after the limiter's free failures, a wrong password is
// answered only after the delay, the same for an account that does not
// exist; a right one after the delay as well.
func TestAuthThrottle(t *testing.T) {
	const delay = 300 * time.Millisecond
	lim := throttle.New(throttle.Options{Free: 1, BaseDelay: delay, MaxDelay: delay})
	h := start(t, Options{Mode: ModeSubmission, AllowPlaintext: true, Limiter: lim})
	try := func(user, pass string) (time.Duration, error) {
		c := h.client()
		defer c.Close()
		began := time.Now()
		err := c.Auth(sasl.NewPlainClient("", user, pass))
		return time.Since(began), err
	}
	if _, err := try(alice, "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	for _, user := range []string{alice, "ghost@example.test", "ghost@nowhere.test"} {
		d, err := try(user, "wrong")
		wantCode(t, err, 535, "5.7.8")
		if d < delay {
			t.Errorf("%s: failure answered after %v, want at least %v", user, d, delay)
		}
	}
	d, err := try(alice, password)
	if err != nil {
		t.Fatal(err)
	}
	if d < delay {
		t.Errorf("success answered after %v while a delay was due", d)
	}
}

// TestSubmissions: implicit TLS on 465.
func TestSubmissions(t *testing.T) {
	h := start(t, Options{Mode: ModeSubmissions})
	c := h.client()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("not TLS")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered inside TLS")
	}
	wantCode(t, c.Mail(alice, nil), 530, "5.7.0")
	if err := c.Auth(sasl.NewPlainClient("", alice, password)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	w.Write([]byte("From: alice@example.test\r\nSubject: 465\r\n\r\nimplicit\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := h.inbox(bob); len(got) != 1 || !bytes.Contains(got[0], []byte(" with ESMTPSA id ")) {
		t.Fatalf("got %q", got)
	}
}

// TestSubmissionsPlainListener: Serve also takes a plain listener on 465
// and adds TLS itself.
func TestSubmissionsPlainListener(t *testing.T) {
	serverTLS, clientTLS := tlsPair(t)
	h := start(t, Options{Mode: ModeMX})
	srv := New(Options{Mode: ModeSubmissions, Store: h.st, TLS: serverTLS})
	ln := listen(t)
	go srv.Serve(ln)
	defer srv.Shutdown(t.Context())
	c, err := gosmtp.DialTLS(ln.Addr().String(), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", alice, password)); err != nil {
		t.Fatal(err)
	}
}

// TestSubmissionsNeedsTLS: 465 without a TLS config does not start.
func TestSubmissionsNeedsTLS(t *testing.T) {
	srv := New(Options{Mode: ModeSubmissions, Store: newStore(t)})
	if err := srv.Serve(listen(t)); err == nil {
		t.Fatal("Serve without TLS succeeded")
	}
}
