package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// System flags (RFC 9051 §2.3.2). Anything else is a keyword.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

// Bits of messages.flags.
const (
	flagSeen = 1 << iota
	flagAnswered
	flagFlagged
	flagDeleted
	flagDraft
)

var systemFlags = []struct {
	name string
	bit  int64
}{
	{FlagSeen, flagSeen},
	{FlagAnswered, flagAnswered},
	{FlagFlagged, flagFlagged},
	{FlagDeleted, flagDeleted},
	{FlagDraft, flagDraft},
}

// Message is one message in a mailbox, as a listing sees it.
type Message struct {
	ID           int64 // store-wide identity of this copy
	MailboxID    int64
	UID          uint32
	ModSeq       int64
	Size         int64 // exact byte count of the stored message
	InternalDate time.Time
	Flags        []string
}

// packFlags splits flags into the system-flag bitmask and the keyword
// column (" kw1 kw2 ", so a keyword search is one LIKE). \Recent and
// invalid keywords are dropped.
func packFlags(flags []string) (bits int64, keywords string) {
	var kws []string
outer:
	for _, f := range flags {
		for _, sf := range systemFlags {
			if strings.EqualFold(f, sf.name) {
				bits |= sf.bit
				continue outer
			}
		}
		if !validKeyword(f) {
			continue
		}
		if !slices.ContainsFunc(kws, func(k string) bool { return strings.EqualFold(k, f) }) {
			kws = append(kws, f)
		}
	}
	if len(kws) == 0 {
		return bits, ""
	}
	return bits, " " + strings.Join(kws, " ") + " "
}

// validKeyword accepts IMAP atoms (RFC 9051 flag-keyword) of sane length.
func validKeyword(k string) bool {
	if k == "" || len(k) > 100 || strings.HasPrefix(k, `\`) {
		return false
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`(){%*"\]`, r) {
			return false
		}
	}
	return true
}

func unpackFlags(bits int64, keywords string) []string {
	flags := []string{}
	for _, sf := range systemFlags {
		if bits&sf.bit != 0 {
			flags = append(flags, sf.name)
		}
	}
	return append(flags, strings.Fields(keywords)...)
}

const messageSQL = `SELECT id, mailbox_id, uid, modseq, size, internal_date, flags, keywords FROM messages`

func scanMessage(sc interface{ Scan(...any) error }) (Message, error) {
	var m Message
	var date, bits int64
	var kws string
	err := sc.Scan(&m.ID, &m.MailboxID, &m.UID, &m.ModSeq, &m.Size, &date, &bits, &kws)
	m.InternalDate = time.Unix(date, 0)
	m.Flags = unpackFlags(bits, kws)
	return m, err
}

