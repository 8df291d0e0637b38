// Package smtp receives mail over SMTP and delivers it into the store: the
// inbound MX on port 25 (mail for local domains only, never an open relay)
// and authenticated submission on 587 (STARTTLS) and 465 (implicit TLS).
// The protocol itself is github.com/emersion/go-smtp; this package is a thin
// session over the store plus what the library leaves out (connection limits,
// deadlines that follow a streaming DATA, AUTH LOGIN, trace headers).
//
// Submission queues mail for other servers in the store (Account.Submit);
// the queue Runner delivers it (MX lookup, STARTTLS, DKIM signing, retries,
// bounces; RFC 3464, 6376, 7505), directly or through a smarthost. The MX
// checks SPF, DKIM and DMARC (RFC 7208, 6376, 7489) and records them in
// Authentication-Results (RFC 8601). RFCs: 5321 (SMTP), 1870 (SIZE),
// 2920 (PIPELINING), 3207 (STARTTLS), 4954 (AUTH), 3463 (enhanced codes),
// 3848 (ESMTPSA), 3030 (CHUNKING, through the library).
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailbox/internal/throttle"
	"mailbox/store"
)

// Mode says which service a Server provides.
type Mode int

const (
	// ModeMX is the inbound MX (port 25): mail for local domains and their
	// aliases only, no AUTH, STARTTLS offered when Options.TLS is set.
	ModeMX Mode = iota
	// ModeSubmission is message submission on port 587 (RFC 6409): AUTH
	// PLAIN or LOGIN is required before MAIL, and is offered only after
	// STARTTLS (Postfix's smtpd_tls_auth_only), unless AllowPlaintext.
	ModeSubmission
	// ModeSubmissions is submission over implicit TLS on port 465 (RFC
	// 8314): every connection is TLS from the first byte, AUTH required.
	ModeSubmissions
)

