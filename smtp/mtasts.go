package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"mailbox/store"
)

// MTA-STS (RFC 8461) lets a recipient domain say that mail for it must
// travel over TLS with a valid certificate, to named MX hosts only. The
// domain publishes a TXT record _mta-sts.<domain> ("v=STSv1; id=...")
// and a policy file at https://mta-sts.<domain>/.well-known/mta-sts.txt.
// The runner looks the record up before it connects to a domain's MX
// hosts, fetches the policy when the id is new (or the cached copy old),
// and keeps the last valid policy in the store until its max_age runs
// out. That cache is the point: an attacker who later blocks the TXT
// lookup or the HTTPS fetch cannot talk us back down to plain text.
//
// How the policy is applied to a connection is in mtasts_deliver.go.

// Defaults and bounds for MTA-STS.
const (
	// DefaultMTASTSPort is where policy hosts serve HTTPS.
	DefaultMTASTSPort = 443
	// DefaultMTASTSFetchTimeout bounds one policy fetch (connect, TLS,
	// request and body). RFC 8461 §3.3 asks senders to bound fetches; a
	// policy is a few lines, so a slow server is a failing one.
	DefaultMTASTSFetchTimeout = time.Minute
	// mtaSTSMaxPolicyBytes bounds the policy file we read. A policy is a
	// handful of short lines; anything larger is not a policy.
	mtaSTSMaxPolicyBytes = 64 << 10
	// mtaSTSMaxAge is the largest max_age a policy may give (RFC 8461
	// §3.2: about one year).
	mtaSTSMaxAge = 31557600 * time.Second
	// mtaSTSRefresh is the age after which a cached policy is fetched
	// again even though the TXT id did not change, so that a domain that
	// forgets to change its id still gets its new policy, and a policy in
	// use is renewed well before it expires (RFC 8461 suggests refreshing
	// cached policies proactively, e.g. daily).
	mtaSTSRefresh = 24 * time.Hour
	// mtaSTSFailedRetry is how long a policy id whose fetch failed is
	// not fetched again (RFC 8461 §3.3: at least five minutes, so that
	// cascading retries do not swamp a struggling policy host).
	mtaSTSFailedRetry = 5 * time.Minute
)

// mtaSTSPath is where the policy lives on mta-sts.<domain> (RFC 8461
// §3.3).
const mtaSTSPath = "/.well-known/mta-sts.txt"

// mtaSTS finds the MTA-STS policy that applies to a recipient domain:
// from DNS and HTTPS when there is a new one, else from the store.
type mtaSTS struct {
	st       *store.Store
	resolver Resolver
	client   *http.Client
	port     int
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	calls  map[string]*mtaSTSCall // lookups under way, by domain
	failed map[string]time.Time   // "domain id" → when its fetch failed
}

// mtaSTSCall is one lookup under way; concurrent connections to the same
// domain wait for it instead of fetching the policy again.
type mtaSTSCall struct {
	done chan struct{}
	pol  *store.MTASTSPolicy
	err  error
}

// mtaSTSOptions configures newMTASTS.
type mtaSTSOptions struct {
	st       *store.Store
	resolver Resolver
	roots    *x509.CertPool // nil: the system's
	port     int
	timeout  time.Duration
	log      *slog.Logger
	now      func() time.Time
}

func newMTASTS(o mtaSTSOptions) *mtaSTS {
	dialer := &net.Dialer{Timeout: o.timeout}
	transport := &http.Transport{
		Proxy: nil, // a policy is fetched directly, never through a proxy from the environment
		// Policy hosts are found through the one resolver, like MX hosts.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := o.resolver.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, fmt.Errorf("look up %s: %w", host, err)
			}
			last := fmt.Errorf("no address for %s", host)
			for _, ip := range ips {
				c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.IP.String(), port))
				if err == nil {
					return c, nil
				}
				last = err
			}
			return nil, last
		},
		TLSClientConfig:        &tls.Config{RootCAs: o.roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    o.timeout,
		ResponseHeaderTimeout:  o.timeout,
		MaxResponseHeaderBytes: 16 << 10,
		DisableKeepAlives:      true, // a domain's policy is fetched once a day at most
	}
	return &mtaSTS{
		st:       o.st,
		resolver: o.resolver,
		client: &http.Client{
			Transport: transport,
			Timeout:   o.timeout,
			// RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		port:   o.port,
		log:    o.log,
		now:    o.now,
		calls:  map[string]*mtaSTSCall{},
		failed: map[string]time.Time{},
	}
}