// ownMailbox checks that mailboxID belongs to this account.
func (a *Account) ownMailbox(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, mailboxID int64) error {
	var n int
	if err := q.QueryRowContext(ctx, "SELECT count(*) FROM mailboxes WHERE id = ? AND account_id = ?", mailboxID, a.ID).Scan(&n); err != nil {
		return fmt.Errorf("mailbox %d: %w: %w", mailboxID, ErrTemporary, err)
	}
	if n == 0 {
		return fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	return nil
}

// Messages returns a snapshot of a mailbox's messages in UID order.
func (a *Account) Messages(ctx context.Context, mailboxID int64) ([]Message, error) {
	return a.messagesWhere(ctx, mailboxID, "", nil)
}

// MessagesSince returns the messages whose modseq is above modseq (for
// catching up after events were missed), in UID order.
func (a *Account) MessagesSince(ctx context.Context, mailboxID int64, modseq int64) ([]Message, error) {
	return a.messagesWhere(ctx, mailboxID, " AND modseq > ?", []any{modseq})
}

func (a *Account) messagesWhere(ctx context.Context, mailboxID int64, cond string, args []any) ([]Message, error) {
	conn, err := a.st.reader.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
	}
	defer conn.Close()
	// One read transaction: the ownership check and the list see the same
	// snapshot.
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
	}
	defer tx.Rollback()
	if err := a.ownMailbox(ctx, tx, mailboxID); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, messageSQL+" WHERE mailbox_id = ?"+cond+" ORDER BY uid",
		append([]any{mailboxID}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Message returns one message by mailbox and UID.
func (a *Account) Message(ctx context.Context, mailboxID int64, uid uint32) (Message, error) {
	m, err := scanMessage(a.st.readRow(ctx, messageSQL+
		` WHERE mailbox_id = ? AND uid = ? AND mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?)`,
		mailboxID, uid, a.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("message %d/%d: %w", mailboxID, uid, ErrNotFound)
	} else if err != nil {
		return m, fmt.Errorf("message %d/%d: %w: %w", mailboxID, uid, ErrTemporary, err)
	}
	return m, nil
}

// Open returns the message's bytes exactly as stored. The caller closes
// the reader.
func (a *Account) Open(ctx context.Context, messageID int64) (io.ReadCloser, error) {
	return a.OpenRange(ctx, messageID, 0, -1)
}

// OpenRange returns n bytes of the message from offset off (n < 0: to the
// end). The caller closes the reader. Small bodies come back from the one
// query that finds the message; large ones are read from their file.
func (a *Account) OpenRange(ctx context.Context, messageID int64, off, n int64) (io.ReadCloser, error) {
	if off < 0 {
		off = 0
	}
	var hash, data []byte
	var size int64
	var isFile bool
	// substr on a BLOB counts bytes, 1-based; a negative n means "to the end".
	err := a.st.readRow(ctx, `
		SELECT b.hash, b.size, b.data IS NULL,
		       substr(b.data, ?1 + 1, CASE WHEN ?2 < 0 THEN b.size ELSE ?2 END)
		  FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id JOIN blobs b ON b.id = m.blob_id
		 WHERE m.id = ?3 AND x.account_id = ?4`, off, n, messageID, a.ID).Scan(&hash, &size, &isFile, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("message %d: %w", messageID, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("open message %d: %w: %w", messageID, ErrTemporary, err)
	}
	if !isFile {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	if off > size {
		off = size
	}
	if n < 0 || off+n > size {
		n = size - off
	}
	rc, err := a.st.blobs.Range(hex.EncodeToString(hash), off, n)
	if err != nil {
		return nil, fmt.Errorf("open message %d: %w: %w", messageID, ErrTemporary, err)
	}
	return rc, nil
}

// Meta returns the parsed envelope and structure of a message.
func (a *Account) Meta(ctx context.Context, messageID int64) (Meta, error) {
	var env, structure string
	var m Meta
	err := a.st.readRow(ctx, `
		SELECT t.envelope, t.structure, t.lines, t.attachments
		  FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id JOIN meta t ON t.blob_id = m.blob_id
		 WHERE m.id = ? AND x.account_id = ?`, messageID, a.ID).Scan(&env, &structure, &m.Lines, &m.Attachments)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("message %d: %w", messageID, ErrNotFound)
	} else if err != nil {
		return m, fmt.Errorf("message %d: %w: %w", messageID, ErrTemporary, err)
	}
	if err := json.Unmarshal([]byte(env), &m.Envelope); err != nil {
		return m, fmt.Errorf("message %d envelope: %w", messageID, err)
	}
	if err := json.Unmarshal([]byte(structure), &m.Structure); err != nil {
		return m, fmt.Errorf("message %d structure: %w", messageID, err)
	}
	return m, nil
}

// FlagOp says how SetFlags combines the given flags with the current ones.
type FlagOp int

const (
	FlagsAdd FlagOp = iota + 1
	FlagsRemove
	FlagsReplace
)

// SetFlags changes the flags of the given UIDs of a mailbox (missing UIDs
// are skipped) and returns the messages that changed, with their new flags
// and modseq. One modseq covers the whole change.
func (a *Account) SetFlags(ctx context.Context, mailboxID int64, uids []uint32, op FlagOp, flags []string) ([]Message, error) {
	bits, kws := packFlags(flags)
	kwList := strings.Fields(kws)
	var changed []Message
	err := a.st.write(ctx, func(tx *txn) error {
		changed = changed[:0]
		modseq, err := a.lockMailbox(tx, mailboxID)
		if err != nil {
			return err
		}
		modseq++
		// Statements prepared once per call: a STORE on a whole mailbox
		// runs them once per message.
		sel, err := tx.Prepare("SELECT id, flags, keywords FROM messages WHERE mailbox_id = ? AND uid = ?")
		if err != nil {
			return err
		}
		defer sel.Close()
		upd, err := tx.Prepare("UPDATE messages SET flags = ?, keywords = ?, modseq = ? WHERE id = ?")
		if err != nil {
			return err
		}
		defer upd.Close()
		for _, uid := range uids {
			var id, cur int64
			var curKws string
			err := sel.QueryRow(mailboxID, uid).Scan(&id, &cur, &curKws)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			} else if err != nil {
				return err
			}
			newBits, newKws := applyFlags(cur, curKws, op, bits, kwList)
			if newBits == cur && newKws == curKws {
				continue
			}
			if _, err := upd.Exec(newBits, newKws, modseq, id); err != nil {
				return err
			}
			m := Message{ID: id, MailboxID: mailboxID, UID: uid, ModSeq: modseq, Flags: unpackFlags(newBits, newKws)}
			changed = append(changed, m)
			tx.publish(Event{Kind: FlagsChanged, AccountID: a.ID, MailboxID: mailboxID, UID: uid, ModSeq: modseq, Flags: m.Flags})
		}
		if len(changed) > 0 {
			_, err = tx.Exec("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", modseq, mailboxID)
		}
		return err
	})
	return changed, err
}

func applyFlags(cur int64, curKws string, op FlagOp, bits int64, kws []string) (int64, string) {
	have := strings.Fields(curKws)
	switch op {
	case FlagsReplace:
		cur, have = bits, kws
	case FlagsAdd:
		cur |= bits
		for _, k := range kws {
			if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, k) }) {
				have = append(have, k)
			}
		}
	case FlagsRemove:
		cur &^= bits
		have = slices.DeleteFunc(have, func(h string) bool {
			return slices.ContainsFunc(kws, func(k string) bool { return strings.EqualFold(h, k) })
		})
	}
	if len(have) == 0 {
		return cur, ""
	}
	return cur, " " + strings.Join(have, " ") + " "
}

