// Package imap serves the shared store over IMAP4rev2 and IMAP4rev1
// (RFC 9051, RFC 3501) with IDLE and the extensions go-imap's imapserver
// can advertise, as a backend of github.com/emersion/go-imap/v2/imapserver.
// Wire parsing is the library's; this package maps each command onto the
// store and keeps every selected mailbox live from the store's events.
//
// One imapserver.MailboxTracker per mailbox is shared by every session of
// the process. It is fed by one store subscription per logged-in account
// (see state.go), so a message delivered over SMTP, a POP3 deletion or a
// flag set by another session reaches every selected session as EXISTS,
// EXPUNGE or FETCH FLAGS.
package imap

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/internal/throttle"
	"mailbox/store"
)

const (
	// DefaultIdleTimeout is how long an authenticated session may stay
	// silent, IDLE included, before it is logged out. RFC 9051 §5.4: at
	// least 30 minutes. (The library also ends a connection silent for
	// 35 minutes, so a longer value has no effect.)
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultAuthTimeout is how long a connection may take from greeting
	// to successful login. (The library also drops a client silent for 30
	// seconds before login.)
	DefaultAuthTimeout = time.Minute
	// DefaultMaxConns bounds concurrent connections to one Server.
	DefaultMaxConns = 5000
	// DefaultMaxConnsPerIP bounds concurrent connections from one client
	// address (IPv6 counted per /64).
	DefaultMaxConnsPerIP = 200
	// DefaultAppendLimit is the largest message APPEND accepts, in bytes
	// (advertised as APPENDLIMIT, RFC 7889).
	DefaultAppendLimit = 50 << 20
	// DefaultAppendMemory bounds the bytes of all APPEND literals held in
	// memory at once across the server; further APPENDs wait.
	DefaultAppendMemory = 256 << 20
	// DefaultHostname names the server in greetings and logs.
	DefaultHostname = "localhost"
	// DefaultWriteTimeout bounds each write to a client: one that reads
	// nothing for this long is disconnected.
	DefaultWriteTimeout = time.Minute
	// DefaultShutdownGrace is how long Shutdown waits for a command in
	// progress when its context has no deadline.
	DefaultShutdownGrace = 10 * time.Second
	// DefaultMaxPendingUpdates bounds the updates (EXISTS, EXPUNGE, FETCH
	// FLAGS) kept for a selected session that does not read them: about
	// 150 bytes each, so ~1.5 MiB per silent session (see backlog.go).
	DefaultMaxPendingUpdates = 10_000
	// DefaultPendingGrace is how long a session over MaxPendingUpdates
	// may go without reading its updates before it is disconnected.
	DefaultPendingGrace = 30 * time.Second
)

// Options configures a Server. Zero values mean the documented default.
type Options struct {
	// Store holds the mail. Required.
	Store *store.Store
	// TLS is offered with STARTTLS on plain listeners; nil disables
	// STARTTLS. For IMAPS pass a TLS listener to Serve.
	TLS *tls.Config
	// Logger receives connection logs; nil discards them.
	Logger *slog.Logger
	// Limiter slows down repeated failed logins; share it with POP3 and
	// SMTP. Nil means a limiter of this server alone.
	Limiter *throttle.Limiter
	// Hostname names the server in its logs (default DefaultHostname);
	// go-imap's greeting has no room for it.
	Hostname string
	// AllowPlaintext allows LOGIN and AUTHENTICATE on unencrypted
	// connections from any address. Without it they are refused
	// (LOGINDISABLED) except on loopback.
	AllowPlaintext bool
	// IdleTimeout (default DefaultIdleTimeout), AuthTimeout (default
	// DefaultAuthTimeout): see the constants.
	IdleTimeout, AuthTimeout time.Duration
	// MaxConns (default DefaultMaxConns) and MaxConnsPerIP (default
	// DefaultMaxConnsPerIP) bound concurrent connections; a connection
	// over either limit gets "* BYE" and is closed.
	MaxConns, MaxConnsPerIP int
	// AppendLimit is the largest APPEND in bytes (default
	// DefaultAppendLimit); an account's quota lowers it further.
	AppendLimit int64
	// AppendMemory bounds APPEND literals held at once, in bytes (default
	// DefaultAppendMemory, at least AppendLimit).
	AppendMemory int64
	// WriteTimeout bounds each write to a client (default
	// DefaultWriteTimeout).
	WriteTimeout time.Duration
	// MaxPendingUpdates (default DefaultMaxPendingUpdates) bounds the
	// updates queued for a selected session between two reads of them
	// (a command or IDLE); a session past it that has not read them for
	// PendingGrace (default DefaultPendingGrace) and is not running a
	// command gets "* BYE" and is disconnected.
	MaxPendingUpdates int
	PendingGrace      time.Duration
}