func (m Mode) String() string {
	switch m {
	case ModeMX:
		return "mx"
	case ModeSubmission:
		return "submission"
	case ModeSubmissions:
		return "submissions"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Defaults for Options. A zero field means its default.
const (
	// DefaultHostname names the server in the greeting and Received:.
	DefaultHostname = "localhost"
	// DefaultMaxMessageBytes is the largest message accepted (advertised
	// as SIZE, RFC 1870), before the trace headers we add. (go-smtp's DATA
	// reader stops one byte short: a message of exactly this size is
	// refused, one byte less fits.)
	DefaultMaxMessageBytes = 50 << 20 // 50 MiB
	// DefaultMaxRecipients is RCPT commands per message: the minimum
	// RFC 5321 §4.5.3.1.8 lets a server require of itself.
	DefaultMaxRecipients = 100
	// DefaultMaxLineBytes bounds one line, a command or a line of the
	// message body. RFC 5321 §4.5.3.1.6 says 1000 octets, but real mail
	// (unwrapped HTML, long header lines) exceeds that and Postfix accepts
	// it, so the limit is far above; a command line is buffered whole, so
	// this also bounds memory per connection.
	DefaultMaxLineBytes = 1 << 20 // 1 MiB
	// DefaultReadTimeout is how long the server waits for a command
	// (RFC 5321 §4.5.3.2.7 asks for at least 5 minutes; Postfix's
	// smtpd_timeout).
	DefaultReadTimeout = 5 * time.Minute
	// DefaultWriteTimeout bounds writing one reply.
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultDataTimeout is the longest pause in a message's data (DATA
	// or BDAT): the deadline moves forward whenever bytes arrive, so a
	// large, slow upload succeeds as long as it keeps moving (RFC 5321
	// §4.5.3.2.5 gives clients 3 minutes per block).
	DefaultDataTimeout = 5 * time.Minute
	// DefaultMaxConns bounds concurrent connections to one Server.
	DefaultMaxConns = 1000
	// DefaultMaxConnsPerIP bounds concurrent connections from one client
	// address (Postfix's smtpd_client_connection_count_limit). Loopback
	// clients are exempt, as Postfix exempts $mynetworks.
	DefaultMaxConnsPerIP = 50
	// DefaultMaxCommands is the per-connection budget of commands that
	// reach the session (MAIL, RCPT, DATA/BDAT, AUTH): about 2,500
	// one-recipient messages. Once it is spent, the transaction under way
	// is finished and the next MAIL or AUTH gets 421 and the connection
	// ends; a client reconnects and goes on.
	DefaultMaxCommands = 10_000
	// DefaultMaxErrors is how many refused MAIL, RCPT, DATA or AUTH
	// commands a connection may collect before it is closed with 421
	// (Postfix's smtpd_hard_error_limit).
	DefaultMaxErrors = 20
)

// Options configures a Server. Zero values mean the documented default;
// for MaxConns, MaxConnsPerIP, MaxCommands and MaxErrors a negative value
// means no limit.
type Options struct {
	// Store receives the mail and checks logins. Required.
	Store *store.Store
	// TLS is offered through STARTTLS (ModeMX, ModeSubmission) or spoken
	// from the first byte (ModeSubmissions, where it is required).
	TLS *tls.Config
	// Logger receives connection and mail events. Nil discards them.
	Logger *slog.Logger
	// Limiter slows down failed AUTH attempts; share one with the other
	// protocols. Nil means a private limiter with throttle's defaults.
	Limiter *throttle.Limiter
	// Hostname is our name in the greeting and in Received: headers
	// (default DefaultHostname).
	Hostname string
	// Mode is the service: ModeMX (the zero value), ModeSubmission or
	// ModeSubmissions.
	Mode Mode

	// MaxMessageBytes is the largest message in bytes (SIZE; default
	// DefaultMaxMessageBytes).
	MaxMessageBytes int64
	// MaxRecipients bounds RCPT per message (default DefaultMaxRecipients).
	MaxRecipients int
	// MaxLineBytes bounds a command or body line in bytes, line end
	// included (default DefaultMaxLineBytes).
	MaxLineBytes int
	// ReadTimeout is the wait for each command (default DefaultReadTimeout).
	ReadTimeout time.Duration
	// WriteTimeout bounds each reply (default DefaultWriteTimeout).
	WriteTimeout time.Duration
	// DataTimeout is the longest pause while message data streams in
	// (default DefaultDataTimeout).
	DataTimeout time.Duration
	// MaxConns bounds concurrent connections (default DefaultMaxConns).
	MaxConns int
	// MaxConnsPerIP bounds concurrent connections per client address,
	// loopback exempt (default DefaultMaxConnsPerIP).
	MaxConnsPerIP int
	// MaxCommands is the per-connection budget of MAIL, RCPT, DATA/BDAT
	// and AUTH commands (default DefaultMaxCommands).
	MaxCommands int
	// MaxErrors is how many refused commands end a connection (default
	// DefaultMaxErrors).
	MaxErrors int
	// AllowPlaintext allows AUTH on submission connections without TLS.
	// Off by default: like Postfix's smtpd_tls_auth_only, AUTH is offered
	// only after STARTTLS, loopback clients included.
	AllowPlaintext bool
	// Inbound, if not nil, turns on SPF, DKIM and DMARC checks of mail
	// arriving in ModeMX (see InboundPolicy).
	Inbound *InboundPolicy
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Limiter == nil {
		o.Limiter = throttle.New(throttle.Options{})
	}
	if o.Hostname == "" {
		o.Hostname = DefaultHostname
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = DefaultDataTimeout
	}
	defaultInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	defaultInt(&o.MaxConns, DefaultMaxConns)
	defaultInt(&o.MaxConnsPerIP, DefaultMaxConnsPerIP)
	defaultInt(&o.MaxCommands, DefaultMaxCommands)
	defaultInt(&o.MaxErrors, DefaultMaxErrors)
	if o.Inbound != nil {
		p := *o.Inbound
		if p.Resolver == nil {
			p.Resolver = NewResolver("", 0)
		}
		if p.Timeout <= 0 {
			p.Timeout = DefaultCheckTimeout
		}
		o.Inbound = &p
	}
	return o
}

// Server is one SMTP service (one Mode) over the store. It is safe for
// concurrent use; one Server may serve several listeners.
type Server struct {
	opts Options
	log  *slog.Logger
	lib  *gosmtp.Server

	// ctx is cancelled when Shutdown gives up waiting: store calls of
	// sessions still running then end early.
	ctx    context.Context
	cancel context.CancelFunc

	draining atomic.Bool // Shutdown has begun

	mu    sync.Mutex
	conns map[*conn]struct{}
	total int // admitted and not yet closed
	perIP map[netip.Addr]int
}

// New returns a Server for opts; Serve starts it.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	srv := &Server{
		opts:  opts,
		log:   opts.Logger.With("proto", "smtp", "mode", opts.Mode.String()),
		conns: map[*conn]struct{}{},
		perIP: map[netip.Addr]int{},
	}
	srv.ctx, srv.cancel = context.WithCancel(context.Background())

	lib := gosmtp.NewServer(gosmtp.BackendFunc(srv.newSession))
	lib.Domain = opts.Hostname
	lib.MaxMessageBytes = opts.MaxMessageBytes
	lib.MaxRecipients = opts.MaxRecipients
	lib.MaxLineLength = opts.MaxLineBytes
	lib.ReadTimeout = opts.ReadTimeout
	lib.WriteTimeout = opts.WriteTimeout
	lib.TLSConfig = opts.TLS
	// The session decides where AUTH is allowed (auth.go), so it can
	// answer RFC 3207's "530 5.7.0 Must issue a STARTTLS command first"
	// rather than the library's 523.
	lib.AllowInsecureAuth = true
	lib.ErrorLog = libLogger{srv.log}
	srv.lib = lib
	return srv
}

