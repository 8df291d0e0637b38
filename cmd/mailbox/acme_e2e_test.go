package main

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// The binary in tls.mode "acme" against Pebble, the Let's Encrypt test CA,
// run in the test process on loopback with its DNS stub answering 127.0.0.1
// for every name. Pebble's validation authority really connects to
// mailbox's own web listeners: HTTP-01 on listen.http, TLS-ALPN-01 on
// listen.https; each subtest leaves the other listener off, so the
// challenge that cannot be answered must not be tried.

const acmeHost = "mail.example.com"

// acmeLimit bounds the wait for a certificate from local Pebble.
const acmeLimit = 60 * time.Second

func TestACMEThroughOwnListeners(t *testing.T) {
	for _, tt := range []struct {
		name      string
		challenge string // "http" or "https": the one web listener left on
	}{
		{"HTTP-01", "http"},
		{"TLS-ALPN-01", "https"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			webPort := freePort(t)
			httpPort, tlsPort := webPort, freePort(t)
			if tt.challenge == "https" {
				httpPort, tlsPort = freePort(t), webPort
			}
			p := startPebble(t, httpPort, tlsPort)
			in := newInstance(t, fmt.Sprintf(`
[tls]
mode = "acme"
acme_email = "admin@example.com"
acme_directory = %q
acme_ca_roots = %q
`, p.dirURL, p.rootsFile))
			// newInstance turned the web listeners off; turn one on.
			cfg, err := os.ReadFile(in.config)
			if err != nil {
				t.Fatal(err)
			}
			on := fmt.Sprintf("%s = \"127.0.0.1:%d\"", tt.challenge, webPort)
			cfg = []byte(strings.Replace(string(cfg), tt.challenge+` = ""`, on, 1))
			cfg = []byte(strings.Replace(string(cfg), `hostname = "localhost"`, `hostname = "`+acmeHost+`"`, 1))
			if err := os.WriteFile(in.config, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			proc := in.start()
			if _, ok := proc.addrs[tt.challenge]; !ok {
				t.Fatalf("listener %s is not up:\n%s", tt.challenge, proc.stdout)
			}

			// Until the order completes the local certificate serves; then
			// every TLS listener serves Pebble's, for the host name.
			deadline := time.Now().Add(acmeLimit)
			for {
				leaf, err := verifiedLeaf(proc.addr("pop3s"), p.roots, "pop3")
				if err == nil {
					if leaf.Subject.CommonName != acmeHost && !slices.Contains(leaf.DNSNames, acmeHost) {
						t.Fatalf("certificate for %v, want %s", leaf.DNSNames, acmeHost)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no ACME certificate on pop3s after %v: %v\nstderr:\n%s", acmeLimit, err, proc.logs())
				}
				time.Sleep(250 * time.Millisecond)
			}
			for _, l := range []struct{ key, alpn string }{{"submissions", "smtp"}, {"pop3s", "pop3"}} {
				if _, err := verifiedLeaf(proc.addr(l.key), p.roots, l.alpn); err != nil {
					t.Errorf("%s: %v", l.key, err)
				}
			}
			status := in.must("", "status")
			if !strings.Contains(status, "mode acme") || !strings.Contains(status, "Pebble") {
				t.Errorf("status does not show the ACME certificate:\n%s", status)
			}
			if code := proc.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
				t.Errorf("exit code %d after SIGTERM", code)
			}
		})
	}
}

// verifiedLeaf connects with TLS to addr as acmeHost, verifying the chain
// against roots, and returns the leaf.
func verifiedLeaf(addr string, roots *x509.CertPool, alpn string) (*x509.Certificate, error) {
	conn, err := cryptotls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&cryptotls.Config{RootCAs: roots, ServerName: acmeHost, NextProtos: []string{alpn}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if got := conn.ConnectionState().NegotiatedProtocol; got != alpn {
		return nil, fmt.Errorf("ALPN %q, want %q", got, alpn)
	}
	return conn.ConnectionState().PeerCertificates[0], nil
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type pebbleCA struct {
	dirURL    string // ACME directory
	rootsFile string // PEM of the directory's own HTTPS certificate
	roots     *x509.CertPool
}

// startPebble runs Pebble whose validation authority checks HTTP-01 on
// httpPort and TLS-ALPN-01 on tlsPort of 127.0.0.1.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebbleCA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	lg := testLog(t, "pebble ")

	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dns, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: testLog(t, "dns ")})
	if err != nil {
		t.Fatal(err)
	}
	dns.SetDefaultDNSIPv4("127.0.0.1")
	dns.SetDefaultDNSIPv6("") // the validation authority tries AAAA first
	dns.Run()
	t.Cleanup(dns.Shutdown)
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.DialTimeout("tcp", dnsAddr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DNS stub not up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	store := db.NewMemoryStore()
	authority := ca.New(lg, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test"}})
	validator := va.New(lg, httpPort, tlsPort, false, dnsAddr, store)
	front := wfe.New(lg, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewUnstartedServer(front.Handler())
	srv.Config.ErrorLog = lg
	srv.StartTLS()
	t.Cleanup(srv.Close)

	rootsFile := filepath.Join(t.TempDir(), "acme-directory-roots.pem")
	if err := os.WriteFile(rootsFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(authority.GetRootCert(0).DER)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return &pebbleCA{dirURL: srv.URL + wfe.DirectoryPath, rootsFile: rootsFile, roots: roots}
}

// testLog is a *log.Logger that writes to t.Log until the test ends.
func testLog(t *testing.T, prefix string) *log.Logger {
	w := &tLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return log.New(w, prefix, 0)
}

type tLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
