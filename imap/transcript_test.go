package imap

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/internal/transcript"
	"mailbox/store"
	"mailbox/store/storetest"
)

// TestTranscripts replays every testdata/*.txt against a fresh store and
// server. Setup lines:
//
//	@user ADDR PASS          create an account (alice and bob exist)
//	@deliver ADDR N          deliver N generated messages to ADDR's INBOX
//	@deliver ADDR FILE       deliver testdata/mail/FILE
//	@appendlimit BYTES       Options.AppendLimit
//	@remote HOST:PORT        clients appear to connect from this address
//	@starttls                offer STARTTLS (the runner's "-- tls" works)
//	@idletimeout DURATION    Options.IdleTimeout
//	@authtimeout DURATION    Options.AuthTimeout
//	@maxconns N              Options.MaxConns
func TestTranscripts(t *testing.T) {
	scripts, err := transcript.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no transcripts in testdata")
	}
	for _, s := range scripts {
		t.Run(strings.TrimSuffix(filepath.Base(s.Name), ".txt"), func(t *testing.T) {
			t.Parallel()
			h := &harness{t: t}
			h.st = storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePass, bob: bobPass}})
			h.opts = Options{Store: h.st, Limiter: throttle.New(throttle.Options{BaseDelay: 5 * time.Millisecond, MaxDelay: 20 * time.Millisecond})}
			r := &transcript.Runner{Dial: h.dial, Setup: h.setup}
			h.runner = r
			r.Test(t, s)
		})
	}
}

type harness struct {
	t      *testing.T
	st     *store.Store
	opts   Options
	runner *transcript.Runner
	remote string

	once sync.Once
	srv  *Server
	addr string
}

func (h *harness) setup(name string, args []string) error {
	st := h.st
	switch name {
	case "user":
		if len(args) != 2 {
			return fmt.Errorf("@user ADDR PASS")
		}
		_, err := st.CreateAccount(context.Background(), args[0], args[1])
		return err
	case "deliver":
		if len(args) != 2 {
			return fmt.Errorf("@deliver ADDR N|FILE")
		}
		if n, err := strconv.Atoi(args[1]); err == nil {
			for i := range n {
				storetest.Deliver(h.t, st, args[0], storetest.Message("carol@elsewhere.test", args[0], fmt.Sprintf("message %d", i+1), fmt.Sprintf("body of message %d", i+1)))
			}
			return nil
		}
		b, err := os.ReadFile(filepath.Join("testdata", "mail", args[1]))
		if err != nil {
			return err
		}
		storetest.Deliver(h.t, st, args[0], string(b))
		return nil
	case "appendlimit":
		n, err := strconv.ParseInt(args[0], 10, 64)
		h.opts.AppendLimit = n
		return err
	case "remote":
		h.remote = args[0]
		return nil
	case "starttls":
		server, client := transcript.TLSPair(h.t)
		h.opts.TLS = server
		h.runner.TLS = client
		return nil
	case "idletimeout", "authtimeout":
		d, err := time.ParseDuration(args[0])
		if name == "idletimeout" {
			h.opts.IdleTimeout = d
		} else {
			h.opts.AuthTimeout = d
		}
		return err
	case "maxconns":
		n, err := strconv.Atoi(args[0])
		h.opts.MaxConns = n
		return err
	}
	return fmt.Errorf("unknown setup @%s", name)
}

// dial starts the server on first use (after every @ line ran).
func (h *harness) dial() (net.Conn, error) {
	h.once.Do(func() {
		h.srv = New(h.opts)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			h.t.Fatal(err)
		}
		h.addr = ln.Addr().String()
		var l net.Listener = ln
		if h.remote != "" {
			l = fakeRemoteListener{ln, h.remote}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.srv.Serve(l)
		}()
		h.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			h.srv.Shutdown(ctx)
			<-done
		})
	})
	return net.DialTimeout("tcp", h.addr, 5*time.Second)
}

// fakeRemoteListener makes connections appear to come from remote.
type fakeRemoteListener struct {
	net.Listener
	remote string
}

func (l fakeRemoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveTCPAddr("tcp", l.remote)
	if err != nil {
		c.Close()
		return nil, err
	}
	return fakeRemoteConn{c, addr}, nil
}

type fakeRemoteConn struct {
	net.Conn
	remote net.Addr
}

func (c fakeRemoteConn) RemoteAddr() net.Addr { return c.remote }
