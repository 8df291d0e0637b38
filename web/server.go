// Package web is the webmail of mailbox and everything else it serves over
// HTTP: sign-in, folders, reading (HTML mail sanitized and shown in a
// sandboxed frame), writing, organising, search, live updates by
// Server-Sent Events, settings, mail client autoconfiguration (Thunderbird
// autoconfig, Outlook autodiscover), the ACME HTTP-01 challenge, /healthz
// and /metrics (Prometheus text format).
//
// Pages are rendered on the server with html/template and work without
// JavaScript; a small script embedded in the binary adds live updates,
// keyboard shortcuts and address completion. Mail is read and changed only
// through the store, and sent through its submission API.
package web

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microcosm-cc/bluemonday"

	"mailbox/internal/throttle"
	"mailbox/store"
	mtls "mailbox/tls"
)

// Defaults for zero Options fields.
const (
	// DefaultSessionIdle is how long a signed-in session lasts without use.
	DefaultSessionIdle = 24 * time.Hour
	// DefaultPageSize is the number of messages on one list page.
	DefaultPageSize = 50
	// DefaultMaxMessageBytes caps a composed message with its attachments.
	DefaultMaxMessageBytes = 25 << 20
	// DefaultReadHeaderTimeout bounds reading a request's header.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a keep-alive connection left idle.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultEventsKeepAlive is how often an idle event stream sends a
	// comment, so proxies and browsers keep it open.
	DefaultEventsKeepAlive = 25 * time.Second
)

// Ports are the ports mail clients and browsers reach this server on, as
// shown on the settings page and used for the HTTP to HTTPS redirect.
// Zero means the standard port; a negative value means the service is not
// offered.
type Ports struct {
	HTTPS         int // 443
	IMAP          int // 143, STARTTLS
	IMAPS         int // 993, implicit TLS
	POP3          int // 110, STLS
	POP3S         int // 995, implicit TLS
	Submission    int // 587, STARTTLS
	SubmissionTLS int // 465, implicit TLS
}

func (p Ports) withDefaults() Ports {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&p.HTTPS, 443)
	def(&p.IMAP, 143)
	def(&p.IMAPS, 993)
	def(&p.POP3, 110)
	def(&p.POP3S, 995)
	def(&p.Submission, 587)
	def(&p.SubmissionTLS, 465)
	return p
}

// Options configures a Server. Zero values mean the documented default.
type Options struct {
	// Store is the mail store. Required.
	Store *store.Store
	// TLS is the certificate source for ServeTLS, the ACME HTTP-01
	// challenge and the HTTP to HTTPS redirect. Nil means plain HTTP only
	// (behind a proxy that terminates TLS, or in tests).
	TLS *mtls.Source
	// Logger receives request and error logs. Nil discards them.
	Logger *slog.Logger
	// Limiter slows down failed sign-ins; share the one POP3 and IMAP use.
	// Nil means a private limiter with the default policy.
	Limiter *throttle.Limiter
	// Hostname is this server's name, shown in client settings and used
	// for Message-IDs. Empty means "localhost".
	Hostname string
	// SessionIdle ends a session unused for this long
	// (DefaultSessionIdle).
	SessionIdle time.Duration
	// PageSize is the number of messages per list page (DefaultPageSize).
	PageSize int
	// MaxMessageBytes caps an outgoing message with attachments
	// (DefaultMaxMessageBytes).
	MaxMessageBytes int64
	// ReadHeaderTimeout and IdleTimeout configure the HTTP servers
	// (DefaultReadHeaderTimeout, DefaultIdleTimeout).
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// EventsKeepAlive is the keep-alive interval of event streams
	// (DefaultEventsKeepAlive).
	EventsKeepAlive time.Duration
	// Ports are shown on the settings page; Ports.HTTPS is where plain
	// HTTP requests are redirected.
	Ports Ports
}

