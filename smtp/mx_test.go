package smtp

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

// TestRelayTricks: port 25 takes mail for local domains and their aliases
// only, whatever the address looks like. Each case is one RCPT on a fresh
// connection.
func TestRelayTricks(t *testing.T) {
	h := start(t, Options{})
	for _, tc := range []struct {
		name, rcpt, want string
	}{
		{"account", "<bob@example.test>", "250 "},
		{"upper case", "<BOB@EXAMPLE.TEST>", "250 "},
		{"trailing dot", "<bob@example.test.>", "250 "},
		{"two trailing dots", "<bob@example.test..>", "501 5.1.3 "},
		{"plus tag", "<bob+news@example.test>", "250 "},
		{"alias", "<postmaster@example.test>", "250 "},
		{"catch-all", "<whoever@catchall.test>", "250 "},
		{"quoted plain local part", `<"bob"@example.test>`, "250 "},
		{"unknown user", "<nobody@example.test>", "550 5.1.1 "},
		{"quoted local part with space", `<"b o b"@example.test>`, "550 5.1.1 "},
		{"remote domain", "<x@remote.test>", "554 5.7.1 "},
		{"remote domain trailing dot", "<x@remote.test.>", "554 5.7.1 "},
		{"quoted local part with space, remote", `<"b o b"@remote.test>`, "554 5.7.1 "},
		{"local domain as subdomain", "<x@example.test.remote.test>", "554 5.7.1 "},
		{"percent hack", "<x%remote.test@example.test>", "554 5.7.1 "},
		{"percent hack at catch-all", "<x%remote.test@catchall.test>", "554 5.7.1 "},
		{"percent hack to local user", "<bob%example.test@example.test>", "554 5.7.1 "},
		{"bang path", "<remote.test!x@example.test>", "554 5.7.1 "},
		{"bang path at catch-all", "<remote.test!x@catchall.test>", "554 5.7.1 "},
		{"quoted @ in local part", `<"x@remote.test"@example.test>`, "554 5.7.1 "},
		{"quoted @ at catch-all", `<"x@remote.test"@catchall.test>`, "554 5.7.1 "},
		{"escaped @ in quoted local part", `<"x\@remote.test"@example.test>`, "554 5.7.1 "},
		{"two @", "<x@remote.test@example.test>", "554 5.7.1 "},
		{"two @, local last", "<bob@example.test@remote.test>", "554 5.7.1 "},
		{"source route to remote", "<@example.test:x@remote.test>", "554 5.7.1 "},
		{"source route via remote to local", "<@remote.test,@other.test:bob@example.test>", "250 "},
		{"IPv4 literal", "<bob@[127.0.0.1]>", "554 5.7.1 "},
		{"IPv6 literal", "<bob@[IPv6:::1]>", "554 5.7.1 "},
		{"Cyrillic lookalike domain", "<bob@ex\u0430mple.test>", "553 5.6.7 "},
		{"Cyrillic lookalike user", "<b\u043eb@example.test>", "553 5.6.7 "},
		{"punycode lookalike domain", "<bob@xn--exmple-4nf.test>", "554 5.7.1 "},
		{"percent in domain", "<bob@remote.test%example.test>", "501 5.1.3 "},
		{"no domain", "<bob>", "501 "},
		{"empty", "<>", "501 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := h.raw()
			x.send("EHLO client.test\r\n")
			x.expect("^250 ")
			x.send("MAIL FROM:<x@remote.test>\r\n")
			x.expect("^250 ")
			x.send("RCPT TO:" + tc.rcpt + "\r\n")
			if got := x.reply(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("RCPT TO:%s: got %q, want %q", tc.rcpt, got, tc.want)
			}
			x.send("QUIT\r\n")
			x.expect("^221 ")
		})
	}
	// Nothing was delivered anywhere by the refused ones, and nothing at
	// all without DATA.
	for _, a := range []string{alice, bob, carol} {
		if n := len(h.inbox(a)); n != 0 {
			t.Errorf("%s has %d messages", a, n)
		}
	}
}

// TestAtomicMultiRecipient: one DATA for accounts and an alias expanding
// to them: each account gets exactly one copy, with the same bytes, and no
// "for" clause names a recipient to the others.
func TestAtomicMultiRecipient(t *testing.T) {
	h := start(t, Options{})
	msg := "Subject: all\r\n\r\nto everyone\r\n"
	if err := h.send("x@remote.test", []string{alice, bob, "team@example.test", "somebody@catchall.test"}, msg); err != nil {
		t.Fatal(err)
	}
	var first []byte
	for _, a := range []string{alice, bob, carol} {
		got := h.inbox(a)
		if len(got) != 1 {
			t.Fatalf("%s has %d messages, want 1", a, len(got))
		}
		if first == nil {
			first = got[0]
		} else if !bytes.Equal(first, got[0]) {
			t.Errorf("%s got different bytes:\n%s\nvs\n%s", a, got[0], first)
		}
		if bytes.Contains(got[0], []byte("\tfor <")) {
			t.Errorf("for clause with several recipients:\n%s", got[0])
		}
		if !bytes.HasSuffix(got[0], []byte(msg)) {
			t.Errorf("body changed:\n%q", got[0])
		}
	}
}