// policy returns the policy that applies to domain now, or nil if none
// does. Failures to reach DNS or the policy host are not errors: the
// cached policy applies then, or none (RFC 8461 §5.1). An error means the
// cache could not be read, so we cannot know whether a policy applies.
func (m *mtaSTS) policy(ctx context.Context, domain string) (*store.MTASTSPolicy, error) {
	m.mu.Lock()
	if c := m.calls[domain]; c != nil {
		m.mu.Unlock()
		select {
		case <-c.done:
			return c.pol, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &mtaSTSCall{done: make(chan struct{})}
	m.calls[domain] = c
	m.mu.Unlock()

	c.pol, c.err = m.lookup(ctx, domain)

	m.mu.Lock()
	delete(m.calls, domain)
	m.mu.Unlock()
	close(c.done)
	return c.pol, c.err
}

func (m *mtaSTS) lookup(ctx context.Context, domain string) (*store.MTASTSPolicy, error) {
	log := m.log.With("domain", domain)
	now := m.now()
	var cached *store.MTASTSPolicy
	p, err := m.st.MTASTSPolicy(ctx, domain)
	switch {
	case err == nil && now.Before(p.Expires()):
		cached = &p
	case err == nil, errors.Is(err, store.ErrNotFound):
		// Expired or never seen: no cached policy applies.
	default:
		return nil, fmt.Errorf("MTA-STS policy of %s: %w", domain, err)
	}

	id, err := m.recordID(ctx, domain)
	if err != nil {
		// No record, a broken one, or no answer: the cache applies
		// (RFC 8461 §5.1), which is what defeats a blocked lookup.
		if cached != nil && !isNotFound(err) {
			log.Info("MTA-STS record not available, using the cached policy", "err", err, "mode", cached.Mode)
		}
		return cached, nil
	}
	if cached != nil && cached.ID == id && now.Sub(cached.Fetched) < min(mtaSTSRefresh, cached.MaxAge/2) {
		return cached, nil
	}
	key := domain + " " + id
	m.mu.Lock()
	failedAt, failed := m.failed[key]
	m.mu.Unlock()
	if failed && now.Sub(failedAt) < mtaSTSFailedRetry {
		return cached, nil
	}

	fetched, err := m.fetch(ctx, domain)
	if err != nil {
		m.mu.Lock()
		m.failed[key] = now
		for k, t := range m.failed {
			if now.Sub(t) >= mtaSTSFailedRetry {
				delete(m.failed, k)
			}
		}
		m.mu.Unlock()
		// RFC 8461 §5.1: without a policy file the domain is treated as
		// having no policy, unless a cached one has not expired.
		log.Warn("MTA-STS policy fetch failed", "id", id, "err", err, "cached", cached != nil)
		return cached, nil
	}
	fetched.Domain, fetched.ID, fetched.Fetched = domain, id, now
	if err := m.st.SaveMTASTSPolicy(ctx, fetched); err != nil {
		// It applies to this attempt all the same; the next one fetches
		// it again.
		log.Error("save MTA-STS policy", "err", err)
	} else if cached == nil || cached.ID != id || cached.Mode != fetched.Mode {
		log.Info("MTA-STS policy", "id", id, "mode", fetched.Mode, "mx", strings.Join(fetched.MX, " "),
			"max_age", fetched.MaxAge)
	}
	return &fetched, nil
}

// recordID looks up _mta-sts.<domain> and returns the id of its one
// STSv1 record (RFC 8461 §3.1). No record, several, or an invalid one
// all mean no policy is announced.
func (m *mtaSTS) recordID(ctx context.Context, domain string) (string, error) {
	txts, err := m.resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return "", err
	}
	var records []string
	for _, t := range txts {
		// "Records that do not begin with v=STSv1; are discarded."
		if rest, ok := strings.CutPrefix(t, "v=STSv1"); ok && (rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t') {
			records = append(records, t)
		}
	}
	if len(records) != 1 {
		return "", fmt.Errorf("_mta-sts.%s: %d STSv1 records, want 1", domain, len(records))
	}
	return parseMTASTSRecord(records[0])
}

// parseMTASTSRecord returns the id of an MTA-STS TXT record (RFC 8461
// §3.1):
//
//	sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//	sts-field-delim = *WSP ";" *WSP
//	sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//	sts-extension   = sts-ext-name "=" sts-ext-value
func parseMTASTSRecord(s string) (string, error) {
	fields := strings.Split(s, ";")
	if strings.TrimRight(fields[0], " \t") != "v=STSv1" {
		return "", fmt.Errorf("MTA-STS record %q: does not start with v=STSv1", s)
	}
	fields = fields[1:]
	if n := len(fields); n > 0 && strings.Trim(fields[n-1], " \t") == "" {
		fields = fields[:n-1] // the optional final delimiter
	}
	id := ""
	for _, f := range fields {
		f = strings.Trim(f, " \t")
		name, value, ok := strings.Cut(f, "=")
		if !ok || !validExtName(name) {
			return "", fmt.Errorf("MTA-STS record %q: bad field %q", s, f)
		}
		if name == "id" {
			if id != "" {
				return "", fmt.Errorf("MTA-STS record %q: two ids", s)
			}
			if len(value) == 0 || len(value) > 32 || !isAlnum(value) {
				return "", fmt.Errorf("MTA-STS record %q: bad id %q", s, value)
			}
			id = value
			continue
		}
		for _, c := range []byte(value) {
			if c < 0x21 || c > 0x7e || c == ';' || c == '=' {
				return "", fmt.Errorf("MTA-STS record %q: bad value of %s", s, name)
			}
		}
		if value == "" {
			return "", fmt.Errorf("MTA-STS record %q: empty value of %s", s, name)
		}
	}
	if id == "" {
		return "", fmt.Errorf("MTA-STS record %q: no id", s)
	}
	return id, nil
}

// validExtName: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validExtName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[:1]) {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(string(c)) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// fetch gets and parses the policy file of domain over HTTPS, with a
// certificate valid for mta-sts.<domain> (RFC 8461 §3.3).
func (m *mtaSTS) fetch(ctx context.Context, domain string) (store.MTASTSPolicy, error) {
	host := "mta-sts." + domain
	if m.port != DefaultMTASTSPort {
		host = net.JoinHostPort(host, strconv.Itoa(m.port))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+mtaSTSPath, nil)
	if err != nil {
		return store.MTASTSPolicy{}, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return store.MTASTSPolicy{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return store.MTASTSPolicy{}, fmt.Errorf("%s: HTTP status %s", host, resp.Status)
	}
	// RFC 8461 §3.3: the policy is text/plain; anything else may be a
	// file some user of the web host uploaded.
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return store.MTASTSPolicy{}, fmt.Errorf("%s: content type %q, want text/plain", host, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, mtaSTSMaxPolicyBytes+1))
	if err != nil {
		return store.MTASTSPolicy{}, fmt.Errorf("%s: %w", host, err)
	}
	if len(body) > mtaSTSMaxPolicyBytes {
		return store.MTASTSPolicy{}, fmt.Errorf("%s: policy larger than %d bytes", host, mtaSTSMaxPolicyBytes)
	}
	p, err := parseMTASTSPolicy(string(body))
	if err != nil {
		return store.MTASTSPolicy{}, fmt.Errorf("%s: %w", host, err)
	}
	return p, nil
}

// parseMTASTSPolicy parses a policy file (RFC 8461 §3.2): "key: value"
// lines ended by LF or CRLF. version (STSv1), mode and max_age must each
// appear once, mx at least once unless the mode is none; other keys are
// extensions and ignored, but must be well formed.
func parseMTASTSPolicy(s string) (store.MTASTSPolicy, error) {
	var p store.MTASTSPolicy
	seen := map[string]bool{}
	lines := strings.Split(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // the last line's terminator
	}
	for i, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return p, fmt.Errorf("policy line %d: no colon", i+1)
		}
		value = strings.Trim(value, " \t")
		if !validExtName(key) {
			return p, fmt.Errorf("policy line %d: bad key %q", i+1, key)
		}
		if key != "mx" && seen[key] {
			return p, fmt.Errorf("policy line %d: %s given twice", i+1, key)
		}
		seen[key] = true
		switch key {
		case "version":
			if value != "STSv1" {
				return p, fmt.Errorf("policy version %q, want STSv1", value)
			}
		case "mode":
			switch value {
			case store.MTASTSEnforce, store.MTASTSTesting, store.MTASTSNone:
				p.Mode = value
			default:
				return p, fmt.Errorf("policy mode %q", value)
			}
		case "max_age":
			if len(value) == 0 || len(value) > 10 || strings.Trim(value, "0123456789") != "" {
				return p, fmt.Errorf("policy max_age %q: want 1 to 10 digits", value)
			}
			n, _ := strconv.ParseInt(value, 10, 64)
			if d := time.Duration(n) * time.Second; d > mtaSTSMaxAge {
				return p, fmt.Errorf("policy max_age %d: more than %d", n, int64(mtaSTSMaxAge/time.Second))
			} else {
				p.MaxAge = d
			}
		case "mx":
			pattern, err := normalizeMXPattern(value)
			if err != nil {
				return p, err
			}
			p.MX = append(p.MX, pattern)
		default:
			for _, c := range []byte(value) {
				if c < 0x20 || c == 0x7f {
					return p, fmt.Errorf("policy line %d: control character in %s", i+1, key)
				}
			}
		}
	}
	for _, k := range []string{"version", "mode", "max_age"} {
		if !seen[k] {
			return p, fmt.Errorf("policy has no %s", k)
		}
	}
	if p.Mode != store.MTASTSNone && len(p.MX) == 0 {
		return p, fmt.Errorf("policy mode %s has no mx", p.Mode)
	}
	return p, nil
}

// normalizeMXPattern checks an mx value (["*."] Domain) and lower-cases
// it.
func normalizeMXPattern(v string) (string, error) {
	rest, wild := strings.CutPrefix(v, "*.")
	d, err := store.NormalizeDomain(rest)
	if err != nil || strings.TrimSuffix(rest, ".") != rest || strings.Contains(d, "*") {
		return "", fmt.Errorf("policy mx %q: not a host name pattern", v)
	}
	if wild {
		return "*." + d, nil
	}
	return d, nil
}

// mxMatches reports whether host matches one of the policy's mx patterns
// (RFC 8461 §4.1): equal ignoring case, or "*.example.com" standing for
// exactly one label in front of example.com.
func mxMatches(patterns []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, p := range patterns {
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			label, rest, found := strings.Cut(host, ".")
			if found && label != "" && rest == suffix {
				return true
			}
			continue
		}
		if host == p {
			return true
		}
	}
	return false
}