// Server is an IMAP server over the store. It is safe for concurrent use.
type Server struct {
	opts    Options
	log     *slog.Logger
	limiter *throttle.Limiter
	reg     *registry
	appends *byteSemaphore

	// Three library servers, fed connections through chanListeners:
	// strict refuses plaintext login, lax allows it (loopback, or
	// AllowPlaintext), implicit serves connections already under TLS
	// (IMAPS). Every connection is wrapped in a bufConn, which hides
	// *tls.Conn from the library; hence the per-server settings.
	strict, lax, implicit       *imapserver.Server
	strictLn, laxLn, implicitLn *chanListener
	bufs                        *sync.Pool
	startOnce                   sync.Once
	libDone                     sync.WaitGroup

	nextID atomic.Uint64

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	perIP     map[string]int
	idle      *sync.Cond // signalled when a session ends
}

// New returns a Server for opts.
func New(opts Options) *Server {
	if opts.Hostname == "" {
		opts.Hostname = DefaultHostname
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.AuthTimeout <= 0 {
		opts.AuthTimeout = DefaultAuthTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.MaxConnsPerIP <= 0 {
		opts.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if opts.AppendLimit <= 0 {
		opts.AppendLimit = DefaultAppendLimit
	}
	if opts.AppendLimit > 1<<32-1 {
		opts.AppendLimit = 1<<32 - 1 // APPENDLIMIT is a number (uint32) in the library
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MaxPendingUpdates <= 0 {
		opts.MaxPendingUpdates = DefaultMaxPendingUpdates
	}
	if opts.PendingGrace <= 0 {
		opts.PendingGrace = DefaultPendingGrace
	}
	if opts.AppendMemory <= 0 {
		opts.AppendMemory = DefaultAppendMemory
	}
	opts.AppendMemory = max(opts.AppendMemory, opts.AppendLimit)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limiter := opts.Limiter
	if limiter == nil {
		limiter = throttle.New(throttle.Options{})
	}
	srv := &Server{
		opts:       opts,
		log:        log,
		limiter:    limiter,
		appends:    newByteSemaphore(opts.AppendMemory),
		listeners:  map[net.Listener]struct{}{},
		sessions:   map[*session]struct{}{},
		perIP:      map[string]int{},
		strictLn:   newChanListener(),
		laxLn:      newChanListener(),
		implicitLn: newChanListener(),
		bufs:       newBufPool(),
	}
	srv.idle = sync.NewCond(&srv.mu)
	srv.reg = newRegistry(opts.Store, log)
	libOpts := func(tlsConfig *tls.Config, insecure bool) *imapserver.Options {
		return &imapserver.Options{
			NewSession:   srv.newSession,
			Caps:         capabilities(),
			Logger:       libLogger{log},
			TLSConfig:    tlsConfig,
			InsecureAuth: insecure,
		}
	}
	srv.strict = imapserver.New(libOpts(opts.TLS, false))
	srv.lax = imapserver.New(libOpts(opts.TLS, true))
	srv.implicit = imapserver.New(libOpts(nil, true))
	return srv
}

// capabilities are what the library advertises for us; each is
// implemented by session (see the tests named after each).
func capabilities() imap.CapSet {
	return imap.CapSet{
		imap.CapIMAP4rev2:        {},
		imap.CapIMAP4rev1:        {},
		imap.CapNamespace:        {},
		imap.CapUIDPlus:          {},
		imap.CapESearch:          {},
		imap.CapSearchRes:        {},
		imap.CapListExtended:     {},
		imap.CapListStatus:       {},
		imap.CapMove:             {},
		imap.CapStatusSize:       {},
		imap.CapChildren:         {},
		imap.CapBinary:           {},
		imap.CapSpecialUse:       {},
		imap.CapCreateSpecialUse: {},
		imap.CapLiteralPlus:      {},
		imap.CapUnauthenticate:   {},
		imap.CapAppendLimit:      {},
	}
}

// Serve accepts connections on ln until Shutdown. A TLS listener serves
// IMAPS (implicit TLS); a plain one offers STARTTLS when Options.TLS is
// set.
func (srv *Server) Serve(ln net.Listener) error {
	srv.startOnce.Do(func() {
		for _, p := range []struct {
			lib *imapserver.Server
			ln  *chanListener
		}{{srv.strict, srv.strictLn}, {srv.lax, srv.laxLn}, {srv.implicit, srv.implicitLn}} {
			srv.libDone.Add(1)
			go func() {
				defer srv.libDone.Done()
				if err := p.lib.Serve(p.ln); err != nil {
					srv.log.Error("imap serve", "err", err)
				}
			}()
		}
	})
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		return errors.New("imap: server closed")
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	srv.log.Info("imap listening", "addr", ln.Addr().String(), "host", srv.opts.Hostname)
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, ln)
		srv.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			srv.mu.Lock()
			closing := srv.closing
			srv.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				srv.log.Warn("imap accept", "err", err, "retry", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("imap accept: %w", err)
		}
		delay = 0
		_, isTLS := c.(*tls.Conn)
		bc := newBufConn(c, srv.opts.WriteTimeout, srv.bufs)
		bc.tlsDone = isTLS
		if !isTLS && srv.opts.TLS != nil {
			bc.startTLS = srv.startTLS
		}
		switch {
		case isTLS:
			srv.implicitLn.push(bc)
		case srv.opts.AllowPlaintext || isLoopback(c.RemoteAddr()):
			srv.laxLn.push(bc)
		default:
			srv.strictLn.push(bc)
		}
	}
}

// startTLS carries out a STARTTLS that bufConn took over (conn.go) after
// answering OK: the TLS handshake on the network connection, whose
// first bytes may already have been read (leftover), then a new library
// connection on the implicit-TLS server, whose greeting is not sent.
// Doing it here rather than in the library keeps the connection's input
// in plain text under bufConn's literal guard.
func (srv *Server) startTLS(raw net.Conn, leftover []byte) {
	var c net.Conn = raw
	if len(leftover) > 0 {
		c = &prefixedConn{Conn: raw, r: io.MultiReader(bytes.NewReader(leftover), raw)}
	}
	tc := tls.Server(c, srv.opts.TLS)
	go func() {
		tc.SetDeadline(time.Now().Add(srv.opts.AuthTimeout))
		if err := tc.Handshake(); err != nil {
			srv.log.Debug("imap starttls handshake", "remote", raw.RemoteAddr().String(), "err", err)
			raw.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		bc := newBufConn(tc, srv.opts.WriteTimeout, srv.bufs)
		bc.tlsDone, bc.dropGreeting = true, true
		srv.implicitLn.push(bc)
	}()
}

// prefixedConn reads bytes already taken from the connection first.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Shutdown stops accepting, sends "* BYE" to every session once its
// command in progress has finished, and waits for the sessions to end or
// ctx to be done; then it closes whatever is left.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	srv.closing = true
	for ln := range srv.listeners {
		ln.Close()
	}
	sessions := make([]*session, 0, len(srv.sessions))
	for s := range srv.sessions {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()
	srv.strictLn.Close()
	srv.laxLn.Close()
	srv.implicitLn.Close()
	// The library servers stop accepting now; wait for that before
	// closing them, so their Close never overlaps their Serve.
	srv.libDone.Wait()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultShutdownGrace)
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.shutdown(ctx)
		}()
	}
	wg.Wait()

	// Wait for the sessions to run their Close.
	done := make(chan struct{})
	go func() {
		srv.mu.Lock()
		for len(srv.sessions) > 0 && ctx.Err() == nil {
			srv.idle.Wait()
		}
		srv.mu.Unlock()
		close(done)
	}()
	stop := context.AfterFunc(ctx, func() {
		srv.mu.Lock()
		srv.idle.Broadcast()
		srv.mu.Unlock()
	})
	<-done
	stop()
	srv.strict.Close()
	srv.lax.Close()
	srv.implicit.Close()
	srv.reg.closeAll()
	return ctx.Err()
}

