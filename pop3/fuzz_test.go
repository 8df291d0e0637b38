package pop3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/internal/transcript"
	"mailbox/store"
	"mailbox/store/storetest"
)

// fuzzHang is how long a fuzzed session may take after the client has sent
// everything and half-closed: far above the server's timeouts below.
const fuzzHang = 10 * time.Second

// FuzzPOP3Session feeds arbitrary bytes, as one client would send them, to
// a real session over loopback (short timeouts, TLS configured, a user with
// messages) and checks that the server neither panics nor hangs past its
// deadlines, and that nothing is deleted unless the input holds a QUIT.
// Seeds are the client lines of every transcript, one seed per connection.
func FuzzPOP3Session(f *testing.F) {
	scripts, err := transcript.Glob("testdata/*.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range scripts {
		var seed []byte
		for _, st := range s.Steps {
			switch st.Op {
			case transcript.Send, transcript.Raw:
				seed = append(seed, st.Data...)
			case transcript.Close, transcript.EOF, transcript.Conn:
				if len(seed) > 0 {
					f.Add(seed)
				}
				seed = nil
			}
		}
		if len(seed) > 0 {
			f.Add(seed)
		}
	}

	var fixture [][]byte
	for _, name := range []string{"hello.eml", "dotline.eml", "noeol.eml", "lines.eml", "headeronly.eml"} {
		data, err := os.ReadFile("testdata/mail/" + name)
		if err != nil {
			f.Fatal(err)
		}
		fixture = append(fixture, data)
	}
	st := storetest.New(f, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	for _, m := range fixture {
		deliver(f, st, alice, m)
	}
	serverTLS, _ := transcript.TLSPair(f)
	ts := startServer(f, Options{
		Store:       st,
		TLS:         serverTLS,
		Logger:      slog.New(slog.DiscardHandler), // f.Log is off limits inside the target
		Limiter:     throttle.New(throttle.Options{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}),
		AuthTimeout: time.Second,
		IdleTimeout: time.Second,
		MaxErrors:   20,
	}, "")
	ctx := context.Background()

	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			conn.SetWriteDeadline(time.Now().Add(fuzzHang))
			conn.Write(input)
			conn.(*net.TCPConn).CloseWrite()
		}()
		conn.SetReadDeadline(time.Now().Add(fuzzHang))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("session still open %s after the input ended", fuzzHang)
			}
		}
		conn.Close()
		if err := waitSessions(ts.srv, 0); err != nil {
			t.Fatal(err)
		}
		msgs, err := mailboxMessages(ctx, st, alice, store.RoleInbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) < len(fixture) && !bytes.Contains(bytes.ToUpper(input), []byte("QUIT")) {
			t.Fatalf("%d of %d messages left without a QUIT", len(msgs), len(fixture))
		}
		for i := len(msgs); i < len(fixture); i++ {
			deliver(t, st, alice, fixture[i])
		}
	})
}
