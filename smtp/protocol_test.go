package smtp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// startData opens a raw connection and gets as far as the 354 for one
// recipient.
func startData(h *harness, rcpt string) *raw {
	h.t.Helper()
	x := h.raw()
	x.send("EHLO client.test\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<" + rcpt + ">\r\nDATA\r\n")
	for range 3 {
		x.expect("^250 ")
	}
	x.expect("^354 ")
	return x
}

// TestSmuggling: only <CRLF>.<CRLF> ends the data. A message ending in a
// bare-LF or bare-CR dot followed by a second transaction is one message
// with that text in its body, never two deliveries.
func TestSmuggling(t *testing.T) {
	h := start(t, Options{})
	for i, end := range []string{"\n.\n", "\n.\r\n", "\r.\n", "\r.\r\n", "\r\n.\n", "\r\n.\r", "\r\r\n.\r\n", "\n..\n", "\r\n\x00.\r\n"} {
		t.Run(fmt.Sprintf("%q", end), func(t *testing.T) {
			x := startData(h, bob)
			x.send("Subject: s" + fmt.Sprint(i) + "\r\n\r\nbody" + end +
				"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
			x.expect(`^250 2\.0\.0 OK delivered as `)
			x.send("QUIT\r\n")
			x.expect(`^221 `) // not a second 250
			got := h.inbox(bob)
			if len(got) != i+1 {
				t.Fatalf("bob has %d messages, want %d", len(got), i+1)
			}
			last := string(got[i])
			if !strings.Contains(last, "MAIL FROM:<evil@remote.test>\r\n") || !strings.Contains(last, "\r\nsmuggled\r\n") {
				t.Fatalf("smuggled text is not in the body:\n%q", last)
			}
			if n := len(h.inbox(alice)); n != 0 {
				t.Fatalf("the smuggled message reached alice (%d messages)", n)
			}
		})
	}
}

// TestSTARTTLSPipelining: commands sent after STARTTLS in the same packet
// are discarded, never run on the TLS side (CVE-2011-0411).
func TestSTARTTLSPipelining(t *testing.T) {
	h := start(t, Options{})
	x := h.raw()
	x.send("EHLO client.test\r\n")
	x.expect("^250 ")
	x.send("STARTTLS\r\nNOOP\r\n")
	x.expect(`^220 `)
	time.Sleep(50 * time.Millisecond)
	if n := x.r.Buffered(); n > 0 {
		b, _ := x.r.Peek(n)
		t.Fatalf("plaintext after 220: %q", b)
	}
	tc := tls.Client(x.c, h.clientTLS)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	x.c, x.r = tc, newReader(tc)
	x.send("EHLO client.test\r\n")
	if l := x.line(); l != "250-Hello client.test" {
		t.Fatalf("first reply over TLS is %q, want the EHLO reply", l)
	}
	x.reply()
	x.send("MAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	x.expect("^250 ")
	x.expect("^250 ")
	x.expect("^354 ")
	x.send("Subject: tls\r\n\r\nsecret\r\n.\r\n")
	x.expect(`^250 2\.0\.0 `)
	x.send("QUIT\r\n")
	x.expect(`^221 `)
	got := h.inbox(bob)
	if len(got) != 1 || !bytes.Contains(got[0], []byte(" with ESMTPS id ")) || !bytes.Contains(got[0], []byte("\t(using TLS")) {
		t.Fatalf("got %q", got)
	}
}

// TestLongLines: go-smtp's default limit (2000) is raised, so a long body
// line is delivered intact; past MaxLineBytes the reply is 552 5.6.0 and
// the connection closes (the end of the data cannot be found any more).
func TestLongLines(t *testing.T) {
	h := start(t, Options{MaxLineBytes: 8000})
	long := "Subject: long\r\n\r\n" + strings.Repeat("a", 5000) + "\r\nend\r\n"
	if err := h.send("x@remote.test", []string{bob}, long); err != nil {
		t.Fatal(err)
	}
	if got := h.inbox(bob); len(got) != 1 || !bytes.HasSuffix(got[0], []byte(long)) {
		t.Fatalf("long line not delivered intact")
	}

	x := startData(h, bob)
	x.send("Subject: too long\r\n\r\n" + strings.Repeat("b", 9000) + "\r\n.\r\n")
	x.expect(`^552 5\.6\.0 line too long$`)
	if !x.closed() {
		t.Fatal("connection not closed")
	}
	if n := len(h.inbox(bob)); n != 1 {
		t.Fatalf("bob has %d messages", n)
	}

	x = h.raw()
	x.send("EHLO " + strings.Repeat("c", 9000) + "\r\n")
	x.expect(`^500 5\.4\.0 `)
	if !x.closed() {
		t.Fatal("connection not closed after a long command")
	}
}

// TestSlowData: a 20 MB message sent in chunks over much longer than
// ReadTimeout succeeds, because the data deadline follows the bytes.
func TestSlowData(t *testing.T) {
	if testing.Short() {
		t.Skip("20 MB upload")
	}
	// DataTimeout is generous (a loaded machine running -race must not
	// fail this); the upload still lasts several ReadTimeouts.
	const readTimeout = time.Second
	h := start(t, Options{ReadTimeout: readTimeout, DataTimeout: 10 * time.Second})
	var msg bytes.Buffer
	msg.WriteString("Subject: big and slow\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "abcd\r\n"
	for msg.Len() < 20<<20 {
		msg.WriteString(line)
	}
	x := startData(h, bob)
	began := time.Now()
	data := msg.Bytes()
	const chunks = 20
	for i := 0; i < chunks; i++ {
		x.send(string(data[i*len(data)/chunks : (i+1)*len(data)/chunks]))
		time.Sleep(readTimeout / 4)
	}
	x.send(".\r\n")
	x.expect(`^250 2\.0\.0 `)
	if d := time.Since(began); d < 4*readTimeout {
		t.Fatalf("upload took only %v", d)
	}
	got := h.inbox(bob)
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	if !bytes.HasSuffix(got[0], data) || sha256.Sum256(got[0][len(got[0])-len(data):]) != sha256.Sum256(data) {
		t.Fatal("20 MB message not delivered intact")
	}
}

// TestDataTimeout: a pause longer than DataTimeout inside DATA ends the
// connection with 421 and stores nothing.
func TestDataTimeout(t *testing.T) {
	h := start(t, Options{DataTimeout: 200 * time.Millisecond})
	x := startData(h, bob)
	x.send("Subject: stalled\r\n\r\nhalf")
	x.expect(`^421 4\.4\.2 `)
	if !x.closed() {
		t.Fatal("connection not closed")
	}
	if n := len(h.inbox(bob)); n != 0 {
		t.Fatalf("bob has %d messages", n)
	}
}

// TestReadTimeout: an idle client is told 421 and disconnected.
func TestReadTimeout(t *testing.T) {
	h := start(t, Options{ReadTimeout: 200 * time.Millisecond})
	x := h.raw()
	began := time.Now()
	x.expect(`^421 4\.4\.2 `)
	if d := time.Since(began); d < 150*time.Millisecond {
		t.Fatalf("timed out after %v", d)
	}
	if !x.closed() {
		t.Fatal("connection not closed")
	}
}

// TestMaxErrors: refusals past MaxErrors end the connection with 421.
func TestMaxErrors(t *testing.T) {
	h := start(t, Options{MaxErrors: 3})
	x := h.raw()
	x.send("EHLO client.test\r\nMAIL FROM:<x@remote.test>\r\n")
	x.expect("^250 ")
	x.expect("^250 ")
	for i := 0; i < 3; i++ {
		x.send(fmt.Sprintf("RCPT TO:<nobody%d@example.test>\r\n", i))
		x.expect(`^550 5\.1\.1 `)
	}
	x.send("RCPT TO:<nobody@example.test>\r\n")
	x.expect(`^421 4\.7\.0 too many errors$`)
	if !x.closed() {
		t.Fatal("connection not closed")
	}
}

// TestMaxCommands: the per-connection command budget.
func TestMaxCommands(t *testing.T) {
	h := start(t, Options{MaxCommands: 4})
	x := h.raw()
	x.send("EHLO client.test\r\nMAIL FROM:<x@remote.test>\r\n")
	x.expect("^250 ")
	x.expect("^250 ")
	// The budget runs out inside a transaction: the message under way is
	// still taken ...
	for i := 0; i < 3; i++ {
		x.send("RCPT TO:<bob@example.test>\r\n")
		x.expect(`^250 `)
	}
	x.send("DATA\r\n")
	x.expect(`^354 `)
	x.send("Subject: last one\r\n\r\nbody\r\n.\r\n")
	x.expect(`^250 `)
	// ... and the next transaction is refused and the connection closed.
	x.send("MAIL FROM:<x@remote.test>\r\n")
	x.expect(`^421 4\.7\.0 too many commands$`)
	if !x.closed() {
		t.Fatal("connection not closed")
	}
	if n := len(h.inbox("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages, want the one whose transaction crossed the budget", n)
	}
}

// TestMaxConns: past MaxConns a client gets 421 at once; a slot frees
// when a connection ends.
func TestMaxConns(t *testing.T) {
	h := start(t, Options{MaxConns: 2})
	a, _ := h.raw(), h.raw()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "421 4.7.0 ") {
		t.Fatalf("third connection got %q", b)
	}
	a.send("QUIT\r\n")
	a.expect("^221 ")
	a.closed()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, _ := newReader(c).ReadString('\n')
		c.Close()
		if strings.HasPrefix(l, "220 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed: %q", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMaxConnsPerIP: the per-address count, with loopback exempt.
func TestMaxConnsPerIP(t *testing.T) {
	srv := New(Options{MaxConnsPerIP: 2})
	remote := netip.MustParseAddr("192.0.2.7")
	for i := 0; i < 2; i++ {
		if !srv.admit(remote) {
			t.Fatalf("connection %d refused", i+1)
		}
	}
	if srv.admit(remote) {
		t.Fatal("third connection from one address admitted")
	}
	if !srv.admit(netip.MustParseAddr("192.0.2.8")) {
		t.Fatal("other address refused")
	}
	// IPv6 clients are counted per /64.
	if !srv.admit(netip.MustParseAddr("2001:db8::1")) || !srv.admit(netip.MustParseAddr("2001:db8::2")) {
		t.Fatal("IPv6 connection refused")
	}
	if srv.admit(netip.MustParseAddr("2001:db8::3")) {
		t.Fatal("third connection from one /64 admitted")
	}
	for i := 0; i < 5; i++ {
		if !srv.admit(netip.MustParseAddr("127.0.0.1")) {
			t.Fatal("loopback limited")
		}
	}
}

// TestShutdown: idle sessions end at once with 421; a message whose data
// is streaming is still received and answered 250; Serve returns nil.
func TestShutdown(t *testing.T) {
	h := start(t, Options{})
	idle := h.raw()
	idle.send("EHLO client.test\r\n")
	idle.expect("^250 ")
	busy := startData(h, bob)
	busy.send("Subject: in flight\r\n\r\nfirst half\r\n")
	time.Sleep(50 * time.Millisecond)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	idle.expect(`^421 `)
	if !idle.closed() {
		t.Fatal("idle connection not closed")
	}
	time.Sleep(100 * time.Millisecond)
	busy.send("second half\r\n.\r\n")
	busy.expect(`^250 2\.0\.0 `)
	busy.expect(`^421 `)
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if got := h.inbox(bob); len(got) != 1 || !bytes.HasSuffix(got[0], []byte("first half\r\nsecond half\r\n")) {
		t.Fatalf("in-flight message lost: %q", got)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

// TestShutdownForced: when Shutdown's context ends first, the remaining
// connections are closed and the context's error returned.
func TestShutdownForced(t *testing.T) {
	h := start(t, Options{})
	x := startData(h, bob)
	x.send("Subject: never finished\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("shutdown: %v", err)
	}
	if !x.closed() {
		t.Fatal("connection left open")
	}
	if n := len(h.inbox(bob)); n != 0 {
		t.Fatalf("bob has %d messages", n)
	}
}
