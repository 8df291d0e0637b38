package smtp

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailbox/store"
)

const (
	aliceA = "alice@a.test"
	bobB   = "bob@b.test"
)

// fastRetry is a runner configuration for tests: quick retries.
func fastRetry(d *testDNS, mxPort int) RunnerOptions {
	return RunnerOptions{
		Hostname:       "mx.a.test",
		Resolver:       NewResolver(d.addr, 2*time.Second),
		MXPort:         mxPort,
		RetryMin:       100 * time.Millisecond,
		RetryMax:       400 * time.Millisecond,
		PollInterval:   100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
	}
}

func testMessage(from, to, subject string) string {
	return "From: Alice <" + from + ">\r\nTo: <" + to + ">\r\nSubject: " + subject + "\r\n\r\nHello from A.\r\n"
}

// TestOutboundBetweenInstances: alice on instance A submits mail for bob
// on instance B; A's runner finds B through the test DNS server, delivers
// over STARTTLS, signed with DKIM.
func TestOutboundBetweenInstances(t *testing.T) {
	d := startDNS(t)
	serverTLS, _ := tlsPair(t)
	inbound := &InboundPolicy{Resolver: NewResolver(d.addr, 2*time.Second), RejectDMARC: true, QuarantineDMARC: true}
	b := newInstance(t, "b.test", []string{bobB}, Options{TLS: serverTLS, Inbound: inbound}, store.Options{})
	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	publishDomain(t, d, a, "a.test", "reject")
	publishDomain(t, d, b, "b.test", "reject")
	a.startRunner(fastRetry(d, b.mx.port()))

	if err := a.submit(aliceA, []string{bobB}, testMessage(aliceA, bobB, "across")); err != nil {
		t.Fatal(err)
	}
	got := b.waitInbox(bobB, 1, 10*time.Second)[0]
	a.waitQueueEmpty(5 * time.Second)
	for _, want := range []string{"Return-Path: <alice@a.test>\r\n", "Received: from mx.a.test", "(using TLS",
		"DKIM-Signature: a=ed25519-sha256;", "DKIM-Signature: a=rsa-sha256;", "s=mailbox-ed25519;", "s=mailbox-rsa;", "Subject: across"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("bob's copy lacks %q:\n%s", want, got)
		}
	}
	for i := 0; !strings.Contains(a.logs.String(), "msg=delivered"); i++ {
		if i == 100 {
			t.Fatal("delivery not logged")
		}
		time.Sleep(20 * time.Millisecond) // logged just after the commit
	}
	ar := "Authentication-Results: mx.b.test;\r\n\tspf=pass smtp.helo=mx.a.test smtp.mailfrom=alice@a.test;\r\n\tdkim=pass header.d=a.test"
	if !bytes.Contains(got, []byte(ar)) || !bytes.Contains(got, []byte(";\r\n\tdmarc=pass header.from=a.test\r\n")) {
		t.Errorf("no passing Authentication-Results:\n%s", got)
	}
	if n := bytes.Count(got, []byte("dkim=pass")); n != 2 {
		t.Errorf("%d DKIM passes, want 2 (Ed25519 and RSA)", n)
	}

	// Forged: straight to B's port 25 from another address, with alice's
	// domain in From: and an Authentication-Results claiming B's verdict.
	forged := "Authentication-Results: mx.b.test; dmarc=pass header.from=a.test\r\n" + testMessage(aliceA, bobB, "forged")
	err := sendFrom(t, "127.0.0.9", b.mx.addr, aliceA, bobB, forged)
	wantCode(t, err, 550, "5.7.1")
	if n := len(inboxOf(t, b.st, bobB)); n != 1 {
		t.Fatalf("bob has %d messages after the forgery", n)
	}
	// With a p=quarantine domain the forgery lands in Junk, and the
	// forged Authentication-Results is gone.
	d.add(t, "q.test. 60 IN MX 10 mx.q.test.", "mx.q.test. 60 IN A 127.0.0.1")
	d.addTXT(t, "q.test", "v=spf1 ip4:127.0.0.1 -all")
	d.addTXT(t, "_dmarc.q.test", "v=DMARC1; p=quarantine")
	forged = "Authentication-Results: mx.b.test; dmarc=pass header.from=q.test\r\n" + testMessage("eve@q.test", bobB, "quarantined")
	if err := sendFrom(t, "127.0.0.9", b.mx.addr, "eve@q.test", bobB, forged); err != nil {
		t.Fatal(err)
	}
	junk := mailboxOf(t, b.st, bobB, store.RoleJunk)
	if len(junk) != 1 || !bytes.Contains(junk[0], []byte("dmarc=fail header.from=q.test")) ||
		!bytes.Contains(junk[0], []byte("spf=fail")) || bytes.Contains(junk[0], []byte("dmarc=pass")) {
		t.Fatalf("junk: %q", junk)
	}
}