// newSession is the library's NewSession hook: it checks the connection
// limits and creates the session.
func (srv *Server) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	remote := c.NetConn().RemoteAddr()
	ipKey := clientKey(remote)
	srv.mu.Lock()
	switch {
	case srv.closing:
		srv.mu.Unlock()
		return nil, nil, byeError("Server shutting down")
	case len(srv.sessions) >= srv.opts.MaxConns:
		srv.mu.Unlock()
		srv.log.Warn("imap connection limit", "remote", remote.String(), "limit", srv.opts.MaxConns)
		return nil, nil, byeError("Too many connections, try again later")
	case srv.perIP[ipKey] >= srv.opts.MaxConnsPerIP:
		srv.mu.Unlock()
		srv.log.Warn("imap per-address connection limit", "remote", remote.String(), "limit", srv.opts.MaxConnsPerIP)
		return nil, nil, byeError("Too many connections from your address")
	}
	id := fmt.Sprintf("i%x", srv.nextID.Add(1))
	sess := newSession(srv, c, id, ipKey)
	srv.sessions[sess] = struct{}{}
	srv.perIP[ipKey]++
	srv.mu.Unlock()
	sess.log.Debug("imap connect")
	return sess, nil, nil
}

// forget removes a session that has ended.
func (srv *Server) forget(sess *session) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if _, ok := srv.sessions[sess]; !ok {
		return
	}
	delete(srv.sessions, sess)
	if srv.perIP[sess.ipKey]--; srv.perIP[sess.ipKey] <= 0 {
		delete(srv.perIP, sess.ipKey)
	}
	srv.idle.Broadcast()
}

func byeError(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeBye, Text: text}
}

func isLoopback(a net.Addr) bool {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	return false
}

// clientKey names a client address for per-address limits: the IP, or
// the /64 of an IPv6 address.
func clientKey(a net.Addr) string {
	host := a.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return host
}

// chanListener hands accepted connections to a library server.
type chanListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// libLogger adapts the library's Printf logging. It reports client I/O
// errors (most of what it logs) at debug level and panics at error.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	if strings.Contains(msg, "panic") {
		l.log.Error("imap library", "err", msg)
		return
	}
	l.log.Debug("imap library", "err", msg)
}

// byteSemaphore bounds the bytes held by APPEND literals at once.
type byteSemaphore struct {
	mu   sync.Mutex
	cond *sync.Cond
	free int64
}

func newByteSemaphore(n int64) *byteSemaphore {
	s := &byteSemaphore{free: n}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// acquire takes n bytes, waiting until they are free or ctx is done.
func (s *byteSemaphore) acquire(ctx context.Context, n int64) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.free < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.cond.Wait()
	}
	s.free -= n
	return nil
}

func (s *byteSemaphore) release(n int64) {
	s.mu.Lock()
	s.free += n
	s.cond.Broadcast()
	s.mu.Unlock()
}