// Server serves the webmail. Create it with New; it is safe for
// concurrent use.
type Server struct {
	st    *store.Store
	src   *mtls.Source
	log   *slog.Logger
	lim   *throttle.Limiter
	opts  Options
	app   http.Handler // the site, with security headers
	pages *pages
	pol   *bluemonday.Policy // safe for concurrent use once built
	stats metrics

	mu      sync.Mutex
	servers []*http.Server
	closing chan struct{}
	closed  bool
}

// New returns a Server for opts.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Limiter == nil {
		opts.Limiter = throttle.New(throttle.Options{})
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.SessionIdle <= 0 {
		opts.SessionIdle = DefaultSessionIdle
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.EventsKeepAlive <= 0 {
		opts.EventsKeepAlive = DefaultEventsKeepAlive
	}
	opts.Ports = opts.Ports.withDefaults()
	srv := &Server{
		st:      opts.Store,
		src:     opts.TLS,
		log:     opts.Logger.With("proto", "http"),
		lim:     opts.Limiter,
		opts:    opts,
		pages:   loadPages(),
		pol:     newPolicy(),
		closing: make(chan struct{}),
	}
	srv.app = srv.routes()
	return srv
}

func (srv *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", srv.healthz)
	mux.HandleFunc("GET /metrics", srv.metrics)
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("GET /.well-known/autoconfig/mail/config-v1.1.xml", srv.autoconfig)
	mux.HandleFunc("GET /mail/config-v1.1.xml", srv.autoconfig)
	mux.HandleFunc("/autodiscover/autodiscover.xml", srv.autodiscover)
	mux.HandleFunc("/Autodiscover/Autodiscover.xml", srv.autodiscover)
	mux.HandleFunc("GET /login", srv.loginPage)
	mux.HandleFunc("POST /login", srv.login)
	mux.HandleFunc("POST /logout", srv.authed(srv.logout))
	mux.HandleFunc("GET /{$}", srv.authed(srv.home))
	mux.HandleFunc("GET /box/{box}", srv.authed(srv.list))
	mux.HandleFunc("GET /msg/{box}/{uid}", srv.authed(srv.message))
	mux.HandleFunc("GET /msg/{box}/{uid}/body", srv.authed(srv.body))
	mux.HandleFunc("GET /msg/{box}/{uid}/part/{part}", srv.authed(srv.part))
	mux.HandleFunc("GET /msg/{box}/{uid}/source", srv.authed(srv.source))
	mux.HandleFunc("POST /act", srv.authed(srv.act))
	mux.HandleFunc("GET /compose", srv.authed(srv.composePage))
	mux.HandleFunc("POST /compose", srv.authed(srv.compose))
	mux.HandleFunc("GET /contacts", srv.authed(srv.contacts))
	mux.HandleFunc("GET /events", srv.authed(srv.events))
	mux.HandleFunc("GET /folders", srv.authed(srv.foldersPage))
	mux.HandleFunc("POST /folders", srv.authed(srv.folders))
	mux.HandleFunc("GET /settings", srv.authed(srv.settingsPage))
	mux.HandleFunc("POST /settings", srv.authed(srv.settings))
	mux.HandleFunc("/", srv.notFound)
	return srv.secure(mux)
}

