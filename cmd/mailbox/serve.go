package main

import (
	"context"
	"crypto/rand"
	cryptotls "crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"mailbox/imap"
	"mailbox/internal/throttle"
	"mailbox/pop3"
	"mailbox/smtp"
	"mailbox/store"
	mtls "mailbox/tls"
	"mailbox/web"
)

// server is what every protocol package's Server offers.
type server interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// deps is what a service builds its server from: the pieces shared by every
// listener of the process.
type deps struct {
	cfg     *Config
	log     *slog.Logger
	store   *store.Store
	tls     *mtls.Source
	limiter *throttle.Limiter

	pop3Server *pop3.Server  // shared by the pop3 and pop3s listeners
	imapServer *imap.Server  // shared by the imap and imaps listeners
	webServer  *web.Server   // shared by the http and https listeners
	dns        smtp.Resolver // every DNS lookup (outbound, inbound checks)

	// bound maps each listener that runs to its bound address, for
	// servers that tell clients where the others are (the webmail).
	bound map[string]string
}

// service is one [listen] key: what it runs and how its server is built.
// Adding a protocol is one entry in services().
type service struct {
	key  string // [listen] key
	what string // shown at start and by `mailbox status`
	// alpn, when set, wraps the listener in implicit TLS with this ALPN id.
	alpn string
	// serveTLS hands the raw listener to the server's ServeTLS, which does
	// TLS itself (the webmail: h2, http/1.1 and ACME's acme-tls/1).
	serveTLS bool
	// build makes the server.
	build func(d *deps) (server, error)
}

// state says whether a configured listener runs, and if not, why not.
func (svc service) state(addr string) (off string) {
	if addr == "" {
		return "off (disabled in config)"
	}
	return ""
}

func serveCommand() *command {
	return &command{
		path: "serve", maxArgs: 0,
		summary: "run the mail server",
		help: `With no configuration, serve runs a local instance: data in ./data,
hostname localhost, a certificate from a local CA ('mailbox tls ca' prints it),
and unprivileged ports (SMTP 2525, submission 5870, submissions 4650,
POP3 1100, POP3S 9950, IMAP 1430, IMAPS 9930, HTTP 8080, HTTPS 8443).
On the first start with no accounts it creates the hostname's domain and
postmaster@ that domain, and prints its password once.

SIGINT or SIGTERM shut down gracefully: listeners close, sessions finish
their command and end, the database is closed last (a second signal ends
sessions at once). SIGHUP reloads certificate files.`,
		run: func(ctx context.Context, c *cli, args []string) error {
			cfg, err := c.config()
			if err != nil {
				return err
			}
			return serve(ctx, c, cfg)
		},
	}
}

