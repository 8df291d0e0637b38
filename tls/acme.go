package tls

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// renewalWindowRatio: without ARI, a certificate is renewed when this
// fraction of its lifetime is left (Let's Encrypt's advice, certmagic's default).
const renewalWindowRatio = 1.0 / 3

// startPollInterval is how often New looks whether stored certificates are loaded.
const startPollInterval = 20 * time.Millisecond

// acmeManager runs certmagic for the configured names with an explicit
// certmagic.Config (storage under Options.Dir/acme, our logger, our event
// hook); no certmagic package default is read or changed except as
// certmagic.New fills fields we leave empty.
type acmeManager struct {
	log      *slog.Logger
	changed  func()
	hostname string
	names    []string
	cache    *certmagic.Cache
	magic    *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	decoy    net.Listener
	decoyEnd chan struct{}

	mu     sync.Mutex
	failed map[string]failure // last failure per name, cleared on success
}

type failure struct {
	err string
	at  time.Time
}

// startACME begins management of the configured names; changed is called
// (and must not block) whenever a certificate is obtained, loaded or fails.
func startACME(ctx, bg context.Context, opts Options, log *slog.Logger, changed func()) (*acmeManager, error) {
	if opts.DisableHTTP01 && opts.DisableTLSALPN01 {
		return nil, errors.New("acme: both HTTP-01 and TLS-ALPN-01 are disabled")
	}
	names := []string{opts.Hostname}
	for _, n := range opts.ExtraNames {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	var roots *x509.CertPool
	if opts.ACMECARoots != "" {
		var err error
		if roots, err = loadRoots(opts.ACMECARoots); err != nil {
			return nil, fmt.Errorf("acme: %w", err)
		}
	}

	// certmagic's solvers start their own challenge listener on the
	// challenge port whenever they can bind it, and assume someone else
	// answers when the port is taken. Pointed at 80/443 that would race the
	// web listener for its ports at start-up. So the solvers are pointed at
	// a loopback port we hold (the decoy) and always find it taken; the
	// real answers come from HTTPHandler on :80 and from Config's
	// GetCertificate on :443, both of which read certmagic's challenge
	// memory.
	decoy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	m := &acmeManager{
		log:      log,
		changed:  changed,
		hostname: opts.Hostname,
		names:    names,
		decoy:    decoy,
		decoyEnd: make(chan struct{}),
		failed:   make(map[string]failure),
	}
	go m.serveDecoy()
	decoyPort := decoy.Addr().(*net.TCPAddr).Port

	zl := newZapLogger(log.With("lib", "certmagic"))
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: opts.RenewCheckInterval,
		Logger:             zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: renewalWindowRatio,
		OnEvent:            m.onEvent,
		DefaultServerName:  opts.Hostname,
		Storage:            &certmagic.FileStorage{Path: filepath.Join(opts.Dir, "acme")},
		Issuers:            []certmagic.Issuer{}, // set below; non-nil so no default issuer is built
		Logger:             zl,
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      opts.ACMEDirectory,
		Email:                   opts.ACMEEmail,
		Agreed:                  true, // configuring an ACME CA is agreeing to its terms
		DisableHTTPChallenge:    opts.DisableHTTP01,
		DisableTLSALPNChallenge: opts.DisableTLSALPN01,
		ListenHost:              "127.0.0.1",
		AltHTTPPort:             decoyPort,
		AltTLSALPNPort:          decoyPort,
		TrustedRoots:            roots,
		Logger:                  zl,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}

	// Names whose certificate is already stored are worth a short wait, so
	// handshakes right after a restart do not get the fallback.
	var stored []string
	for _, n := range names {
		if m.magic.Storage.Exists(ctx, certmagic.StorageKeys.SiteCert(m.issuer.IssuerKey(), n)) {
			stored = append(stored, n)
		}
	}
	if err := m.magic.ManageAsync(bg, names); err != nil {
		m.close()
		return nil, fmt.Errorf("acme: %w", err)
	}
	m.waitLoaded(ctx, stored, opts.StartWait)
	log.Info("ACME certificate management started", "names", names, "directory", opts.ACMEDirectory,
		"stored", len(stored))
	return m, nil
}

func loadRoots(path string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA roots: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("CA roots %s: no PEM certificate found", path)
	}
	return pool, nil
}

