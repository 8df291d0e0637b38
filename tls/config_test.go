package tls

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tlsTargets starts a local-CA source (ECDSA certificate) and a files source
// with an RSA certificate, each behind an implicit-TLS listener, so every
// cipher suite can be tried with a certificate it could use.
type tlsTarget struct {
	addr  string
	roots *x509.CertPool
	name  string
	cert  cryptotls.Certificate
}

func tlsTargets(t *testing.T) (ecdsaTarget, rsaTarget tlsTarget) {
	t.Helper()
	local := newLocal(t, t.TempDir(), nil)
	caPEM, _ := local.CACertPEM()
	ecdsaTarget = tlsTarget{
		addr:  serveTLS(t, listen(t), local.Config("imap")),
		roots: poolOf(t, caPEM),
		name:  "mail.home.arpa",
		cert:  *local.local.certificate(),
	}

	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 10, true, "mail.example.net")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	files, err := New(context.Background(), Options{Mode: ModeFiles, Hostname: "mail.example.net", Dir: t.TempDir(),
		CertFile: certFile, KeyFile: keyFile, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })
	rsaTarget = tlsTarget{
		addr:  serveTLS(t, listen(t), files.Config("imap")),
		roots: ca.pool,
		name:  "mail.example.net",
		cert:  *files.files.certificate(),
	}
	return ecdsaTarget, rsaTarget
}

// permissive serves cert with whatever the client asks for, to prove a
// client configuration really can connect when the server allows it.
func permissive(t *testing.T, cert cryptotls.Certificate, suite uint16) string {
	cfg := &cryptotls.Config{
		Certificates: []cryptotls.Certificate{cert},
		MinVersion:   cryptotls.VersionTLS10,
	}
	if suite != 0 {
		cfg.CipherSuites = []uint16{suite}
	}
	return serveTLS(t, listen(t), cfg)
}

