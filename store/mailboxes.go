package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Separator is the hierarchy delimiter in mailbox names.
const Separator = "/"

// Mailbox is a folder of one account.
type Mailbox struct {
	ID            int64
	Name          string
	Role          string // RoleInbox, RoleSent, ... or "" for a plain folder
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq int64
	Subscribed    bool
	// Counts, filled by Mailboxes and Mailbox.
	Messages int64
	Unseen   int64
	Size     int64
	// Deleted counts messages flagged \Deleted; DeletedSize is their
	// bytes (IMAP STATUS DELETED and DELETED-STORAGE).
	Deleted     int64
	DeletedSize int64
}

// mailboxSQL reads the counts from the counters that triggers keep on
// each mailbox row (schema step 3), so it costs the same for 10 or 100,000
// messages.
const mailboxSQL = `
SELECT b.id, b.name, b.role, b.uidvalidity, b.uidnext, b.highest_modseq, b.subscribed,
       b.n_messages, b.n_unseen, b.n_bytes, b.n_deleted, b.n_deleted_bytes
  FROM mailboxes b`

func scanMailbox(sc interface{ Scan(...any) error }) (Mailbox, error) {
	var mb Mailbox
	err := sc.Scan(&mb.ID, &mb.Name, &mb.Role, &mb.UIDValidity, &mb.UIDNext, &mb.HighestModSeq,
		&mb.Subscribed, &mb.Messages, &mb.Unseen, &mb.Size, &mb.Deleted, &mb.DeletedSize)
	return mb, err
}

