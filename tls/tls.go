// Package tls is the one certificate source for every mailbox listener:
// certificates from an ACME CA (through certmagic), from files the operator
// provides, or from a local CA it creates for a home lab, all served through
// the same GetCertificate path of one base crypto/tls configuration.
// Listeners, STARTTLS and the HTTP routing of ACME challenges are left to the
// protocol packages; this package only hands them configs and a handler.
//
// Every config it returns requires TLS 1.2 or later with AEAD cipher suites
// and forward secrecy only, and carries the per-service ALPN protocol that
// RFC 9325 §3.8 recommends for implicit-TLS ports ("imap", "pop3", "smtp").
//
// Everything lives under Options.Dir: local/ca.pem (local CA certificate and
// key), local/ca.crt (the CA certificate users install), local/leaf.pem (the
// local certificate), acme/ (certmagic's storage: account, certificates,
// ARI data) and status.json (see ReadStatus). certmagic's zap logging is
// bridged into the caller's slog.Logger here, so no other package sees zap.
package tls

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Modes select where certificates come from.
const (
	ModeACME  = "acme"  // obtain and renew from an ACME CA (Let's Encrypt by default)
	ModeFiles = "files" // serve Options.CertFile and Options.KeyFile, reloaded on change
	ModeLocal = "local" // issue from a local CA kept under Options.Dir
)

// Defaults for zero Options fields.
const (
	// DefaultACMEDirectory is Let's Encrypt's production directory.
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
	// DefaultRenewCheckInterval is how often ACME and local certificates are
	// checked for renewal (certmagic's own default).
	DefaultRenewCheckInterval = 10 * time.Minute
	// DefaultFilesCheckInterval is how often mode "files" looks at the
	// certificate and key files for changes.
	DefaultFilesCheckInterval = 5 * time.Second
	// DefaultLocalLeafLifetime is the validity of a leaf certificate issued by
	// the local CA; it is renewed when a third of it is left.
	DefaultLocalLeafLifetime = 90 * 24 * time.Hour
	// DefaultLocalCALifetime is the validity of a newly created local CA.
	DefaultLocalCALifetime = 10 * 365 * 24 * time.Hour
	// DefaultStartWait bounds how long New waits for ACME certificates that
	// already sit in storage to be loaded, so the first handshakes after a
	// restart get them rather than the local fallback. New never waits for
	// the network beyond this.
	DefaultStartWait = 5 * time.Second
)

// ALPNACME is the ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
const ALPNACME = "acme-tls/1"

// Options configures a Source. Only Hostname and Dir are required.
type Options struct {
	// Mode is ModeACME, ModeFiles or ModeLocal. Empty means DefaultMode(Hostname).
	Mode string
	// Hostname is the primary host name every certificate covers; clients
	// that send no SNI get its certificate.
	Hostname string
	// ExtraNames are more DNS names (or IP addresses, mode local only) to cover.
	// In mode acme each name gets its own certificate.
	ExtraNames []string
	// Dir holds everything this package writes: the local CA and leaf
	// (Dir/local), certmagic's storage (Dir/acme). Created with mode 0700.
	Dir string

	// ACMEEmail is the ACME account contact address; empty registers an
	// account without one.
	ACMEEmail string
	// ACMEDirectory is the ACME directory URL; empty means DefaultACMEDirectory.
	// Against Let's Encrypt production, retries after a failure go to Let's
	// Encrypt staging first (certmagic's behaviour) to spare rate limits.
	ACMEDirectory string
	// ACMECARoots is the path of a PEM file with extra roots trusted when
	// talking to the ACME directory (a private CA or a test CA such as Pebble),
	// on top of the system roots.
	ACMECARoots string
	// DisableHTTP01 and DisableTLSALPN01 turn a challenge type off, for a host
	// whose port 80 (HTTP-01) or 443 (TLS-ALPN-01) is not reachable. At least
	// one must stay enabled in mode acme.
	DisableHTTP01    bool
	DisableTLSALPN01 bool

	// CertFile and KeyFile are PEM files for mode files: the certificate chain
	// (leaf first) and its private key.
	CertFile, KeyFile string

	// RenewCheckInterval is how often certificates are checked for renewal.
	// Zero means DefaultRenewCheckInterval.
	RenewCheckInterval time.Duration
	// FilesCheckInterval is how often mode files polls CertFile and KeyFile.
	// Zero means DefaultFilesCheckInterval.
	FilesCheckInterval time.Duration
	// LocalLeafLifetime is the validity of leaves issued by the local CA.
	// Zero means DefaultLocalLeafLifetime.
	LocalLeafLifetime time.Duration
	// StartWait bounds New's wait for stored ACME certificates to load.
	// Zero means DefaultStartWait.
	StartWait time.Duration

	// Logger receives this package's logs, certmagic's included. Nil discards.
	Logger *slog.Logger
}

