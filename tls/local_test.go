package tls

import (
	"bytes"
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func newLocal(t *testing.T, dir string, mod func(*Options)) *Source {
	t.Helper()
	opts := Options{Hostname: "mail.home.arpa", Dir: dir, Logger: testLogger(t)}
	if mod != nil {
		mod(&opts)
	}
	src, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// A client that trusts the exported CA verifies every implicit-TLS listener
// and the web listener, by name and by address, with the service's ALPN.
func TestLocalCAVerifiesEveryListener(t *testing.T) {
	dir := t.TempDir()
	src := newLocal(t, dir, func(o *Options) { o.ExtraNames = []string{"Webmail.Home.Arpa.", "192.0.2.7"} })
	if src.Mode() != ModeLocal {
		t.Fatalf("mode %q, want local", src.Mode())
	}
	caPEM, err := src.CACertPEM()
	if err != nil {
		t.Fatal(err)
	}
	exported, err := ExportCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caPEM, exported) {
		t.Fatal("ExportCA differs from the CA the source uses")
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "local", caCertFile))
	if err != nil || !bytes.Equal(onDisk, caPEM) {
		t.Fatalf("local/ca.crt: %v, equal=%v", err, bytes.Equal(onDisk, caPEM))
	}
	roots := poolOf(t, caPEM)

	for _, alpn := range []string{"imap", "pop3", "smtp"} {
		addr := serveTLS(t, listen(t), src.Config(alpn))
		for _, name := range []string{"mail.home.arpa", "webmail.home.arpa", "localhost", "127.0.0.1", "192.0.2.7"} {
			c, err := dial(addr, &cryptotls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{alpn}})
			if err != nil {
				t.Fatalf("%s as %s: %v", alpn, name, err)
			}
			if got := c.ConnectionState().NegotiatedProtocol; got != alpn {
				t.Errorf("%s as %s: ALPN %q", alpn, name, got)
			}
			if err := c.echo("NOOP"); err != nil {
				t.Error(err)
			}
			c.Close()
		}
	}

	// The web listener, through net/http on both sides.
	ln := listen(t)
	srv := &http.Server{
		Handler:   src.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })),
		TLSConfig: src.Config("h2", "http/1.1"),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &cryptotls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	resp, err := client.Get("https://localhost:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || resp.ProtoMajor != 2 {
		t.Fatalf("web: %s %q", resp.Proto, body)
	}

	st := src.Status()
	if len(st) != 1 || !st[0].Serving || st[0].Source != ModeLocal || st[0].LastError != "" ||
		!slices.Contains(st[0].Names, "webmail.home.arpa") || !slices.Contains(st[0].Names, "127.0.0.1") ||
		st[0].Issuer == "" || !st[0].NextRenewal.After(time.Now()) || !st[0].NextRenewal.Before(st[0].NotAfter) {
		t.Fatalf("status %+v", st)
	}
}

// The CA and the leaf survive a restart; a leaf that no longer covers the
// configured names is replaced, by the same CA.
func TestLocalReusedAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	first := newLocal(t, dir, nil)
	ca1, _ := first.CACertPEM()
	leaf1 := first.local.certificate().Leaf
	first.Close()

	second := newLocal(t, dir, nil)
	ca2, _ := second.CACertPEM()
	if !bytes.Equal(ca1, ca2) {
		t.Fatal("CA recreated on restart")
	}
	if leaf2 := second.local.certificate().Leaf; leaf2.SerialNumber.Cmp(leaf1.SerialNumber) != 0 {
		t.Fatal("leaf reissued on restart although still valid")
	}
	second.Close()

	third := newLocal(t, dir, func(o *Options) { o.ExtraNames = []string{"imap.home.arpa"} })
	ca3, _ := third.CACertPEM()
	leaf3 := third.local.certificate().Leaf
	if !bytes.Equal(ca1, ca3) || leaf3.SerialNumber.Cmp(leaf1.SerialNumber) == 0 ||
		!slices.Contains(leaf3.DNSNames, "imap.home.arpa") {
		t.Fatalf("after adding a name: same CA %v, new leaf %v, names %v",
			bytes.Equal(ca1, ca3), leaf3.SerialNumber.Cmp(leaf1.SerialNumber) != 0, leaf3.DNSNames)
	}
}

// A short-lived leaf is renewed in the background before it expires, the
// next handshake gets the new one, and open connections stay up.
func TestLocalLeafRenewedBeforeExpiry(t *testing.T) {
	src := newLocal(t, t.TempDir(), func(o *Options) {
		o.LocalLeafLifetime = 6 * time.Second
		o.RenewCheckInterval = 100 * time.Millisecond
	})
	caPEM, _ := src.CACertPEM()
	roots := poolOf(t, caPEM)
	addr := serveTLS(t, listen(t), src.Config("imap"))
	open, err := dial(addr, &cryptotls.Config{RootCAs: roots, ServerName: "mail.home.arpa", NextProtos: []string{"imap"}})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	first := open.ConnectionState().PeerCertificates[0]

	// Poll without verification: on a loaded machine the poll itself may
	// run late, and what matters is when the renewal happened (below).
	var leaf *x509.Certificate
	waitFor(t, 20*time.Second, "a renewed leaf", func() bool {
		if got := servedLeaf(t, addr, "mail.home.arpa", "imap"); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
			leaf = got
		}
		return leaf != nil
	})
	// NotBefore is the issue time minus a tenth of the lifetime.
	if !leaf.NotBefore.Before(first.NotAfter) || leaf.NotAfter.Before(first.NotAfter) {
		t.Fatalf("renewed leaf valid %v to %v, old one until %v", leaf.NotBefore, leaf.NotAfter, first.NotAfter)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "mail.home.arpa",
		CurrentTime: leaf.NotBefore.Add(time.Second)}); err != nil {
		t.Fatalf("renewed leaf: %v", err)
	}
	if err := open.echo("still here"); err != nil {
		t.Fatalf("connection opened before renewal: %v", err)
	}
	onDisk, err := loadKeyPairFile(filepath.Join(src.opts.Dir, "local", leafFile))
	if err != nil || onDisk.Leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("renewed leaf not stored: %v", err)
	}
}

func TestDefaultMode(t *testing.T) {
	for _, tc := range []struct {
		host, want string
	}{
		{"localhost", ModeLocal},
		{"127.0.0.1", ModeLocal},
		{"::1", ModeLocal},
		{"mailbox", ModeLocal},
		{"nas.lan", ModeLocal},
		{"box.home.arpa", ModeLocal},
		{"Printer.Local.", ModeLocal},
		{"mail.example.org", ModeACME},
		{"example.com", ModeACME},
	} {
		if got := DefaultMode(tc.host); got != tc.want {
			t.Errorf("DefaultMode(%q) = %q, want %q", tc.host, got, tc.want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no hostname", Options{Dir: t.TempDir()}},
		{"no dir", Options{Hostname: "localhost"}},
		{"bad mode", Options{Hostname: "localhost", Dir: t.TempDir(), Mode: "magic"}},
		{"files without files", Options{Hostname: "localhost", Dir: t.TempDir(), Mode: ModeFiles}},
		{"files missing", Options{Hostname: "localhost", Dir: t.TempDir(), Mode: ModeFiles,
			CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}},
		{"acme without challenges", Options{Hostname: "mail.example.com", Dir: t.TempDir(),
			DisableHTTP01: true, DisableTLSALPN01: true}},
	} {
		if src, err := New(context.Background(), tc.opts); err == nil {
			src.Close()
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}
