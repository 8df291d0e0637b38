package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// Session is a signed-in client (a webmail browser) identified by a
// secret token. Only the token's SHA-256 is stored, so a copy of the
// database does not let anyone take over a session.
type Session struct {
	Account  string
	Created  time.Time
	LastSeen time.Time
	// CSRF is a per-session secret that forms echo back.
	CSRF string
}

// sessionTouchEvery is how stale LastSeen may get before Session writes
// it again; it keeps a busy page from costing a write per request.
const sessionTouchEvery = time.Minute

// sessionTokenBytes is the entropy of a session token and a CSRF secret.
const sessionTokenBytes = 32

func randomToken() (string, error) {
	b := make([]byte, sessionTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateSession starts a session for the account and returns its secret
// token. Sessions idle for longer than idle are removed first.
func (a *Account) CreateSession(ctx context.Context, idle time.Duration) (token string, s Session, err error) {
	if token, err = randomToken(); err != nil {
		return "", s, fmt.Errorf("create session: %w: %w", ErrTemporary, err)
	}
	if s.CSRF, err = randomToken(); err != nil {
		return "", s, fmt.Errorf("create session: %w: %w", ErrTemporary, err)
	}
	now := a.st.now()
	s.Account, s.Created, s.LastSeen = a.Address, now, now
	err = a.st.write(ctx, func(tx *txn) error {
		if _, err := tx.Exec("DELETE FROM sessions WHERE last_seen < ?", now.Add(-idle).Unix()); err != nil {
			return err
		}
		_, err := tx.Exec("INSERT INTO sessions(token_hash, account_id, csrf, created, last_seen) VALUES (?, ?, ?, ?, ?)",
			tokenHash(token), a.ID, s.CSRF, now.Unix(), now.Unix())
		return err
	})
	if err != nil {
		return "", s, fmt.Errorf("create session: %w", err)
	}
	return token, s, nil
}

// Session finds the session of a token and marks it used now. A session
// unused for longer than idle has expired: it is removed and, like an
// unknown token, reported as ErrNotFound.
func (st *Store) Session(ctx context.Context, token string, idle time.Duration) (*Account, Session, error) {
	var s Session
	var id int64
	var created, seen int64
	h := tokenHash(token)
	err := st.reader.QueryRowContext(ctx, `
		SELECT a.id, a.address, s.csrf, s.created, s.last_seen
		  FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE s.token_hash = ?`, h).
		Scan(&id, &s.Account, &s.CSRF, &created, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, s, fmt.Errorf("session: %w", ErrNotFound)
	} else if err != nil {
		return nil, s, fmt.Errorf("session: %w: %w", ErrTemporary, err)
	}
	now := st.now()
	s.Created, s.LastSeen = time.Unix(created, 0), time.Unix(seen, 0)
	if now.Sub(s.LastSeen) > idle {
		if err := st.write(ctx, func(tx *txn) error {
			_, err := tx.Exec("DELETE FROM sessions WHERE token_hash = ?", h)
			return err
		}); err != nil {
			return nil, s, fmt.Errorf("expire session: %w", err)
		}
		return nil, s, fmt.Errorf("session expired: %w", ErrNotFound)
	}
	if now.Sub(s.LastSeen) >= sessionTouchEvery {
		if err := st.write(ctx, func(tx *txn) error {
			_, err := tx.Exec("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", now.Unix(), h)
			return err
		}); err != nil {
			return nil, s, fmt.Errorf("touch session: %w", err)
		}
		s.LastSeen = now
	}
	return &Account{st: st, ID: id, Address: s.Account}, s, nil
}

// DeleteSession ends the session of a token (sign-out). An unknown token
// is not an error.
func (st *Store) DeleteSession(ctx context.Context, token string) error {
	err := st.write(ctx, func(tx *txn) error {
		_, err := tx.Exec("DELETE FROM sessions WHERE token_hash = ?", tokenHash(token))
		return err
	})
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteOtherSessions ends every session of the account except the one
// of keepToken (after a password change); keepToken "" ends them all.
func (a *Account) DeleteOtherSessions(ctx context.Context, keepToken string) error {
	var keep []byte
	if keepToken != "" {
		keep = tokenHash(keepToken)
	}
	err := a.st.write(ctx, func(tx *txn) error {
		_, err := tx.Exec("DELETE FROM sessions WHERE account_id = ? AND token_hash IS NOT ?", a.ID, keep)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete sessions of %s: %w", a.Address, err)
	}
	return nil
}

// SessionAlive reports whether the session of a token exists and has been
// used within idle, without marking it used (a long-lived event stream
// checks this, so an open tab alone does not keep a session alive).
func (st *Store) SessionAlive(ctx context.Context, token string, idle time.Duration) (bool, error) {
	var seen int64
	err := st.reader.QueryRowContext(ctx, "SELECT last_seen FROM sessions WHERE token_hash = ?", tokenHash(token)).Scan(&seen)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("session: %w: %w", ErrTemporary, err)
	}
	return st.now().Sub(time.Unix(seen, 0)) <= idle, nil
}