// serve runs the server until SIGINT or SIGTERM (or ctx ends).
func serve(ctx context.Context, c *cli, cfg Config) error {
	log := newLogger(c.stderr, cfg.Log, slog.LevelDebug)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()

	bound, err := bindListeners(&cfg)
	if err != nil {
		return err
	}
	serving := false
	defer func() {
		if !serving {
			closeBound(bound)
		}
	}()

	hashRelease := time.Duration(cfg.Auth.HashMemoryRelease)
	if hashRelease == 0 {
		hashRelease = -1 // "0s" in the config: never
	}
	st, err := store.Open(ctx, store.Options{Dir: cfg.DataDir, Logger: log, SendLimits: sendLimits(&cfg), HashMemoryRelease: hashRelease})
	if err != nil {
		return fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	if err := bootstrap(ctx, st, cfg.Hostname, c.stdout); err != nil {
		return err
	}

	src, err := mtls.New(ctx, tlsOptions(&cfg, log))
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	defer src.Close()

	d := &deps{
		cfg:   &cfg,
		log:   log,
		store: st,
		tls:   src,
		limiter: throttle.New(throttle.Options{
			Free:      cfg.Auth.FailedLoginFree,
			BaseDelay: time.Duration(cfg.Auth.FailedLoginDelay),
			MaxDelay:  time.Duration(cfg.Auth.FailedLoginMaxDelay),
			Window:    time.Duration(cfg.Auth.FailedLoginWindow),
		}),
	}
	running, report, err := startServers(d, bound)
	if err != nil {
		return err
	}
	serving = true // each Serve closes its listener
	runner, err := startRunner(ctx, d)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "mailbox is running as %s, data in %s\n", cfg.Hostname, cfg.DataDir)
	writeListenerReport(c.stdout, report)
	switch src.Mode() {
	case mtls.ModeLocal:
		fmt.Fprintln(c.stdout, "TLS: certificates from a local CA; 'mailbox tls ca' prints it for your devices to trust.")
	case mtls.ModeACME:
		fmt.Fprintf(c.stdout, "TLS: certificates from %s (the local certificate serves until one arrives; see 'mailbox status').\n", cfg.TLS.ACMEDirectory)
	case mtls.ModeFiles:
		fmt.Fprintf(c.stdout, "TLS: certificate from %s (re-read when it changes and on SIGHUP).\n", cfg.TLS.CertFile)
	}
	fmt.Fprintln(c.stdout, "Stop it with Ctrl-C (SIGINT) or SIGTERM.")
	// Start-up is the peak (the store hashes a dummy password with argon2id,
	// about 19 MiB, certificates are loaded); hand that memory back now
	// rather than over the next minutes, so an idle server stays small.
	debug.FreeOSMemory()

	var stopping atomic.Bool
	failed := make(chan error, len(running))
	for _, r := range running {
		go func() {
			err := r.serve(r.ln)
			if err != nil && !stopping.Load() {
				failed <- fmt.Errorf("listen.%s on %s: %w", r.key, r.ln.Addr(), err)
			}
		}()
	}

	var result error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-failed:
			log.Error("listener failed, shutting down", "err", err)
			result = err
			break wait
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if err := src.Reload(); err != nil {
					log.Error("reload certificates", "err", err)
				} else {
					log.Info("reloaded certificates")
				}
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break wait
		}
	}
	stopping.Store(true)

	// Graceful: every server stops accepting and lets its sessions finish,
	// within shutdown_timeout; a second signal cuts it short. The store
	// closes last (deferred above), after every session is gone.
	timeout := time.Duration(cfg.ShutdownTimeout)
	if timeout <= 0 {
		timeout = defaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGHUP {
					continue
				}
				log.Warn("second signal: closing sessions now", "signal", sig.String())
				cancel()
				return
			case <-sctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := runner.Shutdown(sctx); err != nil {
			log.Warn("shutdown", "queue", "outbound", "err", err)
		}
	})
	shut := map[server]bool{} // a server may serve several listeners
	for _, r := range running {
		if shut[r.srv] {
			continue
		}
		shut[r.srv] = true
		wg.Go(func() {
			if err := r.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("shutdown", "listener", r.key, "err", err)
			}
		})
	}
	wg.Wait()
	log.Info("stopped")
	return result
}

// runningListener is one listener with its server.
type runningListener struct {
	key   string
	ln    net.Listener
	srv   server
	serve func(net.Listener) error // srv.Serve, or its ServeTLS
}

// listenerState is one line of the start-up report.
type listenerState struct {
	key, addr, what, state string
}

// boundListener is one [listen] entry after binding; ln is nil when the
// listener stays off (report.state says why).
type boundListener struct {
	svc    service
	ln     net.Listener
	report listenerState
}

// bindListeners binds every listener that will run. It comes before the
// store is touched, so a busy or privileged port stops start-up with nothing
// changed; on error nothing is left open and the message names the key.
func bindListeners(cfg *Config) ([]boundListener, error) {
	addrs := map[string]string{}
	for _, l := range cfg.listeners() {
		addrs[l.key] = l.addr
	}
	var bound []boundListener
	for _, svc := range services() {
		addr := addrs[svc.key]
		b := boundListener{svc: svc, report: listenerState{key: svc.key, addr: addr, what: svc.what}}
		if b.report.state = svc.state(addr); b.report.state != "" {
			if addr == "" {
				b.report.addr = "-"
			}
			bound = append(bound, b)
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeBound(bound)
			reason := err.Error()
			var opErr *net.OpError
			if errors.As(err, &opErr) {
				reason = opErr.Err.Error() // "bind: address already in use"
			}
			hint := fmt.Sprintf("another server on this port? change listen.%s, or set it to \"\" to turn it off", svc.key)
			if errors.Is(err, syscall.EACCES) {
				hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep mailbox)"
			}
			return nil, fmt.Errorf("listen.%s = %q: %s (%s)", svc.key, addr, reason, hint)
		}
		b.ln = ln
		b.report.addr = ln.Addr().String()
		b.report.state = "up"
		bound = append(bound, b)
	}
	return bound, nil
}

