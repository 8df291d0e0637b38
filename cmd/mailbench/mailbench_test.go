package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/mail"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func TestMessageSizeAndShape(t *testing.T) {
	spec := messageSpec{From: "a@example.test", To: []string{"b@example.test", "c@example.test"}, RunID: "0123456789ab"}
	c := newCorpus(7)
	minSize := newGenerator(spec, c).minSize(99999)
	sizes := []int{minSize, 4096, 100 * 1024, 1 << 20}
	for s := minSize + 1; s < minSize+300; s++ {
		sizes = append(sizes, s)
	}
	date := time.Date(2026, 11, 22, 3, 4, 5, 0, time.UTC)
	seenIDs := map[string]bool{}
	for i, size := range sizes {
		spec.Size = size
		g := newGenerator(spec, c)
		msg, err := g.message(i*37, date)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if len(msg) != size {
			t.Fatalf("size %d: got %d bytes", size, len(msg))
		}
		checkLines(t, size, msg)
		m, err := mail.ReadMessage(bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("size %d: not an RFC 5322 message: %v", size, err)
		}
		id := m.Header.Get("Message-Id")
		if seenIDs[id] || !strings.HasSuffix(id, "@"+messageIDDomain+">") {
			t.Fatalf("size %d: Message-ID %q repeated or malformed", size, id)
		}
		seenIDs[id] = true
		token := fmt.Sprintf("%s-%d", spec.RunID, i*37)
		if subj := m.Header.Get("Subject"); !strings.HasSuffix(subj, " "+token) {
			t.Fatalf("size %d: subject %q lacks token %s", size, subj, token)
		}
		to, err := m.Header.AddressList("To")
		if err != nil || len(to) != 2 {
			t.Fatalf("size %d: To header: %v %v", size, to, err)
		}
		if _, err := m.Header.Date(); err != nil {
			t.Fatalf("size %d: Date header: %v", size, err)
		}
	}

	spec.Size = minSize - 1
	if _, err := newGenerator(spec, c).message(99999, date); err == nil {
		t.Fatalf("size %d below the minimum %d: want an error", spec.Size, minSize)
	}
}

// checkLines asserts CRLF line ends, no bare CR or LF, lines of at most 78
// characters, printable ASCII, and no trailing white space.
func checkLines(t *testing.T, size int, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Fatalf("size %d: message does not end in CRLF", size)
	}
	lines := bytes.Split(msg[:len(msg)-2], []byte("\r\n"))
	for n, l := range lines {
		if len(l) > 78 {
			t.Fatalf("size %d: line %d has %d characters", size, n+1, len(l))
		}
		for _, b := range l {
			if b == '\r' || b == '\n' || b < ' ' || b > '~' {
				t.Fatalf("size %d: line %d has byte %#x", size, n+1, b)
			}
		}
		if len(l) > 0 && l[len(l)-1] == ' ' {
			t.Fatalf("size %d: line %d ends in a space", size, n+1)
		}
	}
}

// testMaildrop is the mail both test servers share: the SMTP server appends
// to it, the POP3 server serves a snapshot of it taken at login.
type testMaildrop struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (d *testMaildrop) add(msg []byte) {
	d.mu.Lock()
	d.msgs = append(d.msgs, msg)
	d.mu.Unlock()
}

func (d *testMaildrop) snapshot() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]byte(nil), d.msgs...)
}

// startPOP3 runs a tiny RFC 1939 server on loopback for the password
// "secret". With lieAbout > 0, LIST reports message lieAbout one byte too
// large.
func startPOP3(t *testing.T, drop *testMaildrop, lieAbout int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go servePOP3(conn, drop, lieAbout)
		}
	}()
	return ln.Addr().String()
}

