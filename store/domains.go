package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Domain is a mail domain this server receives mail for.
type Domain struct {
	Name     string
	Accounts int64
	Aliases  int64
	Created  time.Time
}

// Alias forwards mail for Address to Target. An Address of the form
// "@domain" is a catch-all: it takes mail for any unknown local part.
type Alias struct {
	Address string
	Target  string
}

// NormalizeDomain lower-cases a domain name and checks its syntax.
func NormalizeDomain(name string) (string, error) {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("%w: domain %q", ErrInvalid, name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%w: domain %q has an empty or long label", ErrInvalid, name)
		}
		for _, r := range label {
			ok := r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 0x7f
			if !ok {
				return "", fmt.Errorf("%w: domain %q has character %q", ErrInvalid, name, r)
			}
		}
	}
	return name, nil
}

// AddDomain adds a local domain. Returns ErrExists if it is there already.
func (st *Store) AddDomain(ctx context.Context, name string) error {
	name, err := NormalizeDomain(name)
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec("INSERT INTO domains(name, created) VALUES (?, ?) ON CONFLICT(name) DO NOTHING", name, st.now().Unix())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("add domain %s: %w", name, ErrExists)
		}
		return nil
	})
}

// DeleteDomain removes a domain that has no accounts and no aliases left.
func (st *Store) DeleteDomain(ctx context.Context, name string) error {
	name, err := NormalizeDomain(name)
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		var id, users, aliases int64
		err := tx.QueryRow(`SELECT id,
			(SELECT count(*) FROM accounts WHERE domain_id = d.id),
			(SELECT count(*) FROM aliases WHERE domain_id = d.id)
			FROM domains d WHERE name = ?`, name).Scan(&id, &users, &aliases)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delete domain %s: %w", name, ErrNotFound)
		} else if err != nil {
			return err
		}
		if users > 0 || aliases > 0 {
			return fmt.Errorf("delete domain %s: %w: it still has %d accounts and %d aliases", name, ErrExists, users, aliases)
		}
		_, err = tx.Exec("DELETE FROM domains WHERE id = ?", id)
		return err
	})
}