func TestConfigRefusesOldProtocolVersions(t *testing.T) {
	ec, _ := tlsTargets(t)
	control := permissive(t, ec.cert, 0)
	for _, v := range []uint16{cryptotls.VersionTLS10, cryptotls.VersionTLS11} {
		cfg := &cryptotls.Config{RootCAs: ec.roots, ServerName: ec.name, MinVersion: v, MaxVersion: v}
		c, err := dial(control, cfg)
		if err != nil {
			t.Fatalf("control: client cannot speak %s at all: %v", cryptotls.VersionName(v), err)
		}
		c.Close()
		if c, err := dial(ec.addr, cfg); err == nil {
			c.Close()
			t.Errorf("%s accepted", cryptotls.VersionName(v))
		}
	}
	for _, v := range []uint16{cryptotls.VersionTLS12, cryptotls.VersionTLS13} {
		c, err := dial(ec.addr, &cryptotls.Config{RootCAs: ec.roots, ServerName: ec.name, MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatalf("%s refused: %v", cryptotls.VersionName(v), err)
		}
		c.Close()
	}
	if err := sslv3Refused(ec.addr); err != nil {
		t.Error(err)
	}
}

// sslv3Refused sends an SSL 3.0 ClientHello (crypto/tls cannot) and checks
// the answer is an alert or a closed connection, never a ServerHello.
func sslv3Refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var hello []byte
	hello = append(hello, 0x03, 0x00)                   // client_version SSL 3.0
	hello = append(hello, make([]byte, 32)...)          // random
	hello = append(hello, 0)                            // session id
	hello = append(hello, 0, 4, 0x00, 0x0a, 0x00, 0x2f) // 3DES-SHA, AES128-SHA
	hello = append(hello, 1, 0)                         // null compression
	body := append([]byte{1, 0, byte(len(hello) >> 8), byte(len(hello))}, hello...)
	rec := []byte{0x16, 0x03, 0x00, 0, 0}
	binary.BigEndian.PutUint16(rec[3:], uint16(len(body)))
	if _, err := c.Write(append(rec, body...)); err != nil {
		return nil // closed on us: refused
	}
	reply := make([]byte, 5)
	if _, err := io.ReadFull(c, reply); err != nil {
		return nil // closed without a reply: refused
	}
	if reply[0] == 0x16 {
		return errString("SSL 3.0 ClientHello answered with a handshake record")
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }

// Every TLS 1.2 suite outside the modern list is refused, with a
// certificate the suite could use, while a permissive server with the same
// certificate accepts the same client (where crypto/tls can speak it).
func TestConfigRefusesWeakCipherSuites(t *testing.T) {
	ec, rs := tlsTargets(t)
	var weak []*cryptotls.CipherSuite
	for _, cs := range append(cryptotls.CipherSuites(), cryptotls.InsecureCipherSuites()...) {
		if !slices.Contains(cs.SupportedVersions, cryptotls.VersionTLS12) &&
			!slices.Contains(cs.SupportedVersions, cryptotls.VersionTLS10) {
			continue // TLS 1.3 suites
		}
		if slices.Contains(modernSuites, cs.ID) {
			continue
		}
		weak = append(weak, cs)
	}
	if len(weak) < 10 {
		t.Fatalf("only %d weak suites to try", len(weak))
	}
	for _, cs := range weak {
		target := rs
		if strings.Contains(cs.Name, "ECDSA") {
			target = ec
		}
		cfg := &cryptotls.Config{
			RootCAs:      target.roots,
			ServerName:   target.name,
			MinVersion:   cryptotls.VersionTLS10,
			MaxVersion:   cryptotls.VersionTLS12,
			CipherSuites: []uint16{cs.ID},
		}
		if c, err := dial(permissive(t, target.cert, cs.ID), cfg); err != nil {
			t.Logf("%s: crypto/tls cannot negotiate it at all (%v); counted as refused", cs.Name, err)
		} else {
			c.Close()
		}
		if c, err := dial(target.addr, cfg); err == nil {
			c.Close()
			t.Errorf("%s accepted", cs.Name)
		}
	}
	for _, id := range modernSuites {
		name := cryptotls.CipherSuiteName(id)
		target := rs
		if strings.Contains(name, "ECDSA") {
			target = ec
		}
		c, err := dial(target.addr, &cryptotls.Config{RootCAs: target.roots, ServerName: target.name,
			MaxVersion: cryptotls.VersionTLS12, CipherSuites: []uint16{id}})
		if err != nil {
			t.Errorf("%s refused: %v", name, err)
			continue
		}
		c.Close()
	}
}

// ALPN: the service's protocol is negotiated, a client speaking another
// protocol is refused (RFC 7301 §3.2), a client offering none still works,
// and configs are independent clones.
func TestConfigALPN(t *testing.T) {
	src := newLocal(t, t.TempDir(), nil)
	imap := src.Config("imap")
	pop := src.Config("pop3")
	if imap == pop || imap.NextProtos[0] != "imap" || pop.NextProtos[0] != "pop3" {
		t.Fatalf("configs share state: %v %v", imap.NextProtos, pop.NextProtos)
	}
	if imap.MinVersion != cryptotls.VersionTLS12 {
		t.Fatalf("MinVersion %x", imap.MinVersion)
	}
	if slices.Contains(src.Config("h2", "http/1.1").NextProtos, ALPNACME) {
		t.Fatal("acme-tls/1 offered outside mode acme")
	}
	addr := serveTLS(t, listen(t), imap)
	c, err := dial(addr, &cryptotls.Config{InsecureSkipVerify: true, NextProtos: []string{"imap"}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = dial(addr, &cryptotls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("client without ALPN: %v", err)
	}
	c.Close()
	if c, err := dial(addr, &cryptotls.Config{InsecureSkipVerify: true, NextProtos: []string{"pop3"}}); err == nil {
		c.Close()
		t.Fatal("pop3 client accepted on the imap port")
	}
}
