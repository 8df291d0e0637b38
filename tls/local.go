package tls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Files of the local CA under Options.Dir/local. ca.pem holds the CA
// certificate and key and is created once, atomically (link, not rename, so
// two processes starting together agree on one CA); ca.crt is the same
// certificate alone for users to install; leaf.pem holds the served
// certificate and its key and is replaced atomically on renewal.
const (
	caFile     = "ca.pem"
	caCertFile = "ca.crt"
	leafFile   = "leaf.pem"
)

// backdate covers clocks of clients that run a little behind ours.
const backdate = time.Hour

type localCA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
}

type localOptions struct {
	dir          string
	hostname     string
	names        []string
	leafLifetime time.Duration
	log          *slog.Logger
	changed      func() // called after each renewal attempt; must not block
}

// localIssuer keeps a leaf from the local CA for the host name, the extra
// names and the machine's addresses, renewing it when a third of its
// lifetime is left or when it no longer covers them.
type localIssuer struct {
	opts localOptions
	ca   *localCA

	leaf atomic.Pointer[cryptotls.Certificate]

	mu          sync.Mutex // serializes renewIfNeeded; guards the fields below
	lastErr     string
	lastErrTime time.Time
}

func openLocalIssuer(opts localOptions) (*localIssuer, error) {
	ca, err := loadOrCreateCA(opts.dir, opts.hostname)
	if err != nil {
		return nil, err
	}
	li := &localIssuer{opts: opts, ca: ca}
	if cert, err := loadKeyPairFile(filepath.Join(opts.dir, leafFile)); err == nil {
		li.leaf.Store(cert)
	} else if !errors.Is(err, fs.ErrNotExist) {
		opts.log.Warn("local certificate unreadable; issuing a new one", "err", err)
	}
	if err := li.renewIfNeeded(); err != nil {
		return nil, err
	}
	return li, nil
}

func (li *localIssuer) certificate() *cryptotls.Certificate { return li.leaf.Load() }

func (li *localIssuer) caPEM() []byte { return slices.Clone(li.ca.certPEM) }

// wanted lists the DNS names and IP addresses the leaf must cover.
func (li *localIssuer) wanted() (dns []string, ips []net.IP) {
	add := func(n string) {
		if n == "" {
			return
		}
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	add(li.opts.hostname)
	for _, n := range li.opts.names {
		add(n)
	}
	add("localhost")
	ips = append(ips, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() || ipn.IP.IsUnspecified() {
				continue
			}
			ips = append(ips, ipn.IP)
		}
	}
	var uniq []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(uniq, ip.Equal) {
			uniq = append(uniq, ip)
		}
	}
	return dns, uniq
}

// renewReason says why the current leaf must be replaced, or "" if it is fine.
func (li *localIssuer) renewReason(now time.Time) string {
	cur := li.leaf.Load()
	if cur == nil || cur.Leaf == nil {
		return "no certificate yet"
	}
	leaf := cur.Leaf
	if leaf.CheckSignatureFrom(li.ca.cert) != nil {
		return "not issued by the current local CA"
	}
	if now.After(li.renewAt(leaf)) {
		return "a third of its lifetime is left"
	}
	dns, ips := li.wanted()
	for _, n := range dns {
		if !slices.Contains(leaf.DNSNames, n) {
			return "does not cover " + n
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return "does not cover " + ip.String()
		}
	}
	return ""
}

// renewAt is when leaf is due for renewal: a third of the configured
// lifetime before it expires (the configured one, not NotAfter-NotBefore,
// which includes the backdating).
func (li *localIssuer) renewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotAfter.Add(-li.opts.leafLifetime / 3)
}