// lockMailbox checks a mailbox belongs to the account inside a write and
// returns its current highest modseq.
func (a *Account) lockMailbox(tx *txn, mailboxID int64) (int64, error) {
	var modseq int64
	err := tx.QueryRow("SELECT highest_modseq FROM mailboxes WHERE id = ? AND account_id = ?", mailboxID, a.ID).Scan(&modseq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	}
	return modseq, err
}

// Expunge removes the given UIDs from a mailbox (missing UIDs are
// skipped) and returns the UIDs removed, ascending. Blob files whose last
// reference goes are deleted after the commit.
func (a *Account) Expunge(ctx context.Context, mailboxID int64, uids []uint32) ([]uint32, error) {
	var removed []uint32
	err := a.st.write(ctx, func(tx *txn) error {
		var err error
		removed, err = a.expungeTx(tx, mailboxID, uids)
		if err != nil {
			return err
		}
		return a.st.dropUnreferencedBlobs(tx)
	})
	return removed, err
}

func (a *Account) expungeTx(tx *txn, mailboxID int64, uids []uint32) ([]uint32, error) {
	modseq, err := a.lockMailbox(tx, mailboxID)
	if err != nil {
		return nil, err
	}
	modseq++
	uids = slices.Clone(uids)
	slices.Sort(uids)
	uids = slices.Compact(uids)
	var removed []uint32
	for _, uid := range uids {
		res, err := tx.Exec("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", mailboxID, uid)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		if _, err := tx.Exec(`INSERT INTO expunged(mailbox_id, uid, modseq) VALUES (?, ?, ?)
			ON CONFLICT DO UPDATE SET modseq = excluded.modseq`, mailboxID, uid, modseq); err != nil {
			return nil, err
		}
		removed = append(removed, uid)
		tx.publish(Event{Kind: MessageExpunged, AccountID: a.ID, MailboxID: mailboxID, UID: uid, ModSeq: modseq})
	}
	if len(removed) > 0 {
		if _, err := tx.Exec("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", modseq, mailboxID); err != nil {
			return nil, err
		}
	}
	return removed, nil
}

