package pop3

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"mailbox/internal/transcript"
	"mailbox/store"
	"mailbox/store/storetest"
)

// TestFetchmail downloads with a real client, fetchmail: over STLS keeping
// the mail (a second run finds nothing new, by UIDL), then over POP3S
// deleting it. The bytes fetchmail hands its MDA must be the bytes
// delivered. CI installs fetchmail; locally the test skips without it.
func TestFetchmail(t *testing.T) {
	bin, err := exec.LookPath("fetchmail")
	if err != nil {
		t.Skip("fetchmail not installed")
	}
	msgs := [][]byte{
		[]byte("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\nMessage-ID: <1@example.test>\r\n\r\nHello.\r\n.dot line\r\n..two\r\n.\r\n"),
		[]byte("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: two\r\nMessage-ID: <2@example.test>\r\n\r\nno final line end"),
		bigMessage(300 << 10),
	}
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	for _, m := range msgs {
		deliver(t, st, alice, m)
	}
	serverTLS, _ := transcript.TLSPair(t)
	dir := t.TempDir()
	certFile := filepath.Join(dir, "cert.pem")
	leaf := serverTLS.Certificates[0].Leaf
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	ts := startServer(t, Options{Store: st, TLS: serverTLS}, "")
	secureLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ts.srv.Serve(tls.NewListener(secureLn, serverTLS))
	_, plainPort, _ := net.SplitHostPort(ts.addr)
	_, securePort, _ := net.SplitHostPort(secureLn.Addr().String())

	run := func(name, port, options string) []string {
		t.Helper()
		out := filepath.Join(dir, name)
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		rc := filepath.Join(dir, name+".rc")
		conf := fmt.Sprintf(`set no syslog
set no bouncemail
poll localhost with service %s protocol pop3 auth password
  user "%s" there with password "%s"
  %s sslcertck sslcertfile "%s"
  mda "/bin/sh -c 'cat > %s/$$.eml'"
`, port, alice, alicePwd, options, certFile, out)
		if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-f", rc, "-i", filepath.Join(dir, "fetchids"), "--invisible", "-v")
		cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
		log, err := cmd.CombinedOutput()
		// Exit 1 is "no new mail".
		if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
			t.Fatalf("fetchmail %s: %v\n%s", name, err, log)
		}
		files, _ := filepath.Glob(filepath.Join(out, "*.eml"))
		var got []string
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(data))
		}
		sort.Strings(got)
		t.Logf("fetchmail %s: %d messages", name, len(got))
		return got
	}
	// fetchmail hands its MDA LF line ends and ends the last line.
	var want []string
	for _, m := range msgs {
		s := strings.ReplaceAll(string(m), "\r\n", "\n")
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		want = append(want, s)
	}
	sort.Strings(want)
	check := func(name string, got []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: message %d differs:\n got %q\nwant %q", name, i, head(got[i]), head(want[i]))
			}
		}
	}

	check("stls-keep", run("stls-keep", plainPort, "keep"))
	if got := run("stls-again", plainPort, "keep"); len(got) != 0 {
		t.Fatalf("second run with keep fetched %d messages: UIDL should mark them seen", len(got))
	}
	if n, _ := mailboxMessages(context.Background(), st, alice, store.RoleInbox); len(n) != len(msgs) {
		t.Fatalf("keep mode left %d messages, want %d", len(n), len(msgs))
	}
	check("pop3s-delete", run("pop3s-delete", securePort, "nokeep fetchall ssl"))
	if n, _ := mailboxMessages(context.Background(), st, alice, store.RoleInbox); len(n) != 0 {
		t.Fatalf("delete mode left %d messages", len(n))
	}
}

// head shortens a message for an error message.
func head(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