// pageCSP lets our pages load only our own script, style and frames; no
// inline script anywhere, and no framing by other sites.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// secure adds the security headers every response carries, counts and
// logs the request. Handlers that serve message content (the body frame,
// attachments) replace the CSP with a stricter one.
func (srv *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h := w.Header()
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-DNS-Prefetch-Control", "off") // links in mail must not leak lookups
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		rw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rw, r)
		srv.stats.request(rw.code)
		srv.log.Debug("request", "method", r.Method, "path", r.URL.Path, "code", rw.code,
			"dur", time.Since(start), "remote", r.RemoteAddr)
	})
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP serves the site itself, as the HTTPS listener does (no
// redirect, no ACME challenge).
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { srv.app.ServeHTTP(w, r) }

// plainHandler is what the plain-HTTP listener serves: ACME HTTP-01
// challenges first, then a redirect to HTTPS once a certificate exists,
// except for /healthz (load balancers and health checks speak HTTP). With
// HTTPS not offered (Ports.HTTPS < 0, e.g. behind a proxy that terminates
// TLS) the site is served here: a redirect would point at nothing.
func (srv *Server) plainHandler() http.Handler {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil || r.URL.Path == "/healthz" || srv.opts.Ports.HTTPS < 0 || !srv.haveCertificate() {
			srv.app.ServeHTTP(w, r)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || strings.ContainsAny(host, "/\\@") {
			host = srv.opts.Hostname
		}
		if p := srv.opts.Ports.HTTPS; p != 443 && p > 0 {
			host = net.JoinHostPort(host, strconv.Itoa(p))
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
	if srv.src == nil {
		return srv.app
	}
	return srv.src.HTTPHandler(redirect)
}

// haveCertificate reports whether HTTPS can be served with a certificate
// (always in local mode; in mode acme as soon as the local fallback or an
// ACME certificate is serving).
func (srv *Server) haveCertificate() bool {
	if srv.src == nil {
		return false
	}
	for _, c := range srv.src.Status() {
		if c.Serving {
			return true
		}
	}
	return false
}

func (srv *Server) newHTTPServer(h http.Handler) (*http.Server, error) {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: srv.opts.ReadHeaderTimeout,
		IdleTimeout:       srv.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(srv.log.Handler(), slog.LevelDebug),
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closed {
		return nil, http.ErrServerClosed
	}
	srv.servers = append(srv.servers, hs)
	return hs, nil
}

// Serve answers plain HTTP on ln (port 80 or 8080): ACME HTTP-01
// challenges, /healthz, and a redirect to HTTPS once a certificate exists
// (without a TLS source, the whole site). Connections that are already TLS
// (ln from tls.NewListener) get the site itself. It returns nil after
// Shutdown, and closes ln when it returns.
func (srv *Server) Serve(ln net.Listener) error {
	hs, err := srv.newHTTPServer(srv.plainHandler())
	if err != nil {
		ln.Close()
		return nil
	}
	return serveErr(hs.Serve(ln))
}

// ServeTLS answers HTTPS on ln, a plain TCP listener (port 443 or 8443),
// with certificates from Options.TLS, offering h2, http/1.1 and, in ACME
// mode, acme-tls/1 for TLS-ALPN-01. It returns nil after Shutdown, and
// closes ln when it returns.
func (srv *Server) ServeTLS(ln net.Listener) error {
	if srv.src == nil {
		ln.Close()
		return errors.New("web: ServeTLS needs Options.TLS")
	}
	cfg := srv.src.Config("h2", "http/1.1")
	hs, err := srv.newHTTPServer(srv.app)
	if err != nil {
		ln.Close()
		return nil
	}
	hs.TLSConfig = cfg
	return serveErr(hs.Serve(cryptotls.NewListener(ln, cfg)))
}

func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, ends event streams, and waits for
// requests in flight until ctx is done.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if !srv.closed {
		srv.closed = true
		close(srv.closing)
	}
	servers := srv.servers
	srv.mu.Unlock()
	var errs []error
	for _, hs := range servers {
		if err := hs.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fail answers a request that failed on our side: the user sees a short
// phrase and a reference; the log gets the error with the same reference.
func (srv *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		srv.notFound(w, r)
		return
	case errors.Is(err, context.Canceled):
		return
	}
	ref := newRef()
	srv.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "ref", ref, "err", err)
	srv.errorPage(w, r, http.StatusInternalServerError, fmt.Sprintf("Something went wrong on our side. Please try again later (ref %s).", ref))
}

func (srv *Server) notFound(w http.ResponseWriter, r *http.Request) {
	srv.errorPage(w, r, http.StatusNotFound, "This page or message does not exist.")
}
