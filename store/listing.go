package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ListItem is one row of a message list as a mail reader shows it: the
// message with the parts of its meta a list needs.
type ListItem struct {
	Message
	Subject     string
	From        []Address
	To          []Address
	Date        time.Time // Date header; zero if missing or unparsable
	Attachments int
}

// maxListLimit caps one page of List or ListUIDs.
const maxListLimit = 500

const listSQL = `
SELECT m.id, m.mailbox_id, m.uid, m.modseq, m.size, m.internal_date, m.flags, m.keywords,
       t.subject, t.envelope, t.date, t.attachments
  FROM messages m JOIN meta t ON t.blob_id = m.blob_id`

func scanListItem(rows *sql.Rows) (ListItem, error) {
	var it ListItem
	var idate, bits, date int64
	var kws, env string
	if err := rows.Scan(&it.ID, &it.MailboxID, &it.UID, &it.ModSeq, &it.Size, &idate, &bits, &kws,
		&it.Subject, &env, &date, &it.Attachments); err != nil {
		return it, err
	}
	it.InternalDate = time.Unix(idate, 0)
	it.Flags = unpackFlags(bits, kws)
	if date != 0 {
		it.Date = time.Unix(date, 0)
	}
	var e struct{ From, To []Address }
	if err := json.Unmarshal([]byte(env), &e); err != nil {
		return it, fmt.Errorf("message %d envelope: %w", it.ID, err)
	}
	it.From, it.To = e.From, e.To
	return it, nil
}

// List returns one page of a mailbox, newest (highest UID) first: limit
// messages (at most 500) after skipping offset. The page is found on the
// (mailbox, uid) index alone, so its cost does not grow with the size of
// the mailbox beyond the skipped index entries.
func (a *Account) List(ctx context.Context, mailboxID int64, offset, limit int) ([]ListItem, error) {
	if offset < 0 || limit <= 0 {
		return nil, fmt.Errorf("list: %w: offset %d limit %d", ErrInvalid, offset, limit)
	}
	limit = min(limit, maxListLimit)
	return a.listQuery(ctx, mailboxID, listSQL+`
		 WHERE m.id IN (SELECT id FROM messages WHERE mailbox_id = ? ORDER BY uid DESC LIMIT ? OFFSET ?)
		 ORDER BY m.uid DESC`, mailboxID, limit, offset)
}

// ListUIDs returns the given messages of a mailbox (at most 500; missing
// UIDs are skipped), newest first, for a page of search results.
func (a *Account) ListUIDs(ctx context.Context, mailboxID int64, uids []uint32) ([]ListItem, error) {
	if len(uids) > maxListLimit {
		return nil, fmt.Errorf("list: %w: %d uids", ErrInvalid, len(uids))
	}
	if len(uids) == 0 {
		return nil, nil
	}
	args := []any{mailboxID}
	for _, u := range uids {
		args = append(args, u)
	}
	return a.listQuery(ctx, mailboxID, listSQL+`
		 WHERE m.mailbox_id = ? AND m.uid IN (?`+strings.Repeat(",?", len(uids)-1)+`)
		 ORDER BY m.uid DESC`, args...)
}

func (a *Account) listQuery(ctx context.Context, mailboxID int64, query string, args ...any) ([]ListItem, error) {
	conn, err := a.st.reader.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("list: %w: %w", ErrTemporary, err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("list: %w: %w", ErrTemporary, err)
	}
	defer tx.Rollback()
	if err := a.ownMailbox(ctx, tx, mailboxID); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	var out []ListItem
	for rows.Next() {
		it, err := scanListItem(rows)
		if err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list: %w: %w", ErrTemporary, err)
	}
	return out, nil
}

// Contact is an address the account has corresponded with.
type Contact struct {
	Name    string
	Address string // local@domain
}

// recentSendersScanned bounds how many of the newest messages Contacts
// looks at for senders, so completion stays fast on a large mailbox.
const recentSendersScanned = 2000

// Contacts returns up to limit past correspondents whose address or name
// starts with prefix (case-insensitive; "" matches all): first the
// addresses the account sent mail to (most used first), then senders of
// the newest messages in its INBOX.
func (a *Account) Contacts(ctx context.Context, prefix string, limit int) ([]Contact, error) {
	if limit <= 0 {
		return nil, nil
	}
	like := likePrefix(strings.ToLower(prefix))
	rows, err := a.st.reader.QueryContext(ctx, `
		SELECT name, address FROM contacts
		 WHERE account_id = ? AND (address LIKE ? ESCAPE '\' OR lower(name) LIKE ? ESCAPE '\')
		 ORDER BY uses DESC, last_used DESC LIMIT ?`, a.ID, like, like, limit)
	if err != nil {
		return nil, fmt.Errorf("contacts: %w: %w", ErrTemporary, err)
	}
	var out []Contact
	for rows.Next() {
		var c Contact
		if err := rows.Scan(&c.Name, &c.Address); err != nil {
			rows.Close()
			return nil, fmt.Errorf("contacts: %w: %w", ErrTemporary, err)
		}
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("contacts: %w: %w", ErrTemporary, err)
	}
	if len(out) >= limit {
		return out, nil
	}
	rows, err = a.st.reader.QueryContext(ctx, `
		SELECT t.envelope FROM messages m JOIN meta t ON t.blob_id = m.blob_id
		 WHERE m.id IN (SELECT id FROM messages
		                 WHERE mailbox_id = (SELECT id FROM mailboxes WHERE account_id = ? AND role = 'inbox')
		                 ORDER BY uid DESC LIMIT ?)
		 ORDER BY m.uid DESC`, a.ID, recentSendersScanned)
	if err != nil {
		return nil, fmt.Errorf("contacts: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	lp := strings.ToLower(prefix)
	for rows.Next() && len(out) < limit {
		var env string
		if err := rows.Scan(&env); err != nil {
			return nil, fmt.Errorf("contacts: %w: %w", ErrTemporary, err)
		}
		var e struct{ From []Address }
		if json.Unmarshal([]byte(env), &e) != nil {
			continue
		}
		for _, f := range e.From {
			if f.Mailbox == "" || f.Host == "" {
				continue
			}
			addr := strings.ToLower(f.Mailbox + "@" + f.Host)
			if !strings.HasPrefix(addr, lp) && !strings.HasPrefix(strings.ToLower(f.Name), lp) {
				continue
			}
			if slices.ContainsFunc(out, func(c Contact) bool { return c.Address == addr }) || addr == a.Address {
				continue
			}
			out = append(out, Contact{Name: f.Name, Address: addr})
		}
	}
	return out, rows.Err()
}