// DefaultMode is the mode used when Options.Mode is empty: ModeLocal for
// names no public CA can issue for (localhost, IP addresses, single labels,
// .lan, .home.arpa, .local, .internal, .localhost, .test), else ModeACME.
func DefaultMode(hostname string) string {
	h := strings.TrimSuffix(strings.ToLower(hostname), ".")
	if h == "" || h == "localhost" || net.ParseIP(h) != nil || !strings.Contains(h, ".") {
		return ModeLocal
	}
	for _, suffix := range []string{".lan", ".home.arpa", ".local", ".internal", ".localhost", ".test"} {
		if strings.HasSuffix(h, suffix) {
			return ModeLocal
		}
	}
	return ModeACME
}

// CertStatus describes one certificate the Source manages or serves.
type CertStatus struct {
	// Source is ModeACME, ModeFiles or ModeLocal; in mode acme the local
	// certificate is listed too, as the fallback.
	Source string `json:"source"`
	// Names are the names the certificate covers (or, in mode acme before the
	// first certificate arrives, the name it is being obtained for).
	Names []string `json:"names"`
	// Issuer is the issuing CA's common name; empty while none is held.
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// NextRenewal is when renewal is due (from ACME ARI when the CA offers it);
	// zero in mode files, where the operator renews.
	NextRenewal time.Time `json:"next_renewal"`
	// Serving reports whether handshakes for these names get this certificate.
	Serving bool `json:"serving"`
	// LastError is the last failure to obtain, renew or load this
	// certificate, cleared by the next success; LastErrorAt is when it happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at"`
}

// Source hands out TLS configs whose certificates it keeps current. All its
// methods are safe for concurrent use.
type Source struct {
	opts   Options
	mode   string
	log    *slog.Logger
	base   *cryptotls.Config
	local  *localIssuer // modes local and acme (fallback)
	files  *fileCert    // mode files
	acme   *acmeManager // mode acme
	cancel context.CancelFunc
	wg     sync.WaitGroup

	started    bool          // New succeeded; set before New returns, read by Close
	statusKick chan struct{} // asks the status writer to rewrite Dir/status.json
	statusMu   sync.Mutex    // serializes writes of Dir/status.json

	closeOnce sync.Once
}

