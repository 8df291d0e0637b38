package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MTA-STS policy modes (RFC 8461 §3.2).
const (
	MTASTSEnforce = "enforce"
	MTASTSTesting = "testing"
	MTASTSNone    = "none"
)

// MTASTSPolicy is a recipient domain's MTA-STS policy as the queue runner
// last fetched it (RFC 8461). The store keeps one per domain so that a
// policy keeps applying across restarts until it expires, even when its
// DNS record or web server can no longer be reached (that is what stops a
// downgrade to plain text).
type MTASTSPolicy struct {
	// Domain is the recipient domain (lower case, no trailing dot).
	Domain string
	// ID is the id of the _mta-sts TXT record the policy was fetched
	// under; a different id in DNS means the policy changed.
	ID string
	// Mode is MTASTSEnforce, MTASTSTesting or MTASTSNone.
	Mode string
	// MX are the policy's mx patterns ("mx.example.com",
	// "*.example.net").
	MX []string
	// MaxAge is how long the policy may be cached after Fetched.
	MaxAge time.Duration
	// Fetched is when the policy was last fetched (or confirmed by a
	// fetch).
	Fetched time.Time
}

// Expires is when the cached policy stops applying.
func (p MTASTSPolicy) Expires() time.Time { return p.Fetched.Add(p.MaxAge) }

// MTASTSPolicy returns the cached policy of domain, expired or not.
// ErrNotFound if none was ever saved.
func (st *Store) MTASTSPolicy(ctx context.Context, domain string) (MTASTSPolicy, error) {
	domain, err := NormalizeDomain(domain)
	if err != nil {
		return MTASTSPolicy{}, err
	}
	p := MTASTSPolicy{Domain: domain}
	var mx string
	var maxAge, fetched int64
	err = st.readRow(ctx, `SELECT policy_id, mode, mx, max_age, fetched FROM mta_sts WHERE domain = ?`, domain).
		Scan(&p.ID, &p.Mode, &mx, &maxAge, &fetched)
	if errors.Is(err, sql.ErrNoRows) {
		return MTASTSPolicy{}, fmt.Errorf("mta-sts policy of %s: %w", domain, ErrNotFound)
	}
	if err != nil {
		return MTASTSPolicy{}, fmt.Errorf("mta-sts policy of %s: %w: %w", domain, ErrTemporary, err)
	}
	if mx != "" {
		p.MX = strings.Split(mx, "\n")
	}
	p.MaxAge, p.Fetched = time.Duration(maxAge)*time.Second, time.Unix(fetched, 0)
	return p, nil
}

// SaveMTASTSPolicy stores p as its domain's policy, replacing the one
// before. ErrInvalid for a bad domain or mode.
func (st *Store) SaveMTASTSPolicy(ctx context.Context, p MTASTSPolicy) error {
	domain, err := NormalizeDomain(p.Domain)
	if err != nil {
		return err
	}
	switch p.Mode {
	case MTASTSEnforce, MTASTSTesting, MTASTSNone:
	default:
		return fmt.Errorf("mta-sts policy of %s: %w: mode %q", domain, ErrInvalid, p.Mode)
	}
	for _, mx := range p.MX {
		if mx == "" || strings.ContainsAny(mx, "\n") {
			return fmt.Errorf("mta-sts policy of %s: %w: mx %q", domain, ErrInvalid, mx)
		}
	}
	maxAge := int64(p.MaxAge / time.Second)
	fetched := p.Fetched.Unix()
	err = st.write(ctx, func(tx *txn) error {
		_, err := tx.Exec(`INSERT INTO mta_sts(domain, policy_id, mode, mx, max_age, fetched, expires)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode, mx = excluded.mx,
				max_age = excluded.max_age, fetched = excluded.fetched, expires = excluded.expires`,
			domain, p.ID, p.Mode, strings.Join(p.MX, "\n"), maxAge, fetched, fetched+maxAge)
		return err
	})
	if err != nil {
		return fmt.Errorf("save mta-sts policy of %s: %w", domain, asTemporary(err))
	}
	return nil
}

// DeleteMTASTSPolicies removes the policies that expired before t and
// returns how many went. An expired policy no longer applies (RFC 8461
// §5.1), so keeping it would only grow the table.
func (st *Store) DeleteMTASTSPolicies(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec(`DELETE FROM mta_sts WHERE expires < ?`, t.Unix())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired mta-sts policies: %w", asTemporary(err))
	}
	return int(n), nil
}