// renewIfNeeded issues and stores a new leaf when the current one is
// missing, expiring or incomplete. A failure is logged and kept for Status;
// the old leaf stays in use.
func (li *localIssuer) renewIfNeeded() error {
	li.mu.Lock()
	defer li.mu.Unlock()
	now := time.Now()
	reason := li.renewReason(now)
	if reason == "" {
		return nil
	}
	cert, err := li.issue(now)
	if err != nil {
		err = fmt.Errorf("issue local certificate: %w", err)
		li.lastErr, li.lastErrTime = err.Error(), now
		li.opts.changed()
		li.opts.log.Error("local certificate not renewed; still serving the previous one", "err", err)
		return err
	}
	li.leaf.Store(cert)
	li.lastErr, li.lastErrTime = "", time.Time{}
	li.opts.changed()
	li.opts.log.Info("local certificate issued", "reason", reason,
		"names", certNames(cert.Leaf), "not_after", cert.Leaf.NotAfter)
	return nil
}

func (li *localIssuer) issue(now time.Time) (*cryptotls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	dns, ips := li.wanted()
	notAfter := now.Add(li.opts.leafLifetime)
	if notAfter.After(li.ca.cert.NotAfter) {
		notAfter = li.ca.cert.NotAfter
	}
	cn := li.opts.hostname
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-min(backdate, li.opts.leafLifetime/10)),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, li.ca.cert, key.Public(), li.ca.key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(filepath.Join(li.opts.dir, leafFile), buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	return keyPair(buf.Bytes())
}

func (li *localIssuer) status() CertStatus {
	li.mu.Lock()
	defer li.mu.Unlock()
	st := CertStatus{Source: ModeLocal, Serving: true, LastError: li.lastErr, LastErrorAt: li.lastErrTime}
	if cur := li.leaf.Load(); cur != nil && cur.Leaf != nil {
		leaf := cur.Leaf
		st.Names = certNames(leaf)
		st.Issuer = leaf.Issuer.CommonName
		st.NotBefore, st.NotAfter = leaf.NotBefore, leaf.NotAfter
		st.NextRenewal = li.renewAt(leaf)
	}
	return st
}

// loadOrCreateCA reads dir/ca.pem, creating it on first use.
func loadOrCreateCA(dir, hostname string) (*localCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, caFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = createCA(dir, hostname)
	}
	if err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	pair, err := keyPair(data)
	if err != nil {
		return nil, fmt.Errorf("local CA %s: %w", path, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("local CA %s: not a CA certificate and key", path)
	}
	ca := &localCA{
		cert:    pair.Leaf,
		key:     signer,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Leaf.Raw}),
	}
	exported := filepath.Join(dir, caCertFile)
	if old, err := os.ReadFile(exported); err != nil || !bytes.Equal(old, ca.certPEM) {
		if err := writeFileAtomic(exported, ca.certPEM, 0o644); err != nil {
			return nil, fmt.Errorf("local CA: %w", err)
		}
	}
	return ca, nil
}

// createCA makes a new CA and links it into place as dir/ca.pem unless
// another process got there first, and returns what is then in place.
func createCA(dir, hostname string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	id := make([]byte, 4)
	rand.Read(id)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"mailbox"},
			// The random id tells CAs of different installations apart in
			// a device's list of trusted certificates.
			CommonName: fmt.Sprintf("mailbox local CA %s %s", hostname, hex.EncodeToString(id)),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(DefaultLocalCALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	tmp, err := writeTemp(dir, buf.Bytes(), 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	path := filepath.Join(dir, caFile)
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	return os.ReadFile(path)
}

// keyPair parses PEM holding a certificate chain (leaf first) and its key.
func keyPair(data []byte) (*cryptotls.Certificate, error) {
	return keyPairFrom(data, data)
}

func loadKeyPairFile(path string) (*cryptotls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return keyPair(data)
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// certNames lists the DNS names and IP addresses a certificate covers.
func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

// writeTemp writes data to a new synced temporary file in dir.
func writeTemp(dir string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// writeFileAtomic replaces path with data so readers see the old or the new
// content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(filepath.Dir(path), data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
