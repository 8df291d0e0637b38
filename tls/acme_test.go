package tls

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// These tests run Pebble, the Let's Encrypt test CA, in-process on
// loopback, with its DNS stub (challtestsrv) resolving every name to
// 127.0.0.1. Pebble's validation authority really connects to our web
// listeners for HTTP-01 and TLS-ALPN-01; nothing is faked on the ACME side
// (PEBBLE_VA_ALWAYS_VALID is forced off).

const acmeHost = "mail.example.com"

// obtainLimit bounds the wait for one ACME order against local Pebble.
const obtainLimit = 30 * time.Second

type pebble struct {
	dirURL    string            // ACME directory
	rootsFile string            // PEM of the directory's own HTTPS certificate
	root      *x509.Certificate // Pebble's root for issued certificates
	roots     *x509.CertPool
}

func stdLogger(t *testing.T, prefix string) *log.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return log.New(w, prefix, 0)
}

// startPebble runs Pebble whose validation authority checks HTTP-01 on
// httpPort and TLS-ALPN-01 on tlsPort of 127.0.0.1 and issues certificates
// valid for validity (0: Pebble's default of about five years).
func startPebble(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	lg := stdLogger(t, "pebble ")

	dnsAddr := startDNS(t, stdLogger(t, "challtestsrv "))
	store := db.NewMemoryStore()
	authority := ca.New(lg, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "test", ValidityPeriod: uint64(validity / time.Second)},
	})
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
	return &pebble{dirURL: srv.URL + wfe.DirectoryPath, rootsFile: rootsFile, root: root, roots: roots}
}

// startDNS runs challtestsrv's DNS server, answering 127.0.0.1 for every
// name and nothing for AAAA (the validation authority tries AAAA first).
func startDNS(t *testing.T, lg *log.Logger) string {
	t.Helper()
	ln := listen(t) // only to find a free port; challtestsrv binds by address
	addr := ln.Addr().String()
	ln.Close()
	srv, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{addr}, Log: lg})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetDefaultDNSIPv4("127.0.0.1")
	srv.SetDefaultDNSIPv6("")
	srv.Run()
	t.Cleanup(srv.Shutdown)
	waitFor(t, 5*time.Second, "the DNS stub", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// rig is a mailbox-shaped set of listeners around one Source: the web
// listener (port 80 role: HTTPHandler; port 443 role: Config("h2",
// "http/1.1")) and implicit-TLS listeners for IMAP, POP3 and submission.
type rig struct {
	pebble *pebble
	dir    string
	ln80   net.Listener
	ln443  net.Listener
	http01 atomic.Int32 // HTTP-01 validation requests seen on the port 80 role
	alpn01 atomic.Int32 // TLS-ALPN-01 validation handshakes seen on the port 443 role
}

func newRig(t *testing.T, validity time.Duration) *rig {
	r := &rig{dir: t.TempDir(), ln80: listen(t), ln443: listen(t)}
	r.pebble = startPebble(t, r.ln80.Addr().(*net.TCPAddr).Port, r.ln443.Addr().(*net.TCPAddr).Port, validity)
	return r
}

func (r *rig) options(t *testing.T) Options {
	return Options{
		Hostname:      acmeHost,
		Dir:           r.dir,
		ACMEEmail:     "postmaster@example.com",
		ACMEDirectory: r.pebble.dirURL,
		ACMECARoots:   r.pebble.rootsFile,
		Logger:        testLogger(t),
	}
}

// serveWeb serves the web roles for src: plain HTTP through HTTPHandler and
// HTTPS through Config, counting ACME validations on each.
func (r *rig) serveWeb(t *testing.T, src *Source) {
	site := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { io.WriteString(w, "webmail") })
	challenge := src.HTTPHandler(site)
	plain := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/.well-known/acme-challenge/") {
			r.http01.Add(1)
		}
		challenge.ServeHTTP(w, req)
	})}
	cfg := src.Config("h2", "http/1.1")
	get := cfg.GetCertificate
	cfg.GetCertificate = func(hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
		if slices.Equal(hello.SupportedProtos, []string{ALPNACME}) {
			r.alpn01.Add(1)
		}
		return get(hello)
	}
	secure := &http.Server{Handler: site, TLSConfig: cfg}
	go plain.Serve(r.ln80)
	go secure.ServeTLS(r.ln443, "", "")
	t.Cleanup(func() {
		plain.Close()
		secure.Close()
	})
}

// mailListeners serves IMAP, POP3 and submission roles; returns addr by ALPN id.
func mailListeners(t *testing.T, src *Source) map[string]string {
	addrs := map[string]string{}
	for _, alpn := range []string{"imap", "pop3", "smtp"} {
		addrs[alpn] = serveTLS(t, listen(t), src.Config(alpn))
	}
	return addrs
}

