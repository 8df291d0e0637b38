package store

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DKIM key algorithms (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256).
const (
	DKIMEd25519 = "ed25519"
	DKIMRSA     = "rsa"
	// dkimRSABits is the RSA key size: RFC 8301 requires at least 1024
	// and recommends 2048; larger keys do not fit one TXT string.
	dkimRSABits = 2048
)

// DKIMKey is one signing key of a domain. The DNS record
// <Selector>._domainkey.<Domain> publishes its public half.
type DKIMKey struct {
	Domain    string
	Selector  string
	Algorithm string // DKIMEd25519 or DKIMRSA
	Signer    crypto.Signer
	Created   time.Time
}

// DKIMKeys returns a domain's keys, newest first. ErrNotFound if the
// domain is not local.
func (st *Store) DKIMKeys(ctx context.Context, domain string) ([]DKIMKey, error) {
	domain, err := NormalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	rows, err := st.reader.QueryContext(ctx, `SELECT k.selector, k.algorithm, k.private_key, k.created
		FROM dkim_keys k JOIN domains d ON d.id = k.domain_id WHERE d.name = ? ORDER BY k.created DESC, k.selector`, domain)
	if err != nil {
		return nil, fmt.Errorf("dkim keys of %s: %w: %w", domain, ErrTemporary, err)
	}
	defer rows.Close()
	var out []DKIMKey
	for rows.Next() {
		k := DKIMKey{Domain: domain}
		var der []byte
		var created int64
		if err := rows.Scan(&k.Selector, &k.Algorithm, &der, &created); err != nil {
			return nil, fmt.Errorf("dkim keys of %s: %w: %w", domain, ErrTemporary, err)
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("dkim key %s of %s: %w", k.Selector, domain, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("dkim key %s of %s: not a signing key", k.Selector, domain)
		}
		k.Signer, k.Created = signer, time.Unix(created, 0)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dkim keys of %s: %w: %w", domain, ErrTemporary, err)
	}
	return out, nil
}

// EnsureDKIMKey returns the domain's key with this selector, generating
// it (algorithm DKIMEd25519 or DKIMRSA) if there is none. Rotating keys
// is choosing a new selector: the old keys stay (and stay published)
// until DeleteDKIMKey. ErrNotFound if the domain is not local.
func (st *Store) EnsureDKIMKey(ctx context.Context, domain, selector, algorithm string) (DKIMKey, error) {
	domain, err := NormalizeDomain(domain)
	if err != nil {
		return DKIMKey{}, err
	}
	if selector == "" {
		return DKIMKey{}, fmt.Errorf("dkim key: %w: empty selector", ErrInvalid)
	}
	keys, err := st.DKIMKeys(ctx, domain)
	if err != nil {
		return DKIMKey{}, err
	}
	for _, k := range keys {
		if k.Selector == selector {
			return k, nil
		}
	}
	var signer crypto.Signer
	switch algorithm {
	case DKIMEd25519:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case DKIMRSA:
		signer, err = rsa.GenerateKey(rand.Reader, dkimRSABits)
	default:
		return DKIMKey{}, fmt.Errorf("dkim key: %w: algorithm %q", ErrInvalid, algorithm)
	}
	if err != nil {
		return DKIMKey{}, fmt.Errorf("generate dkim key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return DKIMKey{}, fmt.Errorf("encode dkim key: %w", err)
	}
	now := st.now()
	err = st.write(ctx, func(tx *txn) error {
		var id int64
		err := tx.QueryRow("SELECT id FROM domains WHERE name = ?", domain).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("dkim key: domain %s: %w", domain, ErrNotFound)
		} else if err != nil {
			return err
		}
		// Two callers may race to create the same key: the first wins.
		_, err = tx.Exec(`INSERT INTO dkim_keys(domain_id, selector, algorithm, private_key, created)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, id, selector, algorithm, der, now.Unix())
		return err
	})
	if err != nil {
		return DKIMKey{}, fmt.Errorf("store dkim key: %w", asTemporary(err))
	}
	keys, err = st.DKIMKeys(ctx, domain)
	if err != nil {
		return DKIMKey{}, err
	}
	for _, k := range keys {
		if k.Selector == selector {
			return k, nil
		}
	}
	return DKIMKey{}, fmt.Errorf("dkim key %s of %s: %w", selector, domain, ErrNotFound)
}

// DeleteDKIMKey removes a retired key (after its DNS record is gone).
func (st *Store) DeleteDKIMKey(ctx context.Context, domain, selector string) error {
	domain, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM dkim_keys WHERE selector = ? AND domain_id = (SELECT id FROM domains WHERE name = ?)`, selector, domain)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("dkim key %s of %s: %w", selector, domain, ErrNotFound)
		}
		return nil
	})
}
