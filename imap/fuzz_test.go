package imap

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/internal/transcript"
	"mailbox/store/storetest"
)

// panicWatch is a slog handler that notes any log record about a panic
// (the library recovers a panicking command, logs it and drops the
// connection, so a panic shows only there).
type panicWatch struct{ seen *atomic.Value }

func (h panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (h panicWatch) Handle(_ context.Context, r slog.Record) error {
	text := r.Message
	r.Attrs(func(a slog.Attr) bool {
		text += " " + a.Value.String()
		return true
	})
	if strings.Contains(text, "panic") {
		h.seen.Store(text)
	}
	return nil
}
func (h panicWatch) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h panicWatch) WithGroup(string) slog.Handler      { return h }

// FuzzIMAPSession feeds arbitrary bytes, as one client would send them, to
// a real session over loopback (a user with messages, a second session
// idling on the same INBOX) and checks that the server neither panics nor
// hangs. Seeds are the client lines of every transcript.
func FuzzIMAPSession(f *testing.F) {
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
	login := "a LOGIN alice@example.test \"alice secret\"\r\nb SELECT INBOX\r\n"
	f.Add([]byte(login + "c STORE 1:* +FLAGS (\\Deleted)\r\nd EXPUNGE\r\ne FETCH 1:* (BODY[] BINARY[1] BODYSTRUCTURE)\r\n"))
	f.Add([]byte(login + "c UID MOVE 2:* Trash\r\nd SEARCH RETURN (SAVE) ALL\r\ne COPY $ Archive\r\nf FETCH * (BODY[1.2.3.MIME]<5.10>)\r\n"))

	var seen atomic.Value
	st := storetest.New(f, storetest.Fixture{
		Users:    map[string]string{alice: alicePass},
		Messages: map[string][]string{alice: testMessages(5)},
	})
	srv := New(Options{
		Store:       st,
		Logger:      slog.New(panicWatch{&seen}),
		Limiter:     throttle.New(throttle.Options{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}),
		AuthTimeout: 2 * time.Second,
		IdleTimeout: 2 * time.Second,
		AppendLimit: 1 << 16,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(ln)
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	f.Fuzz(func(t *testing.T, input []byte) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, conn)
			done <- err
		}()
		conn.Write(input)
		conn.(*net.TCPConn).CloseWrite()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			t.Fatalf("server still talking 40s after the client finished")
		}
		if p := seen.Load(); p != nil {
			t.Fatalf("server panicked: %v", p)
		}
	})
}