// verifyACME connects as a client that trusts only Pebble's root and checks
// the chain ends there, the leaf names acmeHost, and the ALPN.
func verifyACME(t *testing.T, p *pebble, addr, alpn string) *x509.Certificate {
	t.Helper()
	c, err := dial(addr, &cryptotls.Config{RootCAs: p.roots, ServerName: acmeHost, NextProtos: []string{alpn}})
	if err != nil {
		t.Fatalf("%s: %v", alpn, err)
	}
	defer c.Close()
	cs := c.ConnectionState()
	chain := cs.VerifiedChains[0]
	leaf := chain[0]
	if !chain[len(chain)-1].Equal(p.root) || len(chain) < 3 {
		t.Fatalf("%s: chain of %d does not end at Pebble's root", alpn, len(chain))
	}
	if !slices.Equal(leaf.DNSNames, []string{acmeHost}) || cs.NegotiatedProtocol != alpn {
		t.Fatalf("%s: names %v, ALPN %q", alpn, leaf.DNSNames, cs.NegotiatedProtocol)
	}
	if err := c.echo("NOOP"); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// waitACME waits until handshakes on addr verify against Pebble's root.
func waitACME(t *testing.T, p *pebble, addr string) {
	t.Helper()
	waitFor(t, obtainLimit, "a certificate from Pebble", func() bool {
		c, err := dial(addr, &cryptotls.Config{RootCAs: p.roots, ServerName: acmeHost, NextProtos: []string{"imap"}})
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func checkWeb(t *testing.T, r *rig, roots *x509.CertPool) {
	t.Helper()
	addr443 := r.ln443.Addr().String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &cryptotls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr443)
		},
	}}
	resp, err := client.Get("https://" + acmeHost + "/")
	if err != nil {
		t.Fatalf("web listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "webmail" || resp.ProtoMajor != 2 {
		t.Fatalf("web listener: %s %q", resp.Proto, body)
	}
	resp, err = http.Get("http://" + r.ln80.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "webmail" {
		t.Fatalf("HTTPHandler did not pass a plain request on: %q", body)
	}
}

// HTTP-01 end to end: the order is validated through the port 80 role, the
// certificate reaches 993/995/465 and the web listener, Status reports it,
// and after a restart it is served at once from storage.
func TestACMEHTTP01(t *testing.T) {
	r := newRig(t, 0)
	opts := r.options(t)
	opts.DisableTLSALPN01 = true
	src, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Mode() != ModeACME {
		t.Fatalf("mode %q", src.Mode())
	}
	if slices.Contains(src.Config("h2", "http/1.1").NextProtos, ALPNACME) {
		t.Error("acme-tls/1 offered with TLS-ALPN-01 disabled")
	}
	r.serveWeb(t, src)
	mail := mailListeners(t, src)

	waitACME(t, r.pebble, mail["imap"])
	var leaf *x509.Certificate
	for _, alpn := range []string{"imap", "pop3", "smtp"} {
		leaf = verifyACME(t, r.pebble, mail[alpn], alpn)
	}
	checkWeb(t, r, r.pebble.roots)
	if r.http01.Load() == 0 || r.alpn01.Load() != 0 {
		t.Fatalf("validations: HTTP-01 %d, TLS-ALPN-01 %d", r.http01.Load(), r.alpn01.Load())
	}

	st := src.Status()
	if len(st) != 2 || st[0].Source != ModeACME || !st[0].Serving || st[0].LastError != "" ||
		!strings.HasPrefix(st[0].Issuer, "Pebble Intermediate CA") ||
		!st[0].NotAfter.Equal(leaf.NotAfter) ||
		!st[0].NextRenewal.After(st[0].NotBefore) || !st[0].NextRenewal.Before(st[0].NotAfter) ||
		st[1].Source != ModeLocal || st[1].Serving {
		t.Fatalf("status %+v", st)
	}
	// ARI is on: certmagic fetched Pebble's renewal window with the
	// certificate, and Status reports the renewal time it selected in it.
	meta, err := src.acme.magic.Storage.Load(context.Background(),
		certmagic.StorageKeys.SiteMeta(src.acme.issuer.IssuerKey(), acmeHost))
	if err != nil || !strings.Contains(string(meta), `"renewal_info"`) {
		t.Fatalf("no ARI renewal info stored with the certificate: %v", err)
	}
	if ratio := leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3); st[0].NextRenewal.Equal(ratio) {
		t.Errorf("NextRenewal %v is the lifetime ratio, not the ARI selection", st[0].NextRenewal)
	}
	waitFor(t, 5*time.Second, "status.json to show the ACME certificate", func() bool {
		rep, err := ReadStatus(r.dir)
		return err == nil && rep.Mode == ModeACME && len(rep.Certificates) == 2 &&
			rep.Certificates[0].Serving && rep.Certificates[0].NotAfter.Equal(leaf.NotAfter)
	})
	if _, err := os.Stat(filepath.Join(r.dir, "acme")); err != nil {
		t.Fatalf("certmagic storage not under Dir: %v", err)
	}

	// Restart: the stored certificate is loaded before New returns.
	src.Close()
	again, err := New(context.Background(), r.options(t))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	addr := serveTLS(t, listen(t), again.Config("imap"))
	if got := verifyACME(t, r.pebble, addr, "imap"); got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatal("restart served another certificate")
	}
}

