package main

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-smtp"
)

// startIMAP serves go-imap's in-memory server on a loopback port with user
// "u" (password "secret") whose INBOX holds msgs generated messages, the
// rare word in every rareEvery-th one. It returns the address and the user.
func startIMAP(t *testing.T, msgs, rareEvery int) (string, *imapmemserver.User) {
	t.Helper()
	mem := imapmemserver.New()
	user := imapmemserver.NewUser("u", "secret")
	if err := user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(user)
	spec := messageSpec{From: "a@example.test", To: []string{"u@example.test"}, Size: 2048, RunID: "t",
		RareWord: defaultRareWord, RareEvery: rareEvery}
	gen := newGenerator(spec, newCorpus(1))
	for seq := range msgs {
		msg, err := gen.message(seq, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		appendTo(t, user, msg)
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), user
}

// literal is an imap.LiteralReader over a byte slice.
type literal struct {
	*bytes.Reader
	n int64
}

func (l literal) Size() int64 { return l.n }

func appendTo(t *testing.T, user *imapmemserver.User, msg []byte) {
	t.Helper()
	if _, err := user.Append("INBOX", literal{bytes.NewReader(msg), int64(len(msg))}, &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestIMAPWorkloads(t *testing.T) {
	addr, _ := startIMAP(t, 200, 50)
	var out, errOut bytes.Buffer
	args := []string{"imap", "-addr", addr, "-user", "u", "-pass", "secret", "-repeat", "3", "-label", "test"}
	if err := run(t.Context(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out.String(), errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(imapOps) {
		t.Fatalf("want %d lines, got:\n%s", len(imapOps), out.String())
	}
	for i, line := range lines {
		f := fields(t, line+"\n", "imap")
		if f["op"] != imapOps[i].name || f["msgs"] != "200" || f["repeat"] != "3" || f["label"] != "test" {
			t.Fatalf("line %d: %s", i, line)
		}
		switch f["op"] {
		case "search":
			if f["found"] != "4" { // messages 0, 50, 100, 150
				t.Fatalf("search: %s", line)
			}
		case "fetch-body":
			if f["bytes"] != strconv.Itoa(200*2048) {
				t.Fatalf("fetch-body: %s", line)
			}
		}
	}

	// The STORE workload cleared its flag again.
	c, err := dialIMAP(t.Context(), addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.login("u", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.selectInbox(); err != nil {
		t.Fatal(err)
	}
	if res, err := c.cmd(`UID SEARCH FLAGGED`); err != nil || len(res.Search) != 0 {
		t.Fatalf("flagged after the run: %v, %v", res.Search, err)
	}

	// A wrong password fails the run.
	args[6] = "wrong"
	if err := run(t.Context(), args, &out, &errOut); err == nil {
		t.Fatal("wrong password: want an error")
	}
}

func TestLiteralSize(t *testing.T) {
	for line, want := range map[string]int64{"* 1 FETCH (BODY[] {42}": 42, "x {7+}": 7, "{0}": 0} {
		if n, ok := literalSize([]byte(line)); !ok || n != want {
			t.Errorf("literalSize(%q) = %d, %v", line, n, ok)
		}
	}
	for _, line := range []string{"* OK done", "{x}", "}", "a {-1}"} {
		if _, ok := literalSize([]byte(line)); ok {
			t.Errorf("literalSize(%q): want no literal", line)
		}
	}
}

// deliverBackend is a go-smtp backend that appends every message to an
// in-memory IMAP user's INBOX before answering 250.
type deliverBackend struct {
	t    *testing.T
	user *imapmemserver.User
}

func (b deliverBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return deliverSession(b), nil }

type deliverSession deliverBackend

func (s deliverSession) Reset()                               {}
func (s deliverSession) Logout() error                        { return nil }
func (s deliverSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s deliverSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s deliverSession) Data(r io.Reader) error {
	msg, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	appendTo(s.t, s.user, msg)
	return nil
}

func TestIMAPIdlePush(t *testing.T) {
	addr, user := startIMAP(t, 3, 0)
	srv := smtp.NewServer(deliverBackend{t: t, user: user})
	srv.Domain = "localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	var out, errOut bytes.Buffer
	args := []string{"imap-idle", "-addr", addr, "-user", "u", "-pass", "secret", "-conns", "20", "-parallel", "5",
		"-hold", "100ms", "-settle", "10ms", "-push-smtp", ln.Addr().String(), "-push-rcpt", "u@example.test", "-pushes", "3", "-timeout", "60s"}
	if err := run(t.Context(), args, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out.String(), errOut.String())
	}
	f := fields(t, out.String(), "imap-idle")
	if f["held"] != "20" || f["errors"] != "0" || f["dropped"] != "0" || f["push_seen"] != "60" || f["push_missed"] != "0" {
		t.Fatalf("summary: %s", out.String())
	}
}