func servePOP3(conn net.Conn, drop *testMaildrop, lieAbout int) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	defer w.Flush()
	var msgs [][]byte
	loggedIn := false
	fmt.Fprint(w, "+OK test server ready\r\n")
	for {
		w.Flush()
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		num, numErr := strconv.Atoi(arg)
		validNum := numErr == nil && num >= 1 && num <= len(msgs)
		switch {
		case verb == "USER":
			fmt.Fprint(w, "+OK\r\n")
		case verb == "PASS" && arg == "secret":
			loggedIn, msgs = true, drop.snapshot()
			fmt.Fprintf(w, "+OK %d messages\r\n", len(msgs))
		case verb == "PASS":
			fmt.Fprint(w, "-ERR [AUTH] invalid login\r\n")
		case verb == "QUIT":
			fmt.Fprint(w, "+OK bye\r\n")
			return
		case !loggedIn:
			fmt.Fprint(w, "-ERR not allowed now\r\n")
		case verb == "STAT":
			total := 0
			for _, m := range msgs {
				total += len(m)
			}
			fmt.Fprintf(w, "+OK %d %d\r\n", len(msgs), total)
		case verb == "LIST" && arg == "":
			fmt.Fprintf(w, "+OK %d messages\r\n", len(msgs))
			for i, m := range msgs {
				size := len(m)
				if i+1 == lieAbout {
					size++
				}
				fmt.Fprintf(w, "%d %d\r\n", i+1, size)
			}
			fmt.Fprint(w, ".\r\n")
		case verb == "RETR" && validNum:
			m := msgs[num-1]
			fmt.Fprintf(w, "+OK %d octets\r\n", len(m))
			for l := range bytes.Lines(m) {
				if l[0] == '.' {
					w.WriteByte('.') // RFC 1939 §3 byte-stuffing
				}
				w.Write(l)
			}
			fmt.Fprint(w, ".\r\n")
		case verb == "RETR":
			fmt.Fprint(w, "-ERR no such message\r\n")
		case verb == "NOOP":
			fmt.Fprint(w, "+OK\r\n")
		default:
			fmt.Fprint(w, "-ERR unknown command\r\n")
		}
	}
}

// trickyMessages are bodies a naive client gets wrong: dot lines, a lone
// dot, a line longer than the client's read buffer that starts with a dot
// and has dots after its buffer boundary, and an empty message body.
func trickyMessages() [][]byte {
	long := "." + strings.Repeat("x", pop3ReadBuffer-1) + ".\r\n" + strings.Repeat("y", 2*pop3ReadBuffer) + "\r\n"
	return [][]byte{
		[]byte("Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nlast line .\r\n"),
		[]byte("Subject: long\r\n\r\n" + long + ".\r\n"),
		[]byte("Subject: empty body\r\n\r\n"),
	}
}

