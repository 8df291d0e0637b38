package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailbox/store/storetest"
	mtls "mailbox/tls"
)

// TestListeners runs Serve and ServeTLS on loopback with a local-CA
// certificate: plain HTTP redirects to HTTPS (except /healthz), HTTPS
// serves the site with Secure cookies and HSTS, and Shutdown stops both.
func TestListeners(t *testing.T) {
	ctx := context.Background()
	src, err := mtls.New(ctx, mtls.Options{Mode: mtls.ModeLocal, Hostname: "localhost", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: pass}})
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := tlsLn.Addr().(*net.TCPAddr).Port
	// cmd/mailbox may also wrap a listener in TLS itself and call Serve.
	wrappedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: st, TLS: src, Logger: testLogger(t), Ports: Ports{HTTPS: tlsPort}})
	done := make(chan error, 3)
	go func() { done <- srv.Serve(plainLn) }()
	go func() { done <- srv.ServeTLS(tlsLn) }()
	go func() { done <- srv.Serve(tls.NewListener(wrappedLn, src.Config("h2", "http/1.1"))) }()

	noFollow := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	plain := &http.Client{CheckRedirect: noFollow, Timeout: 10 * time.Second}
	res, err := plain.Get(fmt.Sprintf("http://localhost:%d/box/1?x=y", plainLn.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if want := fmt.Sprintf("https://localhost:%d/box/1?x=y", tlsPort); res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != want {
		t.Fatalf("redirect = %d %q, want %q", res.StatusCode, res.Header.Get("Location"), want)
	}
	res, err = plain.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", plainLn.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("healthz over http = %d", res.StatusCode)
	}

	caPEM, err := src.CACertPEM()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	jar, _ := cookiejar.New(nil)
	secure := &http.Client{Jar: jar, CheckRedirect: noFollow, Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}, ForceAttemptHTTP2: true}}
	base := fmt.Sprintf("https://localhost:%d", tlsPort)
	res, err = secure.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.Header.Get("Strict-Transport-Security") == "" || res.ProtoMajor != 2 {
		t.Fatalf("https login page: proto %s, headers %v", res.Proto, res.Header)
	}
	tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(b))[1]
	res, err = secure.PostForm(base+"/login", url.Values{"csrf": {tok}, "address": {alice}, "password": {pass}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var secureCookie bool
	for _, c := range res.Cookies() {
		if c.Name == sessionCookie {
			secureCookie = c.Secure
		}
	}
	if res.StatusCode != http.StatusSeeOther || !secureCookie || !strings.Contains(res.Header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("https login = %d, secure cookie %v", res.StatusCode, secureCookie)
	}

	res, err = secure.Get(fmt.Sprintf("https://localhost:%d/static/app.css", wrappedLn.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 2 {
		t.Fatalf("Serve on a TLS listener = %d %s", res.StatusCode, res.Proto)
	}

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-done; err != nil {
			t.Fatalf("serve returned %v", err)
		}
	}
}
