package tls

import (
	"context"
	cryptotls "crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Replacing the files on disk changes the certificate of the next
// handshake, by itself and through Reload, without dropping connections;
// broken files leave the previous certificate in place.
func TestFilesReloadOnChange(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	certPEM, keyPEM := ca.issue(t, 1, false, "mail.example.net")
	replaceFile(t, certFile, certPEM)
	replaceFile(t, keyFile, keyPEM)

	src, err := New(context.Background(), Options{
		Mode: ModeFiles, Hostname: "mail.example.net", Dir: t.TempDir(),
		CertFile: certFile, KeyFile: keyFile,
		FilesCheckInterval: 50 * time.Millisecond,
		Logger:             testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.CACertPEM(); err == nil {
		t.Error("mode files offers a local CA")
	}
	addr := serveTLS(t, listen(t), src.Config("pop3"))
	client := &cryptotls.Config{RootCAs: ca.pool, ServerName: "mail.example.net", NextProtos: []string{"pop3"}}
	serial := func() int64 {
		c, err := dial(addr, client)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	open, err := dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if got := open.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	// A deploy tool replaces both files; the poll picks them up.
	certPEM, keyPEM = ca.issue(t, 2, true, "mail.example.net")
	replaceFile(t, keyFile, keyPEM)
	replaceFile(t, certFile, certPEM)
	waitFor(t, 5*time.Second, "the replaced certificate", func() bool { return serial() == 2 })
	if err := open.echo("STAT"); err != nil {
		t.Fatalf("connection from before the reload: %v", err)
	}

	// Reload (SIGHUP) takes effect at once, also when the file is rewritten
	// in place.
	src.Close() // stop the poll so only Reload can pick the change up
	certPEM, keyPEM = ca.issue(t, 3, false, "mail.example.net")
	os.WriteFile(keyFile, keyPEM, 0o600)
	os.WriteFile(certFile, certPEM, 0o600)
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != 3 {
		t.Fatalf("after Reload: serial %d, want 3", got)
	}

	// A key that does not match, then garbage: both refused, serial 3 stays.
	_, otherKey := ca.issue(t, 4, false, "mail.example.net")
	replaceFile(t, keyFile, otherKey)
	if err := src.Reload(); err == nil {
		t.Fatal("Reload accepted a key that does not match")
	}
	replaceFile(t, certFile, []byte("not a certificate"))
	if err := src.Reload(); err == nil {
		t.Fatal("Reload accepted garbage")
	}
	if got := serial(); got != 3 {
		t.Fatalf("after failed reloads: serial %d, want 3", got)
	}
	st := src.Status()
	if len(st) != 1 || st[0].LastError == "" || st[0].LastErrorAt.IsZero() || !st[0].Serving ||
		st[0].Issuer != "files test CA" || st[0].Names[0] != "mail.example.net" {
		t.Fatalf("status %+v", st)
	}
	if err := open.echo("NOOP"); err != nil {
		t.Fatalf("connection from before the reloads: %v", err)
	}
	// Close wrote the final report for `mailbox status`.
	rep, err := ReadStatus(src.opts.Dir)
	if err != nil || rep.Mode != ModeFiles || len(rep.Certificates) != 1 || rep.Certificates[0].LastError == "" {
		t.Fatalf("status.json: %+v, %v", rep, err)
	}
}
