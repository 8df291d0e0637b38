package web

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"mailbox/store/storetest"
	mtls "mailbox/tls"
)

// TestPlainHTTPWithoutHTTPS: with the HTTPS listener off (a proxy in front
// terminates TLS), plain HTTP serves the sign-in page instead of
// redirecting to a port nobody answers.
func TestPlainHTTPWithoutHTTPS(t *testing.T) {
	src, err := mtls.New(context.Background(), mtls.Options{Mode: mtls.ModeLocal, Hostname: "localhost", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: pass}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: st, TLS: src, Logger: testLogger(t), Ports: Ports{HTTPS: -1}})
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	noFollow := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &http.Client{CheckRedirect: noFollow, Timeout: 10 * time.Second}
	res, err := c.Get(fmt.Sprintf("http://%s/login", ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /login over HTTP with HTTPS off = %d %q, want 200", res.StatusCode, res.Header.Get("Location"))
	}
}