func closeBound(bound []boundListener) {
	for _, b := range bound {
		if b.ln != nil {
			b.ln.Close()
		}
	}
}

// startServers builds the server of each bound listener and wraps
// implicit-TLS listeners; Serve is called by the caller.
func startServers(d *deps, bound []boundListener) ([]runningListener, []listenerState, error) {
	var running []runningListener
	var report []listenerState
	d.bound = map[string]string{}
	for _, b := range bound {
		if b.ln != nil {
			d.bound[b.svc.key] = b.ln.Addr().String()
		}
	}
	for _, b := range bound {
		report = append(report, b.report)
		if b.ln == nil {
			continue
		}
		srv, err := b.svc.build(d)
		if err != nil {
			return nil, nil, fmt.Errorf("listen.%s: %w", b.svc.key, err)
		}
		ln, serve := b.ln, srv.Serve
		if b.svc.alpn != "" {
			ln = cryptotls.NewListener(ln, d.tls.Config(b.svc.alpn))
		}
		if b.svc.serveTLS {
			ts, ok := srv.(interface{ ServeTLS(net.Listener) error })
			if !ok {
				return nil, nil, fmt.Errorf("listen.%s: %T has no ServeTLS", b.svc.key, srv)
			}
			serve = ts.ServeTLS
		}
		running = append(running, runningListener{key: b.svc.key, ln: ln, srv: srv, serve: serve})
		d.log.Info("listening", "listener", b.svc.key, "addr", b.report.addr, "what", b.svc.what)
	}
	return running, report, nil
}

func writeListenerReport(w io.Writer, report []listenerState) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range report {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", l.key, l.addr, l.state, l.what)
	}
	tw.Flush()
}

// tlsOptions maps [tls] to the certificate source's Options.
func tlsOptions(cfg *Config, log *slog.Logger) mtls.Options {
	return mtls.Options{
		Mode:          cfg.TLS.Mode,
		Hostname:      cfg.Hostname,
		ExtraNames:    cfg.TLS.ExtraNames,
		Dir:           filepath.Join(cfg.DataDir, "tls"),
		ACMEEmail:     cfg.TLS.ACMEEmail,
		ACMEDirectory: cfg.TLS.ACMEDirectory,
		ACMECARoots:   cfg.TLS.ACMECARoots,
		CertFile:      cfg.TLS.CertFile,
		KeyFile:       cfg.TLS.KeyFile,
		// A challenge needs its listener: HTTP-01 is answered on http,
		// TLS-ALPN-01 on https.
		DisableHTTP01:    cfg.Listen.HTTP == "",
		DisableTLSALPN01: cfg.Listen.HTTPS == "",
		Logger:           log,
	}
}

// bootstrap makes a fresh store usable: with no accounts at all it creates
// the hostname's domain and postmaster@ it (RFC 5321 §4.5.1 wants that
// mailbox anyway), and prints the random password once.
func bootstrap(ctx context.Context, st *store.Store, hostname string, out io.Writer) error {
	accts, err := st.Accounts(ctx)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	if len(accts) > 0 {
		return nil
	}
	domain, err := store.NormalizeDomain(hostname)
	if err != nil {
		// An IP address as hostname: no domain to create, the operator adds one.
		fmt.Fprintf(out, "No accounts yet. Add a domain and an account:\n  mailbox domain add example.org\n  mailbox user add alice@example.org\n")
		return nil
	}
	if err := st.AddDomain(ctx, domain); err != nil && !errors.Is(err, store.ErrExists) {
		return fmt.Errorf("create domain %s: %w", domain, err)
	}
	addr := "postmaster@" + domain
	pass := randomPassword()
	if _, err := st.CreateAccount(ctx, addr, pass); err != nil {
		return fmt.Errorf("create %s: %w", addr, err)
	}
	fmt.Fprintf(out, "Created account %s with password %s\n", addr, pass)
	fmt.Fprintf(out, "  (shown only this once; change it with: mailbox user passwd %s)\n", addr)
	return nil
}

// randomPassword returns 18 random bytes in URL-safe base64 (144 bits).
func randomPassword() string {
	b := make([]byte, 18)
	rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