func TestPOP3ClientMultiLine(t *testing.T) {
	drop := &testMaildrop{}
	for _, m := range trickyMessages() {
		drop.add(m)
	}
	addr := startPOP3(t, drop, 0)
	ctx := t.Context()
	o := pop3Options{Addr: addr, Timeout: 5 * time.Second}

	c, err := dialPOP3(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.login("u", "wrong", false); err == nil {
		t.Fatal("wrong password: want an error")
	} else if perr := (*pop3Error)(nil); !errors.As(err, &perr) || perr.Text != "[AUTH] invalid login" {
		t.Fatalf("wrong password: got %v", err)
	}
	if err := c.login("u", "secret", false); err != nil {
		t.Fatal(err)
	}
	n, size, err := c.stat()
	if err != nil || n != 3 {
		t.Fatalf("STAT: %d %d %v", n, size, err)
	}
	sizes, err := c.list(n)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range drop.snapshot() {
		var got bytes.Buffer
		size, err := c.retr(i+1, &got)
		if err != nil {
			t.Fatalf("RETR %d: %v", i+1, err)
		}
		if !bytes.Equal(got.Bytes(), want) || size != int64(len(want)) || sizes[i+1] != size {
			t.Fatalf("RETR %d: got %d bytes (LIST %d), want %d:\n%.200q", i+1, size, sizes[i+1], len(want), got.Bytes())
		}
	}
	if _, err := c.retr(4, io.Discard); err == nil {
		t.Fatal("RETR 4: want -ERR")
	}
	if _, err := c.cmd("NOOP"); err != nil {
		t.Fatalf("session unusable after -ERR: %v", err)
	}
	if err := c.quit(); err != nil {
		t.Fatal(err)
	}
}

var summaryField = regexp.MustCompile(`(\w+)=(\S+)`)

// fields parses a summary line into its key=value pairs.
func fields(t *testing.T, line, cmd string) map[string]string {
	t.Helper()
	if !strings.HasPrefix(line, cmd+" ") || strings.Count(line, "\n") != 1 {
		t.Fatalf("summary is not one %q line: %q", cmd, line)
	}
	out := map[string]string{}
	for _, m := range summaryField.FindAllStringSubmatch(line, -1) {
		out[m[1]] = m[2]
	}
	return out
}

func TestPOP3Bench(t *testing.T) {
	drop := &testMaildrop{}
	for range 20 {
		for _, m := range trickyMessages() {
			drop.add(m)
		}
	}
	var out, errOut bytes.Buffer
	args := []string{"pop3", "-addr", startPOP3(t, drop, 0), "-user", "u", "-pass", "secret", "-label", "test", "-timeout", "30s"}
	if err := run(t.Context(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	f := fields(t, out.String(), "pop3")
	if f["msgs"] != "60" || f["retrieved"] != "60" || f["errors"] != "0" || f["label"] != "test" {
		t.Fatalf("summary: %s", out.String())
	}

	// A server whose LIST octet count is wrong fails the run.
	out.Reset()
	args[2] = startPOP3(t, drop, 2)
	if err := run(t.Context(), args, &out, &errOut); err == nil {
		t.Fatalf("wrong LIST size: want an error; summary %s", out.String())
	}
	if f := fields(t, out.String(), "pop3"); f["errors"] != "1" || f["retrieved"] != "59" {
		t.Fatalf("wrong LIST size: summary %s", out.String())
	}
}

// testBackend is a go-smtp backend that appends every message to a
// maildrop after a short delay (so end-to-end is later than accepted), and
// answers 451 to every rejectEvery'th message.
type testBackend struct {
	drop        *testMaildrop
	rejectEvery int
	mu          sync.Mutex
	seen        int
	badSize     int // messages whose size differed from the SIZE parameter
	needAuth    bool
}

func (b *testBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &testSession{b: b}, nil }

type testSession struct {
	b      *testBackend
	size   int64
	authed bool
}

// AuthMechanisms and Auth make the session an smtp.AuthSession: PLAIN with
// user "u", password "secret". Mail is refused without it when the backend
// wants authentication.
func (s *testSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *testSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "u" || pass != "secret" {
			return errors.New("invalid credentials")
		}
		s.authed = true
		return nil
	}), nil
}

func (s *testSession) Reset()        {}
func (s *testSession) Logout() error { return nil }
func (s *testSession) Mail(_ string, o *smtp.MailOptions) error {
	if s.b.needAuth && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.size = o.Size
	return nil
}
func (s *testSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *testSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	b := s.b
	b.mu.Lock()
	b.seen++
	reject := b.rejectEvery > 0 && b.seen%b.rejectEvery == 0
	if int64(len(msg)) != s.size {
		b.badSize++
	}
	b.mu.Unlock()
	if reject {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	time.AfterFunc(20*time.Millisecond, func() { b.drop.add(msg) })
	return nil
}

func startSMTP(t *testing.T, be *testBackend, tlsConf *tls.Config) string {
	t.Helper()
	srv := smtp.NewServer(be)
	srv.TLSConfig = tlsConf
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = 1 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestSMTPEndToEnd(t *testing.T) {
	drop := &testMaildrop{}
	drop.add([]byte("Subject: already there\r\n\r\nhello\r\n"))
	be := &testBackend{drop: drop}
	smtpAddr := startSMTP(t, be, nil)
	pop3Addr := startPOP3(t, drop, 0)

	var out, errOut bytes.Buffer
	args := []string{"smtp", "-addr", smtpAddr, "-conns", "4", "-count", "200", "-size", "3000",
		"-rcpt", "x@example.test", "-verify-pop3", pop3Addr, "-pop3-pass", "secret", "-poll", "10ms", "-timeout", "30s"}
	if err := run(t.Context(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	f := fields(t, out.String(), "smtp")
	if f["sent"] != "200" || f["accepted"] != "200" || f["errors"] != "0" || f["visible"] != "200/200" || f["e2e"] == "-" {
		t.Fatalf("summary: %s", out.String())
	}
	msgs := drop.snapshot()
	be.mu.Lock()
	badSize := be.badSize
	be.mu.Unlock()
	if len(msgs) != 201 || badSize != 0 {
		t.Fatalf("maildrop has %d messages, want 201; %d with a size other than SIZE=", len(msgs), badSize)
	}
	ids := map[string]bool{}
	for _, m := range msgs[1:] {
		if len(m) != 3000 {
			t.Fatalf("delivered message of %d bytes, want 3000", len(m))
		}
		msg, err := mail.ReadMessage(bytes.NewReader(m))
		if err != nil {
			t.Fatal(err)
		}
		ids[msg.Header.Get("Message-Id")] = true
	}
	if len(ids) != 200 {
		t.Fatalf("%d distinct Message-IDs in 200 messages", len(ids))
	}

	// Temporary failures are counted, the connection is reused, and the
	// run fails unless -max-errors allows them.
	be.mu.Lock()
	be.rejectEvery = 10
	be.mu.Unlock()
	out.Reset()
	errOut.Reset()
	args = []string{"smtp", "-addr", smtpAddr, "-conns", "2", "-count", "100", "-size", "2000", "-timeout", "30s"}
	if err := run(t.Context(), args, &out, &errOut); err == nil {
		t.Fatalf("want an error for rejected messages; summary %s", out.String())
	}
	if f := fields(t, out.String(), "smtp"); f["errors"] != "10" || f["accepted"] != "90" {
		t.Fatalf("summary: %s", out.String())
	}
	if !strings.Contains(errOut.String(), "451") {
		t.Fatalf("error samples lack the 451 reply: %s", errOut.String())
	}
	out.Reset()
	if err := run(t.Context(), append(args, "-max-errors", "10"), &out, &errOut); err != nil {
		t.Fatalf("-max-errors 10: %v; summary %s", err, out.String())
	}
}

func TestSMTPStartTLSAuth(t *testing.T) {
	drop := &testMaildrop{}
	be := &testBackend{drop: drop, needAuth: true}
	addr := startSMTP(t, be, selfSignedTLS(t))
	base := []string{"smtp", "-addr", addr, "-conns", "2", "-count", "4", "-size", "1500", "-timeout", "30s"}
	cases := []struct {
		name  string
		extra []string
		ok    bool
	}{
		{"starttls and auth", []string{"-starttls", "-insecure", "-auth", "u:secret"}, true},
		{"no auth", []string{"-starttls", "-insecure"}, false},
		{"wrong password", []string{"-starttls", "-insecure", "-auth", "u:nope"}, false},
		{"unverified certificate", []string{"-starttls", "-auth", "u:secret"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), append(append([]string{}, base...), tc.extra...), &out, &errOut)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok=%v; summary %s%s", err, tc.ok, out.String(), errOut.String())
			}
			want := "4"
			if !tc.ok {
				want = "0"
			}
			if f := fields(t, out.String(), "smtp"); f["accepted"] != want {
				t.Fatalf("summary: %s", out.String())
			}
		})
	}
}

// selfSignedTLS returns a server config with a fresh self-signed
// certificate for 127.0.0.1.
func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mailbench test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func TestPOP3Idle(t *testing.T) {
	drop := &testMaildrop{}
	addr := startPOP3(t, drop, 0)
	var out, errOut bytes.Buffer
	args := []string{"pop3-idle", "-addr", addr, "-user", "user%d@example.test", "-pass", "secret",
		"-conns", "50", "-parallel", "8", "-hold", "100ms", "-settle", "10ms", "-timeout", "30s"}
	if err := run(t.Context(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if f := fields(t, out.String(), "pop3-idle"); f["held"] != "50" || f["errors"] != "0" || f["dropped"] != "0" {
		t.Fatalf("summary: %s", out.String())
	}
}

func TestRSS(t *testing.T) {
	for _, tree := range []bool{false, true} {
		if rss, err := readRSS(pidList{os.Getpid()}, tree); err != nil || rss <= 0 {
			t.Fatalf("readRSS(self, tree=%v): %d, %v", tree, rss, err)
		}
		if cpu, err := readCPU(pidList{os.Getpid()}, tree); err != nil || cpu < 0 {
			t.Fatalf("readCPU(self, tree=%v): %v, %v", tree, cpu, err)
		}
	}
	var out bytes.Buffer
	self := strconv.Itoa(os.Getpid())
	if err := run(t.Context(), []string{"rss", "-pid", self + "," + self, "-pid-tree"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if f := fields(t, out.String(), "rss"); f["pid"] != self+","+self || f["procs"] == "" {
		t.Fatalf("summary: %s", out.String())
	}
	if _, err := readRSS(pidList{0x7ffffff0}, false); err == nil {
		t.Fatal("readRSS of a missing process: want an error")
	}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{nil, {"nope"}, {"smtp", "stray"}, {"smtp", "-conns", "0"}, {"pop3"}} {
		if err := run(ctx, args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("%q: got %v, want a usage error", args, err)
		}
	}
}