// New builds a Source and starts its background work (ACME orders and
// renewals, local leaf renewal, file watching), which runs until Close.
// ctx bounds only the work New does before it returns. New never waits for
// an ACME order: until one succeeds, handshakes get the local certificate.
func New(ctx context.Context, opts Options) (*Source, error) {
	if opts.Hostname == "" {
		return nil, errors.New("tls: hostname is required")
	}
	if opts.Dir == "" {
		return nil, errors.New("tls: directory is required")
	}
	opts.Hostname = normalizeName(opts.Hostname)
	extra := make([]string, 0, len(opts.ExtraNames))
	for _, n := range opts.ExtraNames {
		if n = normalizeName(n); n != "" && n != opts.Hostname && !slices.Contains(extra, n) {
			extra = append(extra, n)
		}
	}
	opts.ExtraNames = extra
	if opts.Mode == "" {
		opts.Mode = DefaultMode(opts.Hostname)
	}
	if opts.ACMEDirectory == "" {
		opts.ACMEDirectory = DefaultACMEDirectory
	}
	if opts.RenewCheckInterval <= 0 {
		opts.RenewCheckInterval = DefaultRenewCheckInterval
	}
	if opts.FilesCheckInterval <= 0 {
		opts.FilesCheckInterval = DefaultFilesCheckInterval
	}
	if opts.LocalLeafLifetime <= 0 {
		opts.LocalLeafLifetime = DefaultLocalLeafLifetime
	}
	if opts.StartWait <= 0 {
		opts.StartWait = DefaultStartWait
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Source{opts: opts, mode: opts.Mode, log: opts.Logger.With("component", "tls"),
		statusKick: make(chan struct{}, 1)}
	s.base = baseConfig(s.getCertificate)

	switch s.mode {
	case ModeLocal, ModeACME, ModeFiles:
	default:
		return nil, fmt.Errorf("tls: mode %q: want %q, %q or %q", s.mode, ModeACME, ModeFiles, ModeLocal)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	var err error
	switch s.mode {
	case ModeFiles:
		s.files, err = loadFileCert(opts.CertFile, opts.KeyFile)
		if err == nil {
			s.log.Info("serving certificate from files", "cert", opts.CertFile, "names", s.files.status().Names)
			s.goLoop(bg, opts.FilesCheckInterval, s.checkFiles)
		}
	case ModeLocal, ModeACME:
		s.local, err = openLocalIssuer(localOptions{
			dir:          filepath.Join(opts.Dir, "local"),
			hostname:     opts.Hostname,
			names:        opts.ExtraNames,
			leafLifetime: opts.LocalLeafLifetime,
			log:          s.log,
			changed:      s.statusChanged,
		})
		if err == nil {
			s.goLoop(bg, opts.RenewCheckInterval, func() { s.local.renewIfNeeded() })
		}
		if err == nil && s.mode == ModeACME {
			s.acme, err = startACME(ctx, bg, opts, s.log, s.statusChanged)
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	s.started = true
	s.wg.Add(1)
	go s.statusWriter(bg)
	s.statusChanged()
	return s, nil
}

// goLoop runs fn every interval until ctx ends or Close.
func (s *Source) goLoop(ctx context.Context, interval time.Duration, fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// Mode reports the mode in use (after defaulting).
func (s *Source) Mode() string { return s.mode }

// modernSuites (read-only) are the TLS 1.2 suites Config allows: ECDHE key exchange and
// AEAD ciphers only (RFC 9325 §4.2). TLS 1.3 suites are not configurable and
// are all modern.
var modernSuites = []uint16{
	cryptotls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	cryptotls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	cryptotls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	cryptotls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	cryptotls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	cryptotls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func baseConfig(get func(*cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error)) *cryptotls.Config {
	return &cryptotls.Config{
		MinVersion:     cryptotls.VersionTLS12,
		CipherSuites:   slices.Clone(modernSuites),
		GetCertificate: get,
	}
}

// Config returns a new clone of the base server config: TLS 1.2 minimum,
// modern suites, certificates from this Source, NextProtos = alpn. Pass the
// service's ALPN id on implicit-TLS ports ("imap" on 993, "pop3" on 995,
// "smtp" on 465) and "h2", "http/1.1" on the web listener. In mode acme, a
// config whose alpn includes "h2" or "http/1.1" also offers ALPNACME, so the
// web listener on 443 answers TLS-ALPN-01 challenges. The caller owns the
// returned value and may change it.
func (s *Source) Config(alpn ...string) *cryptotls.Config {
	cfg := s.base.Clone()
	protos := slices.Clone(alpn)
	if s.mode == ModeACME && !s.opts.DisableTLSALPN01 && !slices.Contains(protos, ALPNACME) &&
		(slices.Contains(protos, "h2") || slices.Contains(protos, "http/1.1")) {
		protos = append(protos, ALPNACME)
	}
	cfg.NextProtos = protos
	return cfg
}

// getCertificate is the one GetCertificate behind every config.
func (s *Source) getCertificate(hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	switch s.mode {
	case ModeFiles:
		return s.files.certificate(), nil
	case ModeACME:
		// RFC 8737 §3: a validation handshake offers acme-tls/1 alone, with SNI.
		if hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNACME {
			return s.acme.challengeCertificate(hello)
		}
		if cert := s.acme.certificate(hello.ServerName); cert != nil {
			return cert, nil
		}
	}
	return s.local.certificate(), nil
}

// Reload re-reads the certificate files now (mode files; it also happens by
// itself when they change), or re-checks the local leaf against the
// machine's current addresses (mode local). In mode acme it does nothing:
// certmagic renews by itself. On error the previous certificate stays in
// use and the error is returned for the caller to log (and shown by Status).
func (s *Source) Reload() error {
	switch s.mode {
	case ModeFiles:
		changed, err := s.files.reload()
		s.writeStatus()
		if err != nil {
			return fmt.Errorf("tls: reload: %w", err)
		}
		if changed {
			s.log.Info("certificate files reloaded", "names", s.files.status().Names)
		}
	case ModeLocal:
		s.local.renewIfNeeded()
	}
	return nil
}

// checkFiles is the mode files poll: reload when the files changed, log a
// failed load once per change.
func (s *Source) checkFiles() {
	if !s.files.modified() {
		return
	}
	changed, err := s.files.reload()
	s.statusChanged()
	switch {
	case err != nil:
		s.log.Error("certificate files changed but do not load; still serving the previous certificate",
			"cert", s.opts.CertFile, "key", s.opts.KeyFile, "err", err)
	case changed:
		s.log.Info("certificate files reloaded", "names", s.files.status().Names)
	}
}

// HTTPHandler answers ACME HTTP-01 challenges (mode acme) and passes every
// other request to next. The web listener on port 80 must serve it.
func (s *Source) HTTPHandler(next http.Handler) http.Handler {
	if s.acme == nil {
		return next
	}
	return s.acme.httpHandler(next)
}

// CACertPEM returns the local CA certificate (PEM), for users to install on
// their devices. It exists in modes local and acme (where the local
// certificate is the fallback); mode files has none.
func (s *Source) CACertPEM() ([]byte, error) {
	if s.local == nil {
		return nil, fmt.Errorf("tls: mode %s has no local CA", s.mode)
	}
	return s.local.caPEM(), nil
}

// Status lists each certificate with its names, issuer, validity, next
// renewal and last error, the one handshakes get marked Serving.
func (s *Source) Status() []CertStatus {
	var out []CertStatus
	switch s.mode {
	case ModeFiles:
		out = append(out, s.files.status())
	case ModeLocal:
		out = append(out, s.local.status())
	case ModeACME:
		// acme[0] is the host name's certificate, which handshakes for names
		// without their own get; the local one is served only without it.
		acme := s.acme.status()
		fallback := s.local.status()
		fallback.Serving = !acme[0].Serving
		out = append(acme, fallback)
	}
	return out
}

// Close stops background work (ACME orders and renewals, file watching,
// leaf renewal). Configs handed out keep serving the last certificates.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		if s.acme != nil {
			s.acme.close()
		}
		s.wg.Wait()
		if s.started {
			s.writeStatus()
		}
	})
	return nil
}

// ExportCA returns the local CA certificate (PEM) kept under dir (the
// Options.Dir of the Source), creating the CA if it does not exist yet, so
// `mailbox tls ca` works before the first start.
func ExportCA(dir string) ([]byte, error) {
	ca, err := loadOrCreateCA(filepath.Join(dir, "local"), "")
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return ca.certPEM, nil
}

func normalizeName(n string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
}