// TLS-ALPN-01 end to end: validated through the port 443 role, which offers
// acme-tls/1 next to h2 and http/1.1.
func TestACMETLSALPN01(t *testing.T) {
	r := newRig(t, 0)
	opts := r.options(t)
	opts.DisableHTTP01 = true
	src, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := src.Config("h2", "http/1.1").NextProtos; !slices.Equal(got, []string{"h2", "http/1.1", ALPNACME}) {
		t.Fatalf("web NextProtos %v", got)
	}
	if got := src.Config("imap").NextProtos; !slices.Equal(got, []string{"imap"}) {
		t.Fatalf("imap NextProtos %v", got)
	}
	r.serveWeb(t, src)
	mail := mailListeners(t, src)

	waitACME(t, r.pebble, mail["imap"])
	for _, alpn := range []string{"imap", "pop3", "smtp"} {
		verifyACME(t, r.pebble, mail[alpn], alpn)
	}
	checkWeb(t, r, r.pebble.roots)
	if r.alpn01.Load() == 0 || r.http01.Load() != 0 {
		t.Fatalf("validations: HTTP-01 %d, TLS-ALPN-01 %d", r.http01.Load(), r.alpn01.Load())
	}
}

// Renewal: with short-lived certificates, certmagic renews in the background
// (ARI on) and the next handshake gets the new certificate while a
// connection made before keeps working.
func TestACMERenewal(t *testing.T) {
	const validity = 20 * time.Second
	r := newRig(t, validity)
	opts := r.options(t)
	opts.RenewCheckInterval = 500 * time.Millisecond
	src, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r.serveWeb(t, src)
	mail := mailListeners(t, src)
	waitACME(t, r.pebble, mail["imap"])

	open, err := dial(mail["imap"], &cryptotls.Config{RootCAs: r.pebble.roots, ServerName: acmeHost, NextProtos: []string{"imap"}})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	first := open.ConnectionState().PeerCertificates[0]
	if lifetime := first.NotAfter.Sub(first.NotBefore); lifetime > validity {
		t.Fatalf("Pebble issued for %v, want %v", lifetime, validity)
	}
	// Poll without verification: on a loaded machine the poll itself may
	// run late; when the renewal happened is checked below.
	var renewed *x509.Certificate
	waitFor(t, 3*validity, "a renewed certificate", func() bool {
		if leaf := servedLeaf(t, mail["imap"], acmeHost, "imap"); leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = leaf
		}
		return renewed != nil
	})
	if !renewed.NotBefore.Before(first.NotAfter) || renewed.NotAfter.Before(first.NotAfter) {
		t.Fatalf("renewed certificate valid %v to %v, first until %v", renewed.NotBefore, renewed.NotAfter, first.NotAfter)
	}
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: r.pebble.roots, DNSName: acmeHost,
		Intermediates: intermediatesOf(t, mail["pop3"]), CurrentTime: renewed.NotBefore.Add(time.Second)}); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
	if err := open.echo("NOOP"); err != nil {
		t.Fatalf("connection from before the renewal: %v", err)
	}
}

// intermediatesOf returns the chain certificates a listener sends after its leaf.
func intermediatesOf(t *testing.T, addr string) *x509.CertPool {
	t.Helper()
	c, err := dial(addr, &cryptotls.Config{InsecureSkipVerify: true, NextProtos: []string{"pop3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pool := x509.NewCertPool()
	for _, cert := range c.ConnectionState().PeerCertificates[1:] {
		pool.AddCert(cert)
	}
	return pool
}

// A failing order (the CA cannot be reached) neither blocks New nor leaves
// listeners without a certificate: they serve the local one, and Status
// shows the error.
func TestACMEFailureFallsBackToLocal(t *testing.T) {
	dead := listen(t)
	deadURL := "https://" + dead.Addr().String() + "/dir"
	dead.Close()
	dir := t.TempDir()
	start := time.Now()
	src, err := New(context.Background(), Options{
		Hostname: acmeHost, Dir: dir, ACMEDirectory: deadURL, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// certmagic keeps retrying for 30 days; New must not wait for any of it.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("New took %v", d)
	}
	caPEM, err := src.CACertPEM()
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, listen(t), src.Config("imap"))
	c, err := dial(addr, &cryptotls.Config{RootCAs: poolOf(t, caPEM), ServerName: acmeHost, NextProtos: []string{"imap"}})
	if err != nil {
		t.Fatalf("fallback certificate: %v", err)
	}
	c.Close()

	var st []CertStatus
	waitFor(t, 10*time.Second, "the failed order in Status", func() bool {
		st = src.Status()
		return st[0].LastError != ""
	})
	if st[0].Serving || st[0].Source != ModeACME || st[0].LastErrorAt.IsZero() || !st[1].Serving || st[1].Source != ModeLocal {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, 5*time.Second, "status.json to show the failure", func() bool {
		rep, err := ReadStatus(dir)
		return err == nil && len(rep.Certificates) == 2 && rep.Certificates[0].LastError != "" && rep.Certificates[1].Serving
	})
}
