package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMTASTSBetweenServers: b.test publishes an MTA-STS policy in enforce
// mode naming its MX host (localhost), c.test one naming a host it does
// not use. A, configured with outbound.mta_sts_port (the policy host's
// test port) and outbound.mta_sts_ca_file (B's local CA and the policy
// host's CA), delivers to bob@b.test over verified STARTTLS, and keeps
// the mail for carol@c.test, saying why in `queue list`.
func TestMTASTSBetweenServers(t *testing.T) {
	t.Parallel()
	needTool(t, "swaks")
	d := startE2EDNS(t)
	resolver := fmt.Sprintf("\n[dns]\nresolver = %q\n", d.addr)

	b := newInstance(t, resolver)
	b.must("", "domain", "add", "b.test")
	b.must("", "domain", "add", "c.test")
	b.addUser("bob@b.test", "pw bob")
	b.addUser("carol@c.test", "pw carol")
	pb := b.start()

	policyCA, policyTLS := e2eCA(t, "mta-sts.b.test", "mta-sts.c.test")
	policies := map[string]string{
		"mta-sts.b.test": "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 86400\n",
		"mta-sts.c.test": "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		body, ok := policies[host]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body))
	}))
	srv.TLS = policyTLS
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, policyPort, _ := net.SplitHostPort(srv.Listener.Addr().String())

	caFile := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(caFile, []byte(b.must("", "tls", "ca")+policyCA), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newInstance(t, resolver+fmt.Sprintf("\n[outbound]\nmx_port = %s\nretry_min = \"1s\"\nmta_sts_port = %s\nmta_sts_ca_file = %q\n",
		pb.port("smtp"), policyPort, caFile))
	a.must("", "domain", "add", "a.test")
	a.addUser("alice@a.test", "pw alice")
	for _, in := range []struct {
		in     *instance
		domain string
	}{{a, "a.test"}, {b, "b.test"}, {b, "c.test"}} {
		d.zone(t, in.in.must("", "domain", "dns", in.domain))
	}
	d.zone(t, `localhost. 60 IN A 127.0.0.1
_mta-sts.b.test. 60 IN TXT "v=STSv1; id=1"
_mta-sts.c.test. 60 IN TXT "v=STSv1; id=1"
mta-sts.b.test. 60 IN A 127.0.0.1
mta-sts.c.test. 60 IN A 127.0.0.1
`)
	pa := a.start()

	ca := filepath.Join(a.dir, "ca.crt")
	if err := os.WriteFile(ca, []byte(a.must("", "tls", "ca")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"bob@b.test", "carol@c.test"} {
		out, err := exec.Command("swaks", "--server", "127.0.0.1", "--port", pa.port("submission"),
			"--tls", "--tls-verify", "--tls-ca-path", ca,
			"--auth", "PLAIN", "--auth-user", "alice@a.test", "--auth-password", "pw alice",
			"--from", "alice@a.test", "--to", to, "--helo", "e2e.test",
			"--header", "Subject: under MTA-STS", "--timeout", "20").CombinedOutput()
		if err != nil {
			t.Fatalf("swaks to %s: %v\n%s", to, err, out)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for countMessages(t, pb.addr("pop3"), "bob@b.test", "pw bob") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bob got nothing; A's queue:\n%s\nA's log:\n%s", a.must("", "queue", "list"), pa.logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := dialPOP3(t, pb.addr("pop3"))
	c.login("bob@b.test", "pw bob")
	got := string(c.retr(1))
	c.cmd("QUIT")
	if !strings.Contains(got, "Subject: under MTA-STS") || !strings.Contains(got, "(using TLS") {
		t.Errorf("bob's copy:\n%s", got)
	}
	for {
		q := a.must("", "queue", "list")
		if strings.Contains(q, "carol@c.test") && strings.Contains(q, "MTA-STS policy of c.test") &&
			strings.Contains(q, "no MX host matches") && strings.Contains(q, "1 entries") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("carol's mail not held by c.test's policy:\n%s", q)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := countMessages(t, pb.addr("pop3"), "carol@c.test", "pw carol"); n != 0 {
		t.Fatalf("carol got %d messages through an MX host her domain's policy does not list", n)
	}
}

// e2eCA makes a CA and a server configuration with a certificate it
// issued for names; it returns the CA certificate in PEM.
func e2eCA(t *testing.T, names ...string) (string, *tls.Config) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e policy CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), cfg
}