// Domains lists the local domains by name.
func (st *Store) Domains(ctx context.Context) ([]Domain, error) {
	rows, err := st.readRows(ctx, `SELECT name, created,
		(SELECT count(*) FROM accounts WHERE domain_id = d.id),
		(SELECT count(*) FROM aliases WHERE domain_id = d.id)
		FROM domains d ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	defer rows.Close()
	var out []Domain
	for rows.Next() {
		var d Domain
		var created int64
		if err := rows.Scan(&d.Name, &created, &d.Accounts, &d.Aliases); err != nil {
			return nil, fmt.Errorf("list domains: %w", err)
		}
		d.Created = time.Unix(created, 0)
		out = append(out, d)
	}
	return out, rows.Err()
}

// IsLocalDomain reports whether mail for this domain is ours.
func (st *Store) IsLocalDomain(ctx context.Context, name string) (bool, error) {
	name, err := NormalizeDomain(name)
	if err != nil {
		return false, nil
	}
	var n int
	if err := st.readRow(ctx, "SELECT count(*) FROM domains WHERE name = ?", name).Scan(&n); err != nil {
		return false, fmt.Errorf("local domain %s: %w: %w", name, ErrTemporary, err)
	}
	return n > 0, nil
}

// AddAlias makes mail for address go to target. address is local@domain
// or "@domain" (catch-all) in a local domain; target must be a local
// account (mail to other servers comes with outbound delivery).
func (st *Store) AddAlias(ctx context.Context, address, target string) error {
	address, domain, err := normalizeAliasAddress(address)
	if err != nil {
		return err
	}
	target, err = NormalizeAddress(target)
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		var domainID int64
		err := tx.QueryRow("SELECT id FROM domains WHERE name = ?", domain).Scan(&domainID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("add alias %s: domain %s: %w", address, domain, ErrNotFound)
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow("SELECT count(*) FROM accounts WHERE address = ?", target).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("add alias %s: target account %s: %w", address, target, ErrNotFound)
		}
		if err := tx.QueryRow("SELECT count(*) FROM accounts WHERE address = ?", address).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("add alias %s: an account has this address: %w", address, ErrExists)
		}
		res, err := tx.Exec(`INSERT INTO aliases(address, domain_id, target) VALUES (?, ?, ?)
			ON CONFLICT(address, target) DO NOTHING`, address, domainID, target)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("add alias %s -> %s: %w", address, target, ErrExists)
		}
		return nil
	})
}

// DeleteAlias removes an alias; with target "" it removes every target of
// the address.
func (st *Store) DeleteAlias(ctx context.Context, address, target string) error {
	address, _, err := normalizeAliasAddress(address)
	if err != nil {
		return err
	}
	if target != "" {
		if target, err = NormalizeAddress(target); err != nil {
			return err
		}
	}
	return st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec("DELETE FROM aliases WHERE address = ? AND (? = '' OR target = ?)", address, target, target)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("delete alias %s: %w", address, ErrNotFound)
		}
		return nil
	})
}

// Aliases lists all aliases by address and target.
func (st *Store) Aliases(ctx context.Context) ([]Alias, error) {
	rows, err := st.readRows(ctx, "SELECT address, target FROM aliases ORDER BY address, target")
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	defer rows.Close()
	var out []Alias
	for rows.Next() {
		var a Alias
		if err := rows.Scan(&a.Address, &a.Target); err != nil {
			return nil, fmt.Errorf("list aliases: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func normalizeAliasAddress(address string) (addr, domain string, err error) {
	if strings.HasPrefix(strings.TrimSpace(address), "@") {
		domain, err = NormalizeDomain(strings.TrimSpace(address)[1:])
		if err != nil {
			return "", "", err
		}
		return "@" + domain, domain, nil
	}
	addr, err = NormalizeAddress(address)
	if err != nil {
		return "", "", err
	}
	_, domain = splitAddress(addr)
	return addr, domain, nil
}

// RecipientDelimiter separates a local part from a tag: mail for
// "alice+news@example.org" goes to "alice@example.org" when no account or
// alias has the tagged address (as Postfix's recipient_delimiter).
const RecipientDelimiter = "+"

// Resolve maps an envelope recipient to the local accounts that receive
// it: an account, an alias (exact, then with the +tag removed, then the
// domain's catch-all). It returns ErrNotLocal if the domain is not ours and
// ErrNotFound if the domain is ours but nobody takes the address. The
// caller must already have rejected source routes and other syntax
// (addr must be a plain local@domain).
func (st *Store) Resolve(ctx context.Context, addr string) ([]string, error) {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return nil, err
	}
	local, domain := splitAddress(addr)
	ok, err := st.IsLocalDomain(ctx, domain)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("recipient %s: %w", addr, ErrNotLocal)
	}
	candidates := []string{addr}
	if i := strings.Index(local, RecipientDelimiter); i > 0 {
		candidates = append(candidates, local[:i]+"@"+domain)
	}
	for _, c := range candidates {
		targets, err := st.lookupRecipient(ctx, c)
		if err != nil || len(targets) > 0 {
			return targets, err
		}
	}
	targets, err := st.lookupRecipient(ctx, "@"+domain)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("recipient %s: %w", addr, ErrNotFound)
	}
	return targets, nil
}

// lookupRecipient returns the account itself or the alias targets of one
// exact address, or nothing.
func (st *Store) lookupRecipient(ctx context.Context, addr string) ([]string, error) {
	rows, err := st.readRows(ctx, `
		SELECT address FROM accounts WHERE address = ?1
		UNION
		SELECT target FROM aliases WHERE address = ?1
		ORDER BY 1`, addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w: %w", addr, ErrTemporary, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("resolve %s: %w: %w", addr, ErrTemporary, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("resolve %s: %w: %w", addr, ErrTemporary, err)
	}
	return out, nil
}