// Serve accepts connections on ln until Shutdown, and returns nil after
// Shutdown. In ModeSubmissions ln may be a plain TCP listener or one from
// tls.NewListener: either way connections speak TLS with Options.TLS from
// the first byte.
func (srv *Server) Serve(ln net.Listener) error {
	if srv.opts.Store == nil {
		return errors.New("smtp: Options.Store is required")
	}
	if srv.opts.Mode == ModeSubmissions && srv.opts.TLS == nil {
		return errors.New("smtp: submissions (implicit TLS) needs Options.TLS")
	}
	if srv.opts.Mode == ModeSubmission && srv.opts.TLS == nil && !srv.opts.AllowPlaintext {
		srv.log.Warn("submission without TLS: AUTH is impossible, so no mail can be submitted")
	}
	if srv.draining.Load() {
		ln.Close()
		return nil
	}
	srv.log.Info("listening", "addr", ln.Addr().String())
	err := srv.lib.Serve(&listener{Listener: ln, srv: srv})
	if errors.Is(err, gosmtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets each session finish the command it is in
// (a message whose data is streaming is received and answered), ends idle
// sessions with a 421, and waits for them. If ctx ends first it closes the
// rest and returns ctx's error.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.draining.Store(true)
	srv.mu.Lock()
	for c := range srv.conns {
		c.wake()
	}
	srv.mu.Unlock()
	err := srv.lib.Shutdown(ctx)
	if errors.Is(err, gosmtp.ErrServerClosed) {
		err = nil
	}
	if ctx.Err() != nil {
		// go-smtp's Close does nothing after its Shutdown, so close the
		// connections ourselves; their sessions end on the read error.
		srv.cancel()
		srv.mu.Lock()
		rest := make([]*conn, 0, len(srv.conns))
		for c := range srv.conns {
			rest = append(rest, c)
		}
		srv.mu.Unlock()
		for _, c := range rest {
			c.Close()
		}
		return ctx.Err()
	}
	srv.cancel()
	return err
}

// listener admits connections under MaxConns and MaxConnsPerIP and wraps
// each one in a *conn below any TLS layer.
type listener struct {
	net.Listener
	srv *Server
}

// rejectTimeout bounds writing the 421 to a client over a limit.
const rejectTimeout = 5 * time.Second

func (l *listener) Accept() (net.Conn, error) {
	srv := l.srv
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		raw, implicitTLS := nc, srv.opts.Mode == ModeSubmissions
		if tc, ok := nc.(*tls.Conn); ok {
			// A tls.Listener's conn has not shaken hands yet; rebuild it
			// over our wrapper so deadlines and byte counts see the wire.
			raw, implicitTLS = tc.NetConn(), true
		}
		ip := remoteIP(raw)
		if !srv.admit(ip) {
			srv.log.Warn("connection refused: too many connections", "remote", ip.String())
			go reject(raw, implicitTLS)
			continue
		}
		c := newConn(srv, raw, ip)
		if implicitTLS {
			if srv.opts.TLS == nil {
				c.log.Error("implicit TLS listener but no Options.TLS")
				c.Close()
				continue
			}
			return tls.Server(c, srv.opts.TLS), nil
		}
		return c, nil
	}
}

// reject tells a client over a connection limit to come back later. On an
// implicit-TLS port it just closes: a handshake would cost more than the
// connection is worth.
func reject(nc net.Conn, implicitTLS bool) {
	defer nc.Close()
	if implicitTLS {
		return
	}
	nc.SetWriteDeadline(time.Now().Add(rejectTimeout))
	fmt.Fprintf(nc, "421 4.7.0 too many connections, try again later\r\n")
}

// admit counts a new connection from ip, or reports false if a limit is
// reached.
func (srv *Server) admit(ip netip.Addr) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if max := srv.opts.MaxConns; max > 0 && srv.total >= max {
		return false
	}
	key := ipKey(ip)
	if max := srv.opts.MaxConnsPerIP; max > 0 && !ip.IsLoopback() && srv.perIP[key] >= max {
		return false
	}
	srv.total++
	srv.perIP[key]++
	return true
}

// ipKey is what MaxConnsPerIP counts: the address, or for IPv6 its /64,
// since one host usually has the whole prefix.
func ipKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

func (srv *Server) track(c *conn) {
	srv.mu.Lock()
	srv.conns[c] = struct{}{}
	srv.mu.Unlock()
}

func (srv *Server) forget(c *conn) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	delete(srv.conns, c)
	srv.total--
	key := ipKey(c.ip)
	if srv.perIP[key]--; srv.perIP[key] <= 0 {
		delete(srv.perIP, key)
	}
}

func remoteIP(nc net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// libLogger carries go-smtp's own diagnostics (failed handshakes, broken
// connections, recovered panics) into our logger.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(format string, v ...any) { l.print(fmt.Sprintf(format, v...)) }
func (l libLogger) Println(v ...any)               { l.print(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (l libLogger) print(msg string) {
	if strings.HasPrefix(msg, "panic") {
		l.log.Error("go-smtp: " + msg)
		return
	}
	l.log.Debug("go-smtp: " + msg)
}
