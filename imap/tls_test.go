package imap

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mailbox/internal/transcript"
	"mailbox/store/storetest"
)

// IMAPS: a TLS listener serves implicit TLS; login works from any
// address, and STARTTLS is not offered on it.
func TestImplicitTLS(t *testing.T) {
	serverTLS, clientTLS := transcript.TLSPair(t)
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePass}, Messages: map[string][]string{alice: testMessages(1)}})
	srv := New(Options{Store: st, TLS: serverTLS, Logger: testLogger(t)})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(fakeRemoteListener{raw, "198.51.100.9:4000"}, serverTLS)
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	c, err := imapclient.DialTLS(raw.Addr().String(), &imapclient.Options{TLSConfig: clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if caps.Has(imap.CapStartTLS) || caps.Has(imap.CapLoginDisabled) || !caps.Has("AUTH=PLAIN") {
		t.Fatalf("IMAPS capabilities = %v", caps)
	}
	if err := c.Login(alice, alicePass).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("SELECT over IMAPS: %+v, %v", sel, err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}