func TestNullSender(t *testing.T) {
	h := start(t, Options{})
	if err := h.send("", []string{bob}, "Subject: bounce\r\n\r\nreport\r\n"); err != nil {
		t.Fatal(err)
	}
	got := h.inbox(bob)
	if len(got) != 1 || !bytes.HasPrefix(got[0], []byte("Return-Path: <>\r\nReceived: ")) {
		t.Fatalf("got %q", got)
	}
}

// TestReturnPathQuoted: a sender whose local part needs quotes gets them
// back in Return-Path.
func TestReturnPathQuoted(t *testing.T) {
	h := start(t, Options{})
	x := h.raw()
	x.send("EHLO client.test\r\nMAIL FROM:<\"john doe\"@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	x.expect("^250 ")
	x.expect("^250 ")
	x.expect("^250 ")
	x.expect("^354 ")
	x.send("Subject: q\r\n\r\nx\r\n.\r\n")
	x.expect(`^250 2\.0\.0 `)
	got := h.inbox(bob)
	if len(got) != 1 || !bytes.HasPrefix(got[0], []byte("Return-Path: <\"john doe\"@remote.test>\r\n")) {
		t.Fatalf("got %q", got)
	}
}

func TestSequence(t *testing.T) {
	h := start(t, Options{})
	x := h.raw()
	// go-smtp answers MAIL before EHLO itself, with 502 5.5.1 (RFC 5321
	// wants 503; the session does not exist yet, so we cannot change it).
	x.send("MAIL FROM:<x@remote.test>\r\n")
	x.expect(`^50[23] 5\.5\.1 `)
	x.send("HELO client.test\r\n")
	x.expect(`^250 `)
	x.send("RCPT TO:<bob@example.test>\r\n")
	x.expect(`^50[23] 5\.5\.1 `)
	x.send("MAIL FROM:<x@remote.test>\r\n")
	x.expect(`^250 `)
	x.send("MAIL FROM:<y@remote.test>\r\n")
	x.expect(`^503 5\.5\.1 sender already given$`)
	x.send("RSET\r\n")
	x.expect(`^250 `)
	x.send("MAIL FROM:<y@remote.test>\r\n")
	x.expect(`^250 `)
	x.send("AUTH PLAIN AGJvYgB4\r\n")
	x.expect(`^503 5\.5\.1 authentication not enabled$`)
	x.send("MAIL FROM:<r\u00e9my@remote.test>\r\n")
	x.expect(`^50[23] 5\.5\.1 `) // transaction still active
	x.send("RSET\r\nMAIL FROM:<r\u00e9my@remote.test>\r\n")
	x.expect(`^250 `)
	x.expect(`^553 5\.6\.7 `)
	x.send("QUIT\r\n")
	x.expect(`^221 `)
}

// TestEHLO: the capabilities the MX advertises.
func TestEHLO(t *testing.T) {
	h := start(t, Options{MaxMessageBytes: 12345})
	c := h.client()
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS", "CHUNKING"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}
	if ok, p := c.Extension("SIZE"); !ok || p != "12345" {
		t.Errorf("SIZE %q", p)
	}
	if ok, p := c.Extension("AUTH"); ok {
		t.Errorf("MX advertises AUTH %s", p)
	}
}

func TestSizeLimit(t *testing.T) {
	const max = 10000
	h := start(t, Options{MaxMessageBytes: max})
	c := h.client()
	// SIZE= over the limit: 552 5.3.4 at MAIL.
	wantCode(t, c.Mail("x@remote.test", &gosmtp.MailOptions{Size: max + 1}), 552, "5.3.4")
	// DATA over the limit: 552 5.3.4 after the data, nothing stored, and
	// the connection goes on.
	if err := c.Mail("x@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: big\r\n\r\n%s\r\n", strings.Repeat("0123456789abcdef\r\n", max/16))
	wantCode(t, w.Close(), 552, "5.3.4")
	if n := len(h.inbox(bob)); n != 0 {
		t.Fatalf("bob has %d messages", n)
	}
	// A message one byte under the limit fits (go-smtp's DATA reader
	// refuses one of exactly the limit).
	if err := c.Mail("x@remote.test", &gosmtp.MailOptions{Size: max}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	w, err = c.Data()
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: fits\r\n\r\n" + strings.Repeat("x", max-1-len("Subject: fits\r\n\r\n")-2) + "\r\n"
	w.Write([]byte(body))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := h.inbox(bob); len(got) != 1 || !bytes.HasSuffix(got[0], []byte(body)) {
		t.Fatalf("message at the limit not delivered intact")
	}
}

func TestMaxRecipients(t *testing.T) {
	h := start(t, Options{MaxRecipients: 3})
	c := h.client()
	if err := c.Mail("x@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{alice, bob, "team@example.test"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, c.Rcpt(carol, nil), 452, "4.5.3")
	if ok, p := c.Extension("LIMITS"); !ok || p != "RCPTMAX=3" {
		t.Errorf("LIMITS %q", p)
	}
}

func TestQuota(t *testing.T) {
	h := start(t, Options{})
	ctx := context.Background()
	if err := h.st.SetQuota(ctx, bob, 2000); err != nil {
		t.Fatal(err)
	}
	c := h.client()
	// RCPT with SIZE= that does not fit: 452 4.2.2 for bob, alice is fine.
	if err := c.Mail("x@remote.test", &gosmtp.MailOptions{Size: 5000}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Rcpt(bob, nil), 452, "4.2.2")
	wantCode(t, c.Rcpt("team@example.test", nil), 452, "4.2.2") // alias reaching bob
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	// Without SIZE= the RCPT passes and DATA is refused 552 5.2.2 for
	// everyone: delivery is all or nothing.
	if err := c.Mail("x@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{alice, bob} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := c.Data()
	fmt.Fprintf(w, "Subject: big\r\n\r\n%s\r\n", strings.Repeat("x", 4000))
	wantCode(t, w.Close(), 552, "5.2.2")
	if n := len(h.inbox(alice)); n != 0 {
		t.Fatalf("alice got %d messages from a refused transaction", n)
	}
}

// TestTemporaryFailure: a store failure is 451 4.3.0 with the connection
// id as reference, never a 5xx, and the log line carries the same id.
func TestTemporaryFailure(t *testing.T) {
	h := start(t, Options{})
	c := h.client()
	if err := c.Mail("x@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatal(err)
	}
	h.st.Close()
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nx\r\n"))
	err = w.Close()
	wantCode(t, err, 451, "4.3.0")
	m := regexp.MustCompile(`^try again later \(ref ([0-9a-f]{8})\)$`).FindStringSubmatch(err.(*gosmtp.SMTPError).Message)
	if m == nil {
		t.Fatalf("message %q", err.(*gosmtp.SMTPError).Message)
	}
	if !regexp.MustCompile(`level=ERROR msg="store failed".* conn=` + m[1]).MatchString(h.logs.String()) {
		t.Errorf("no error logged with conn=%s:\n%s", m[1], h.logs.String())
	}
	// RCPT now fails the same way.
	if err := c.Mail("x@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.Rcpt(alice, nil), 451, "4.3.0")
}

// TestBareLineEnds: bare LF and bare CR in the body are stored as CRLF
// (the store canonicalises them), inside one message.
func TestBareLineEnds(t *testing.T) {
	h := start(t, Options{})
	x := h.raw()
	x.send("EHLO client.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	for range 3 {
		x.expect("^250 ")
	}
	x.expect("^354 ")
	x.send("Subject: lf\n\nline one\nline two\rline three\r\n.\r\n")
	x.expect(`^250 2\.0\.0 `)
	got := h.inbox(bob)
	if len(got) != 1 || !bytes.HasSuffix(got[0], []byte("Subject: lf\r\n\r\nline one\r\nline two\r\nline three\r\n")) {
		t.Fatalf("got %q", got)
	}
}

// TestBDAT: CHUNKING (advertised by go-smtp) delivers the bytes as sent.
func TestBDAT(t *testing.T) {
	h := start(t, Options{})
	x := h.raw()
	x.send("EHLO client.test\r\n")
	x.expect("^250 ")
	part1, part2 := "Subject: chunks\r\n\r\n", ".dot line\r\nend\r\n"
	x.send(fmt.Sprintf("MAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\nBDAT %d\r\n%sBDAT %d LAST\r\n%s", len(part1), part1, len(part2), part2))
	x.expect("^250 ")
	x.expect("^250 ")
	x.expect("^250 ")
	x.expect(`^250 2\.0\.0 OK delivered as `)
	got := h.inbox(bob)
	if len(got) != 1 || !bytes.HasSuffix(got[0], []byte(part1+part2)) {
		t.Fatalf("got %q", got)
	}
}