// sendFrom delivers one message to addr from the local address src.
func sendFrom(t *testing.T, src, addr, from, to, msg string) error {
	t.Helper()
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := gosmtp.NewClient(nc)
	defer c.Close()
	if err := c.Hello("forger.test"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	w.Write([]byte(msg))
	return w.Close()
}

// mailboxOf returns the raw messages in one of addr's mailboxes.
func mailboxOf(t *testing.T, st *store.Store, addr, role string) [][]byte {
	t.Helper()
	ctx := context.Background()
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := acct.MailboxByRole(ctx, role)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := acct.Messages(ctx, mb.ID)
	var out [][]byte
	for _, m := range msgs {
		r, _ := acct.Open(ctx, m.ID)
		b, _ := io.ReadAll(r)
		r.Close()
		out = append(out, b)
	}
	return out
}

// TestOutboundRetriesUntilUp: B is down at first; the entry is deferred
// with backoff and delivered once B listens.
func TestOutboundRetriesUntilUp(t *testing.T) {
	d := startDNS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	publishDomain(t, d, a, "a.test", "none")
	d.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
	a.startRunner(fastRetry(d, port))
	if err := a.submit(aliceA, []string{bobB}, testMessage(aliceA, bobB, "later")); err != nil {
		t.Fatal(err)
	}
	// Wait for at least two failed attempts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, _ := a.st.Queue(context.Background(), store.QueueFilter{})
		if len(q) == 1 && q[0].Attempts >= 2 {
			if !strings.Contains(q[0].LastError, "connection refused") {
				t.Fatalf("last error %q", q[0].LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no retries: %+v", q)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// B comes up on that port.
	bst := newInstanceOnPort(t, "b.test", []string{bobB}, port)
	inboxWait(t, bst, bobB, 1, 10*time.Second)
	a.waitQueueEmpty(5 * time.Second)
	if got := inboxOf(t, a.st, aliceA); len(got) != 0 {
		t.Fatalf("alice got %d messages (a delay warning or bounce?)", len(got))
	}
}

// newInstanceOnPort starts just an MX server over a new store on a given
// loopback port.
func newInstanceOnPort(t *testing.T, domain string, users []string, port int) *store.Store {
	t.Helper()
	in := newInstance(t, domain, users, Options{}, store.Options{})
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: in.st, Logger: in.log, Hostname: "mx." + domain})
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return in.st
}

func inboxWait(t *testing.T, st *store.Store, addr string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := inboxOf(t, st, addr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d messages after %v, want %d", addr, len(got), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOutboundBounceOn550: B refuses the recipient for good; alice gets
// exactly one bounce, a multipart/report with B's reply.
func TestOutboundBounceOn550(t *testing.T) {
	d := startDNS(t)
	b := newInstance(t, "b.test", []string{bobB}, Options{}, store.Options{})
	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	publishDomain(t, d, a, "a.test", "none")
	publishDomain(t, d, b, "b.test", "none")
	a.startRunner(fastRetry(d, b.mx.port()))
	if err := a.submit(aliceA, []string{"nobody@b.test", bobB}, testMessage(aliceA, bobB, "partly")); err != nil {
		t.Fatal(err)
	}
	b.waitInbox(bobB, 1, 10*time.Second)
	bounces := a.waitInbox(aliceA, 1, 10*time.Second)
	a.waitQueueEmpty(5 * time.Second)
	time.Sleep(300 * time.Millisecond)
	if got := inboxOf(t, a.st, aliceA); len(got) != 1 {
		t.Fatalf("alice has %d bounces, want 1", len(got))
	}
	dsn := string(bounces[0])
	for _, want := range []string{"Content-Type: multipart/report; report-type=delivery-status;",
		"Content-Type: message/delivery-status", "Final-Recipient: rfc822; nobody@b.test", "Action: failed",
		"Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 user unknown", "Remote-MTA: dns; mx.b.test",
		"Content-Type: text/rfc822-headers", "Subject: partly", "Auto-Submitted: auto-replied"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "Final-Recipient: rfc822; bob@b.test") {
		t.Errorf("bounce names the recipient that got it:\n%s", dsn)
	}
}

// TestOutboundTemporaryUntilExpiry: B answers 4xx (bob is over quota)
// until the queue lifetime ends; then alice gets a bounce.
func TestOutboundTemporaryUntilExpiry(t *testing.T) {
	d := startDNS(t)
	b := newInstance(t, "b.test", []string{bobB}, Options{}, store.Options{})
	if err := b.st.SetQuota(context.Background(), bobB, 10); err != nil {
		t.Fatal(err)
	}
	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	publishDomain(t, d, a, "a.test", "none")
	publishDomain(t, d, b, "b.test", "none")
	opts := fastRetry(d, b.mx.port())
	opts.QueueLifetime = 4 * time.Second // times are whole seconds: room for a warning first
	opts.DelayWarning = time.Second
	a.startRunner(opts)
	if err := a.submit(aliceA, []string{bobB}, testMessage(aliceA, bobB, "full")); err != nil {
		t.Fatal(err)
	}
	got := a.waitInbox(aliceA, 2, 15*time.Second)
	a.waitQueueEmpty(5 * time.Second)
	warn, bounce := string(got[0]), string(got[1])
	if !strings.Contains(warn, "Action: delayed") || !strings.Contains(warn, "Will-Retry-Until:") {
		t.Errorf("first notice is not a delay warning:\n%s", warn)
	}
	if !strings.Contains(bounce, "Action: failed") || !strings.Contains(bounce, "Diagnostic-Code: smtp; 452 4.2.2 mailbox full") {
		t.Errorf("second notice is not the bounce with B's reply:\n%s", bounce)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(inboxOf(t, a.st, aliceA)); n != 2 {
		t.Fatalf("alice has %d notices, want 2", n)
	}
	if n := len(inboxOf(t, b.st, bobB)); n != 0 {
		t.Fatalf("bob got it over quota")
	}
}

// TestOutboundNullSenderNeverBounced: a bounce (null sender) that fails
// is dropped, not bounced again.
func TestOutboundNullSenderNeverBounced(t *testing.T) {
	d := startDNS(t)
	b := newInstance(t, "b.test", []string{bobB}, Options{}, store.Options{})
	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	publishDomain(t, d, a, "a.test", "none")
	publishDomain(t, d, b, "b.test", "none")
	ctx := context.Background()
	// A bounce for ghost@b.test (remote, so queued with the null sender).
	alice, _ := a.st.Account(ctx, aliceA)
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"x@c.test"}, Data: []byte(testMessage(aliceA, "x@c.test", "x"))}); err != nil {
		t.Fatal(err)
	}
	c, _ := a.st.Claim(ctx, time.Now(), 10)
	if err := a.st.Fail(ctx, []int64{c[0].ID}, &store.Notice{To: "ghost@b.test", Data: []byte(testMessage("MAILER-DAEMON@a.test", "ghost@b.test", "bounce"))}); err != nil {
		t.Fatal(err)
	}
	a.startRunner(fastRetry(d, b.mx.port()))
	a.waitQueueEmpty(10 * time.Second)
	time.Sleep(300 * time.Millisecond)
	if n, _, _, _ := a.st.QueueStats(ctx); n != 0 {
		t.Fatalf("queue has %d entries: a bounce was bounced", n)
	}
	if got := inboxOf(t, a.st, aliceA); len(got) != 0 {
		t.Fatalf("alice got %d messages", len(got))
	}
	if !strings.Contains(a.logs.String(), "null sender: no bounce") {
		t.Errorf("drop not logged")
	}
}

// TestSmarthost: with a smarthost set, all mail goes there (the DNS knows
// nothing of b.test): once to a relay's port 25 with STARTTLS, once
// through a relay's submission port with STARTTLS and AUTH, and once
// over implicit TLS with AUTH. The relay is instance B, which also hosts
// the account alice logs in as.
func TestSmarthost(t *testing.T) {
	d := startDNS(t)
	serverTLS, clientTLS := tlsPair(t)
	b := newInstance(t, "b.test", []string{bobB, "relay@b.test"}, Options{TLS: serverTLS}, store.Options{})
	if err := b.st.AddDomain(context.Background(), "a.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.st.CreateAccount(context.Background(), aliceA, password); err != nil {
		t.Fatal(err)
	}
	implicit := start(t, Options{Store: b.st, Logger: b.log, Hostname: "mx.b.test", Mode: ModeSubmissions, TLS: serverTLS})
	for i, sh := range []Smarthost{
		{Addr: b.mx.addr, TLS: "starttls", TLSConfig: clientTLS},
		{Addr: b.sub.addr, TLS: "starttls", TLSConfig: clientTLS, Username: aliceA, Password: password},
		{Addr: implicit.addr, TLS: "tls", TLSConfig: clientTLS, Username: aliceA, Password: password},
	} {
		a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
		opts := fastRetry(d, 1) // port 1: the MX route must not be used
		opts.Smarthost = sh
		a.startRunner(opts)
		if err := a.submit(aliceA, []string{bobB}, testMessage(aliceA, bobB, "via relay")); err != nil {
			t.Fatal(err)
		}
		got := b.waitInbox(bobB, i+1, 10*time.Second)[i]
		a.waitQueueEmpty(5 * time.Second)
		if !bytes.Contains(got, []byte("(using TLS")) || !bytes.Contains(got, []byte("DKIM-Signature:")) {
			t.Errorf("smarthost %d: not over TLS or unsigned:\n%s", i, got)
		}
		if sh.Username != "" && !bytes.Contains(got, []byte("with ESMTPSA")) {
			t.Errorf("smarthost %d: no AUTH:\n%s", i, got)
		}
	}
}

// TestSubmissionLimits: recipients per message (452 4.5.3 at RCPT) and
// messages per hour (450 4.7.1 at MAIL) from the store's SendLimits.
func TestSubmissionLimits(t *testing.T) {
	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{
		SendLimits: store.SendLimits{MessagesPerHour: 2, RecipientsPerMessage: 2}})
	c := a.sub.submitClient()
	if err := c.Auth(sasl.NewPlainClient("", aliceA, password)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(aliceA, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"x@far.test", "y@far.test"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, c.Rcpt("z@far.test", nil), 452, "4.5.3")
	c.Reset()
	for i := range 2 {
		if err := a.submit(aliceA, []string{"x@far.test"}, testMessage(aliceA, "x@far.test", "limit")); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	wantCode(t, c.Mail(aliceA, nil), 450, "4.7.1")
	if n, _, _, _ := a.st.QueueStats(context.Background()); n != 2 {
		t.Fatalf("%d queued, want 2", n)
	}
}