// CopyResult maps a source UID to the UID of its copy (IMAP COPYUID).
type CopyResult struct {
	UIDValidity uint32 // of the destination
	Source      []uint32
	Dest        []uint32
}

// Copy copies the given UIDs (ascending; missing ones skipped) from one
// mailbox to another of the same account, sharing the bytes. The copies
// keep flags and internal date. Fails with ErrOverQuota if the account
// would exceed its quota.
func (a *Account) Copy(ctx context.Context, from, to int64, uids []uint32) (CopyResult, error) {
	var res CopyResult
	err := a.st.write(ctx, func(tx *txn) error {
		var err error
		res, err = a.copyTx(tx, from, to, uids, true)
		return err
	})
	return res, err
}

// Move moves the given UIDs from one mailbox to another (RFC 6851): the
// copies are added and the originals expunged in one transaction.
func (a *Account) Move(ctx context.Context, from, to int64, uids []uint32) (CopyResult, error) {
	var res CopyResult
	err := a.st.write(ctx, func(tx *txn) error {
		var err error
		res, err = a.copyTx(tx, from, to, uids, false)
		if err != nil {
			return err
		}
		_, err = a.expungeTx(tx, from, res.Source)
		return err
	})
	return res, err
}

func (a *Account) copyTx(tx *txn, from, to int64, uids []uint32, checkQuota bool) (CopyResult, error) {
	var res CopyResult
	if _, err := a.lockMailbox(tx, from); err != nil {
		return res, err
	}
	var uidnext uint32
	var modseq int64
	err := tx.QueryRow("SELECT uidvalidity, uidnext, highest_modseq FROM mailboxes WHERE id = ? AND account_id = ?", to, a.ID).
		Scan(&res.UIDValidity, &uidnext, &modseq)
	if errors.Is(err, sql.ErrNoRows) {
		return res, fmt.Errorf("mailbox %d: %w", to, ErrNotFound)
	} else if err != nil {
		return res, err
	}
	modseq++
	uids = slices.Clone(uids)
	slices.Sort(uids)
	uids = slices.Compact(uids)
	var added int64
	for _, uid := range uids {
		var blobID, size, date, bits int64
		var kws string
		err := tx.QueryRow("SELECT blob_id, size, internal_date, flags, keywords FROM messages WHERE mailbox_id = ? AND uid = ?", from, uid).
			Scan(&blobID, &size, &date, &bits, &kws)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return res, err
		}
		if _, err := tx.Exec(`INSERT INTO messages(mailbox_id, uid, modseq, blob_id, size, internal_date, flags, keywords)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, to, uidnext, modseq, blobID, size, date, bits, kws); err != nil {
			return res, err
		}
		res.Source = append(res.Source, uid)
		res.Dest = append(res.Dest, uidnext)
		tx.publish(Event{Kind: MessageAdded, AccountID: a.ID, MailboxID: to, UID: uidnext, ModSeq: modseq, Flags: unpackFlags(bits, kws)})
		uidnext++
		added += size
	}
	if len(res.Source) == 0 {
		return res, nil
	}
	if checkQuota {
		if err := a.checkQuotaTx(tx, 0); err != nil {
			return res, err
		}
	}
	_, err = tx.Exec("UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE id = ?", uidnext, modseq, to)
	return res, err
}

// checkQuotaTx fails with ErrOverQuota if the account's usage plus extra
// bytes is over its quota.
func (a *Account) checkQuotaTx(tx *txn, extra int64) error {
	var quota, used int64
	if err := tx.QueryRow("SELECT quota_bytes, used_bytes FROM accounts WHERE id = ?", a.ID).Scan(&quota, &used); err != nil {
		return err
	}
	if quota > 0 && used+extra > quota {
		return fmt.Errorf("account %s: %w", a.Address, ErrOverQuota)
	}
	return nil
}
