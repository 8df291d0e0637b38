package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// writeBufferBytes is the size of a session's reply buffer, taken from
	// a pool while a session writes and given back when it waits for the
	// client, so idle connections hold none.
	writeBufferBytes = 32 << 10
	// copyBufferBytes is the chunk in which RETR and TOP read a message.
	copyBufferBytes = 32 << 10
	// refuseTimeout bounds the write of the refusal to a connection over
	// MaxConns or MaxConnsPerIP.
	refuseTimeout = time.Second
	// maxAcceptBackoff caps the pause after a failing Accept (EMFILE).
	maxAcceptBackoff = time.Second
)

// Server is a POP3 server. Serve may be called for several listeners; all
// methods are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	// ctx is the parent of every session's context; cancel is called
	// when Shutdown stops waiting, so store calls and login delays end.
	ctx    context.Context
	cancel context.CancelFunc

	writers sync.Pool // *bufio.Writer
	chunks  sync.Pool // *[]byte of copyBufferBytes

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	perIP     map[string]int
	wg        sync.WaitGroup // running sessions
}

// New returns a Server. opts.Store is required.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{
		opts:      opts,
		log:       opts.Logger,
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
		perIP:     map[string]int{},
	}
	srv.writers.New = func() any { return bufio.NewWriterSize(nil, writeBufferBytes) }
	srv.chunks.New = func() any { b := make([]byte, copyBufferBytes); return &b }
	return srv
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Shutdown; then it returns nil. A connection that is a *tls.Conn
// (from tls.NewListener) is POP3S: the handshake runs first and the
// session counts as secure. Serve closes ln when it returns.
func (srv *Server) Serve(ln net.Listener) error {
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		ln.Close()
		return nil
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, ln)
		srv.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if srv.isClosing() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors or a similar passing trouble:
			// wait a little instead of spinning, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), maxAcceptBackoff)
			srv.log.Warn("accept failed", "proto", "pop3", "err", err, "retry", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		srv.start(c)
	}
}

func (srv *Server) isClosing() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closing
}

// start registers a session for c and runs it, or refuses c when a
// connection limit is reached.
func (srv *Server) start(c net.Conn) {
	key := clientKey(c.RemoteAddr())
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		c.Close()
		return
	}
	if srv.opts.MaxConns > 0 && len(srv.sessions) >= srv.opts.MaxConns ||
		srv.opts.MaxConnsPerIP > 0 && srv.perIP[key] >= srv.opts.MaxConnsPerIP {
		n, perIP := len(srv.sessions), srv.perIP[key]
		srv.mu.Unlock()
		srv.refuse(c, n, perIP)
		return
	}
	sess := newSession(srv, c)
	srv.sessions[sess] = struct{}{}
	srv.perIP[key]++
	srv.wg.Add(1)
	srv.mu.Unlock()
	go func() {
		defer srv.wg.Done()
		defer func() {
			srv.mu.Lock()
			delete(srv.sessions, sess)
			if srv.perIP[key]--; srv.perIP[key] <= 0 {
				delete(srv.perIP, key)
			}
			srv.mu.Unlock()
		}()
		sess.run()
	}()
}

// refuse answers a connection over the limits and closes it. It runs in
// the accept loop: a write to a new socket does not wait for the client.
// A TLS connection is closed without a word, as a handshake for a refusal
// would cost more than the refusal saves.
func (srv *Server) refuse(c net.Conn, conns, perIP int) {
	srv.log.Warn("too many connections", "proto", "pop3", "remote", c.RemoteAddr().String(),
		"conns", conns, "conns_ip", perIP)
	if _, isTLS := c.(*tls.Conn); !isTLS {
		c.SetWriteDeadline(time.Now().Add(refuseTimeout))
		c.Write([]byte("-ERR [SYS/TEMP] too many connections, try again later\r\n"))
	}
	c.Close()
}

// Shutdown stops accepting, lets every session finish the command it is
// running (and sends its reply), then closes the connections; sessions that
// did not QUIT delete nothing. If ctx ends first, the remaining connections
// are closed at once, their store calls cancelled, and ctx's error is
// returned after they have ended.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	srv.closing = true
	for ln := range srv.listeners {
		ln.Close()
	}
	for sess := range srv.sessions {
		sess.interrupt()
	}
	srv.mu.Unlock()

	done := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	srv.cancel()
	srv.mu.Lock()
	for sess := range srv.sessions {
		sess.netConn.Close()
	}
	srv.mu.Unlock()
	<-done
	return ctx.Err()
}

// clientKey names the client for MaxConnsPerIP: its IP address, or its
// /64 for IPv6, since one host usually holds the whole prefix.
func clientKey(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// isLoopback reports whether a connection comes from this machine.
func isLoopback(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
