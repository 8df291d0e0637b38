package tls

import (
	"bytes"
	"crypto/sha256"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// fileCert serves a certificate and key the operator keeps on disk. A new
// pair replaces the old one only after it parses and matches, and only for
// later handshakes: connections already open keep their session.
type fileCert struct {
	certPath, keyPath string

	cur atomic.Pointer[cryptotls.Certificate]

	mu          sync.Mutex // serializes reload; guards the fields below
	certInfo    os.FileInfo
	keyInfo     os.FileInfo
	loadedHash  [sha256.Size]byte
	lastErr     string
	lastErrTime time.Time
}

func loadFileCert(certPath, keyPath string) (*fileCert, error) {
	if certPath == "" || keyPath == "" {
		return nil, errors.New("mode files needs both a certificate file and a key file")
	}
	fc := &fileCert{certPath: certPath, keyPath: keyPath}
	if _, err := fc.reload(); err != nil {
		return nil, err
	}
	return fc, nil
}

func (fc *fileCert) certificate() *cryptotls.Certificate { return fc.cur.Load() }

// modified reports whether either file looks different from the last load
// attempt (another file, size or modification time); a file that cannot be
// read counts as unchanged until it can.
func (fc *fileCert) modified() bool {
	ci, err1 := os.Stat(fc.certPath)
	ki, err2 := os.Stat(fc.keyPath)
	if err1 != nil || err2 != nil {
		return false
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return !sameFile(fc.certInfo, ci) || !sameFile(fc.keyInfo, ki)
}

func sameFile(a, b os.FileInfo) bool {
	return a != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// reload reads both files and swaps in the pair if its content changed.
// On error the previous pair stays in use and the error is kept for Status.
func (fc *fileCert) reload() (changed bool, err error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	defer func() {
		if err != nil {
			fc.lastErr, fc.lastErrTime = err.Error(), time.Now()
		} else {
			fc.lastErr, fc.lastErrTime = "", time.Time{}
		}
	}()
	// Stat before reading: if a file changes in between, the next poll sees
	// a newer stamp and reads again.
	ci, err := os.Stat(fc.certPath)
	if err != nil {
		return false, err
	}
	ki, err := os.Stat(fc.keyPath)
	if err != nil {
		return false, err
	}
	fc.certInfo, fc.keyInfo = ci, ki
	certPEM, err := os.ReadFile(fc.certPath)
	if err != nil {
		return false, err
	}
	keyPEM, err := os.ReadFile(fc.keyPath)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(bytes.Join([][]byte{certPEM, keyPEM}, []byte{0}))
	if fc.cur.Load() != nil && sum == fc.loadedHash {
		return false, nil
	}
	pair, err := keyPairFrom(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("%s, %s: %w", fc.certPath, fc.keyPath, err)
	}
	fc.cur.Store(pair)
	fc.loadedHash = sum
	return true, nil
}

func keyPairFrom(certPEM, keyPEM []byte) (*cryptotls.Certificate, error) {
	pair, err := cryptotls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &pair, nil
}

func (fc *fileCert) status() CertStatus {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	st := CertStatus{Source: ModeFiles, Serving: true, LastError: fc.lastErr, LastErrorAt: fc.lastErrTime}
	if cur := fc.cur.Load(); cur != nil {
		st.Names = certNames(cur.Leaf)
		st.Issuer = cur.Leaf.Issuer.CommonName
		st.NotBefore, st.NotAfter = cur.Leaf.NotBefore, cur.Leaf.NotAfter
	}
	return st
}