// Mailboxes lists the account's mailboxes, INBOX first, then by name.
func (a *Account) Mailboxes(ctx context.Context) ([]Mailbox, error) {
	rows, err := a.st.readRows(ctx, mailboxSQL+`
		WHERE b.account_id = ? GROUP BY b.id ORDER BY b.role != 'inbox', b.name`, a.ID)
	if err != nil {
		return nil, fmt.Errorf("list mailboxes: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	var out []Mailbox
	for rows.Next() {
		mb, err := scanMailbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list mailboxes: %w: %w", ErrTemporary, err)
		}
		out = append(out, mb)
	}
	return out, rows.Err()
}

// Mailbox returns one mailbox by name ("INBOX" in any case is the inbox).
func (a *Account) Mailbox(ctx context.Context, name string) (Mailbox, error) {
	if strings.EqualFold(name, "INBOX") {
		return a.MailboxByRole(ctx, RoleInbox)
	}
	return a.mailboxWhere(ctx, "b.name = ?", name)
}

// MailboxByID returns one mailbox of this account by ID.
func (a *Account) MailboxByID(ctx context.Context, id int64) (Mailbox, error) {
	return a.mailboxWhere(ctx, "b.id = ?", id)
}

// MailboxByRole returns the account's mailbox with a special-use role.
func (a *Account) MailboxByRole(ctx context.Context, role string) (Mailbox, error) {
	return a.mailboxWhere(ctx, "b.role = ?", role)
}

func (a *Account) mailboxWhere(ctx context.Context, cond string, arg any) (Mailbox, error) {
	mb, err := scanMailbox(a.st.readRow(ctx, mailboxSQL+
		" WHERE b.account_id = ? AND "+cond+" GROUP BY b.id", a.ID, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return mb, fmt.Errorf("mailbox %v: %w", arg, ErrNotFound)
	} else if err != nil {
		return mb, fmt.Errorf("mailbox %v: %w: %w", arg, ErrTemporary, err)
	}
	return mb, nil
}

// nextUIDValidity hands out a UIDVALIDITY never used before on this
// server: the current time, or one more than the last if that is later.
// A mailbox deleted and created again under its name gets a new one.
func nextUIDValidity(tx *txn, now time.Time) (uint32, error) {
	var last int64
	err := tx.QueryRow("SELECT value FROM settings WHERE key = 'uidvalidity'").Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	v := max(now.Unix(), last+1)
	if _, err := tx.Exec(`INSERT INTO settings(key, value) VALUES ('uidvalidity', ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, v); err != nil {
		return 0, err
	}
	return uint32(v), nil
}

func insertMailbox(tx *txn, accountID int64, name, role string, now time.Time) (int64, error) {
	uv, err := nextUIDValidity(tx, now)
	if err != nil {
		return 0, err
	}
	res, err := tx.Exec(`INSERT INTO mailboxes(account_id, name, role, uidvalidity) VALUES (?, ?, ?, ?)
		ON CONFLICT(account_id, name) DO NOTHING`, accountID, name, role, uv)
	if err != nil {
		return 0, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return 0, fmt.Errorf("create mailbox %q: %w", name, ErrExists)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	tx.publish(Event{Kind: MailboxCreated, AccountID: accountID, MailboxID: id, Name: name})
	return id, nil
}

// validMailboxName checks a mailbox name: not empty, no empty hierarchy
// levels, no control characters, not INBOX's name.
func validMailboxName(name string) error {
	if name == "" || len(name) > 1000 {
		return fmt.Errorf("%w: mailbox name length", ErrInvalid)
	}
	for _, part := range strings.Split(name, Separator) {
		if part == "" {
			return fmt.Errorf("%w: mailbox name %q has an empty level", ErrInvalid, name)
		}
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("%w: mailbox name has a control character", ErrInvalid)
		}
	}
	if strings.EqualFold(name, "INBOX") {
		return fmt.Errorf("mailbox INBOX: %w", ErrExists)
	}
	return nil
}

// createParents creates the missing ancestors of name ("a/b" for "a/b/c").
func (a *Account) createParents(tx *txn, name string) error {
	parts := strings.Split(name, Separator)
	for i := 1; i < len(parts); i++ {
		parent := strings.Join(parts[:i], Separator)
		var n int
		if err := tx.QueryRow("SELECT count(*) FROM mailboxes WHERE account_id = ? AND name = ?", a.ID, parent).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			if _, err := insertMailbox(tx, a.ID, parent, "", a.st.now()); err != nil {
				return err
			}
		}
	}
	return nil
}

// CreateMailbox creates a mailbox (and any missing parents), with an
// optional special-use role. Returns ErrExists if the name is taken.
func (a *Account) CreateMailbox(ctx context.Context, name, role string) (Mailbox, error) {
	if err := validMailboxName(name); err != nil {
		return Mailbox{}, err
	}
	err := a.st.write(ctx, func(tx *txn) error {
		if err := a.createParents(tx, name); err != nil {
			return err
		}
		_, err := insertMailbox(tx, a.ID, name, role, a.st.now())
		return err
	})
	if err != nil {
		return Mailbox{}, err
	}
	return a.Mailbox(ctx, name)
}

// RenameMailbox renames a mailbox and its children, keeping their
// UIDVALIDITY. Renaming INBOX is not supported (ErrInvalid).
func (a *Account) RenameMailbox(ctx context.Context, from, to string) error {
	if strings.EqualFold(from, "INBOX") {
		return fmt.Errorf("%w: INBOX cannot be renamed", ErrInvalid)
	}
	if err := validMailboxName(to); err != nil {
		return err
	}
	return a.st.write(ctx, func(tx *txn) error {
		var id int64
		err := tx.QueryRow("SELECT id FROM mailboxes WHERE account_id = ? AND name = ?", a.ID, from).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("rename mailbox %q: %w", from, ErrNotFound)
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow("SELECT count(*) FROM mailboxes WHERE account_id = ? AND (name = ? OR name LIKE ? ESCAPE '\\')",
			a.ID, to, likePrefix(to+Separator)).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("rename mailbox to %q: %w", to, ErrExists)
		}
		rows, err := tx.Query("SELECT id, name FROM mailboxes WHERE account_id = ? AND (name = ? OR name LIKE ? ESCAPE '\\')",
			a.ID, from, likePrefix(from+Separator))
		if err != nil {
			return err
		}
		type ren struct {
			id   int64
			name string
		}
		var list []ren
		for rows.Next() {
			var r ren
			if err := rows.Scan(&r.id, &r.name); err != nil {
				rows.Close()
				return err
			}
			r.name = to + strings.TrimPrefix(r.name, from)
			list = append(list, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range list {
			if _, err := tx.Exec("UPDATE mailboxes SET name = ? WHERE id = ?", r.name, r.id); err != nil {
				return err
			}
			tx.publish(Event{Kind: MailboxRenamed, AccountID: a.ID, MailboxID: r.id, Name: r.name})
		}
		// New parents of the new name, as CREATE would make them.
		return a.createParents(tx, to)
	})
}

// DeleteMailbox deletes a mailbox and its messages. INBOX cannot be
// deleted (ErrInvalid); a mailbox with children is refused (ErrExists),
// as RFC 9051 §6.3.9 allows.
func (a *Account) DeleteMailbox(ctx context.Context, name string) error {
	if strings.EqualFold(name, "INBOX") {
		return fmt.Errorf("%w: INBOX cannot be deleted", ErrInvalid)
	}
	return a.st.write(ctx, func(tx *txn) error {
		var id int64
		err := tx.QueryRow("SELECT id FROM mailboxes WHERE account_id = ? AND name = ?", a.ID, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delete mailbox %q: %w", name, ErrNotFound)
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow("SELECT count(*) FROM mailboxes WHERE account_id = ? AND name LIKE ? ESCAPE '\\'",
			a.ID, likePrefix(name+Separator)).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("delete mailbox %q: %w: it has children", name, ErrExists)
		}
		if _, err := tx.Exec("DELETE FROM mailboxes WHERE id = ?", id); err != nil {
			return err
		}
		tx.publish(Event{Kind: MailboxDeleted, AccountID: a.ID, MailboxID: id})
		return a.st.dropUnreferencedBlobs(tx)
	})
}

// SetSubscribed sets a mailbox's subscription (IMAP LSUB/LIST SUBSCRIBED).
func (a *Account) SetSubscribed(ctx context.Context, name string, on bool) error {
	mb, err := a.Mailbox(ctx, name)
	if err != nil {
		return err
	}
	return a.st.write(ctx, func(tx *txn) error {
		_, err := tx.Exec("UPDATE mailboxes SET subscribed = ? WHERE id = ?", on, mb.ID)
		return err
	})
}

// likePrefix escapes s for a LIKE pattern matching names starting with s.
func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}