// serveDecoy accepts and closes connections on the decoy port; see startACME.
func (m *acmeManager) serveDecoy() {
	defer close(m.decoyEnd)
	for {
		c, err := m.decoy.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func (m *acmeManager) waitLoaded(ctx context.Context, names []string, limit time.Duration) {
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(startPollInterval)
	defer t.Stop()
	for {
		loaded := 0
		for _, n := range names {
			if m.exact(n, true) != nil {
				loaded++
			}
		}
		if loaded == len(names) {
			return
		}
		select {
		case <-ctx.Done():
			m.log.Warn("stored ACME certificates not loaded in time; serving the local certificate until they are",
				"names", names, "waited", limit)
			return
		case <-t.C:
		}
	}
}

// onEvent keeps the last failure per name for Status and says clearly what
// a failed order means for the listeners. certmagic retries with backoff
// (1 minute growing to 6 hours, for up to 30 days; again at every start).
func (m *acmeManager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	switch event {
	case "cached_managed_cert":
		m.changed()
	case "cert_obtained":
		m.mu.Lock()
		delete(m.failed, name)
		m.mu.Unlock()
		m.changed()
	case "cert_failed":
		err, _ := data["error"].(error)
		msg := fmt.Sprint(data["error"])
		if err != nil {
			msg = err.Error()
		}
		m.mu.Lock()
		m.failed[name] = failure{err: msg, at: time.Now()}
		m.mu.Unlock()
		m.changed()
		if renewal, _ := data["renewal"].(bool); renewal {
			m.log.Error("ACME renewal failed; still serving the current certificate, will retry",
				"name", name, "err", msg)
		} else {
			m.log.Error("ACME order failed; serving the local certificate meanwhile, will retry with backoff "+
				"(check that the name resolves to this host and that ports 80 and 443 reach it)",
				"name", name, "err", msg)
		}
	}
	return nil
}

// exact returns the cached certificate for name (exact or wildcard match)
// that has not expired, or with anyAge one that has, if that is all there is.
func (m *acmeManager) exact(name string, anyAge bool) *certmagic.Certificate {
	certs := m.cache.AllMatchingCertificates(name)
	now := time.Now()
	for i := range certs {
		if certs[i].Leaf != nil && now.Before(certs[i].Leaf.NotAfter) {
			return &certs[i]
		}
	}
	if anyAge && len(certs) > 0 {
		return &certs[0]
	}
	return nil
}

// certificate picks the ACME certificate for a handshake: the one for the
// requested name, else the host name's (for clients that send no SNI or a
// name we have no certificate for). Nil means no unexpired one is held, and
// the local certificate is served instead.
func (m *acmeManager) certificate(serverName string) *cryptotls.Certificate {
	name := normalizeName(serverName)
	if name == "" {
		name = m.hostname
	}
	c := m.exact(name, false)
	if c == nil && name != m.hostname {
		c = m.exact(m.hostname, false)
	}
	if c == nil {
		return nil
	}
	tc := c.Certificate
	return &tc
}

// challengeCertificate answers a TLS-ALPN-01 validation handshake (RFC 8737).
func (m *acmeManager) challengeCertificate(hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	return m.magic.GetCertificate(hello)
}

func (m *acmeManager) httpHandler(next http.Handler) http.Handler {
	return m.issuer.HTTPChallengeHandler(next)
}

func (m *acmeManager) status() []CertStatus {
	now := time.Now()
	out := make([]CertStatus, 0, len(m.names))
	for _, n := range m.names {
		st := CertStatus{Source: ModeACME, Names: []string{n}}
		if c := m.exact(n, true); c != nil && c.Leaf != nil {
			st.Names = certNames(c.Leaf)
			st.Issuer = c.Leaf.Issuer.CommonName
			st.NotBefore, st.NotAfter = c.Leaf.NotBefore, c.Leaf.NotAfter
			st.NextRenewal = m.nextRenewal(n, c.Leaf)
			st.Serving = now.Before(c.Leaf.NotAfter)
		}
		m.mu.Lock()
		if f, ok := m.failed[n]; ok {
			st.LastError, st.LastErrorAt = f.err, f.at
		}
		m.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// nextRenewal is the renewal time ARI selected, as certmagic stored it with
// the certificate, or else the start of the renewal window by lifetime.
func (m *acmeManager) nextRenewal(name string, leaf *x509.Certificate) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	raw, err := m.magic.Storage.Load(ctx, certmagic.StorageKeys.SiteMeta(m.issuer.IssuerKey(), name))
	if err == nil {
		var meta struct {
			IssuerData struct {
				RenewalInfo *struct {
					SelectedTime time.Time `json:"_selectedTime"`
				} `json:"renewal_info"`
			} `json:"issuer_data"`
		}
		if json.Unmarshal(raw, &meta) == nil && meta.IssuerData.RenewalInfo != nil &&
			!meta.IssuerData.RenewalInfo.SelectedTime.IsZero() {
			return meta.IssuerData.RenewalInfo.SelectedTime
		}
	}
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotAfter.Add(-time.Duration(float64(lifetime) * renewalWindowRatio))
}

func (m *acmeManager) close() {
	m.cache.Stop()
	m.decoy.Close()
	<-m.decoyEnd
}
