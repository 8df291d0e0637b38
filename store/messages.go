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
	"strconv"
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
	res, err := a.UpdateFlags(ctx, mailboxID, uids, op, flags)
	if err != nil {
		return nil, err
	}
	changed := res.Messages[:0]
	for _, m := range res.Messages {
		if m.ModSeq == res.ModSeq {
			changed = append(changed, m)
		}
	}
	return changed, nil
}

// FlagUpdate is what UpdateFlags did.
type FlagUpdate struct {
	// ModSeq is the modseq of the change; 0 if nothing changed.
	ModSeq int64
	// Messages are the messages of the set that exist, in UID order,
	// with their flags after the change. Those that changed carry ModSeq;
	// the others keep theirs. Only ID, MailboxID, UID, ModSeq and Flags
	// are set.
	Messages []Message
}

// UpdateFlags is SetFlags reporting every message of the set, changed or
// not (what an IMAP STORE answers with), from the same transaction.
//
// The work is set-based: one query reads the set, one statement writes
// the messages that change. A statement per message was
// quadratic: every statement inside the batch's savepoint truncates
// SQLite's in-memory sub-journal by walking it from the start, and that
// journal grows with every page the change touched (a STORE on 100,000
// messages took 18 s).
func (a *Account) UpdateFlags(ctx context.Context, mailboxID int64, uids []uint32, op FlagOp, flags []string) (FlagUpdate, error) {
	bits, kws := packFlags(flags)
	kwList := strings.Fields(kws)
	var res FlagUpdate
	err := a.st.write(ctx, func(tx *txn) error {
		res = FlagUpdate{}
		modseq, err := a.lockMailbox(tx, mailboxID)
		if err != nil {
			return err
		}
		modseq++
		rows, err := tx.Query(`SELECT m.id, m.uid, m.modseq, m.flags, m.keywords
			  FROM json_each(?) r CROSS JOIN messages m
			 WHERE m.mailbox_id = ? AND m.uid BETWEEN r.value->>0 AND r.value->>1`,
			uidRangesJSON(uids), mailboxID)
		if err != nil {
			return err
		}
		var upd []byte // JSON [[id, flags, keywords], ...] of the changed messages
		var lastFlags []string
		var lastBits int64
		var lastKws string
		for rows.Next() {
			var m Message
			var cur int64
			var curKws string
			if err := rows.Scan(&m.ID, &m.UID, &m.ModSeq, &cur, &curKws); err != nil {
				rows.Close()
				return err
			}
			m.MailboxID = mailboxID
			newBits, newKws := applyFlags(cur, curKws, op, bits, kwList)
			// Messages of one STORE mostly end with the same flags: share
			// the slice rather than allocating one per message.
			if lastFlags == nil || newBits != lastBits || newKws != lastKws {
				lastFlags, lastBits, lastKws = unpackFlags(newBits, newKws), newBits, newKws
			}
			m.Flags = lastFlags
			if newBits != cur || newKws != curKws {
				m.ModSeq = modseq
				if len(upd) == 0 {
					upd = append(upd, '[')
				} else {
					upd = append(upd, ',')
				}
				upd = append(upd, '[')
				upd = strconv.AppendInt(upd, m.ID, 10)
				upd = append(upd, ',')
				upd = strconv.AppendInt(upd, newBits, 10)
				upd = append(upd, ',')
				upd = appendJSONString(upd, newKws)
				upd = append(upd, ']')
			}
			res.Messages = append(res.Messages, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(upd) == 0 {
			return nil // nothing changes: no modseq, no events
		}
		upd = append(upd, ']')
		if _, err := tx.Exec(`UPDATE messages SET flags = j.value->>1, keywords = j.value->>2, modseq = ?
			  FROM json_each(?) j WHERE messages.id = j.value->>0`, modseq, string(upd)); err != nil {
			return err
		}
		for _, m := range res.Messages {
			if m.ModSeq == modseq {
				tx.publish(Event{Kind: FlagsChanged, AccountID: a.ID, MailboxID: mailboxID, UID: m.UID, ModSeq: modseq, Flags: m.Flags})
			}
		}
		res.ModSeq = modseq
		_, err = tx.Exec("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", modseq, mailboxID)
		return err
	})
	if err != nil {
		return FlagUpdate{}, err
	}
	return res, nil
}

// uidRangesJSON returns uids (any order, duplicates allowed) as a JSON
// array of ascending, disjoint [start, stop] pairs, for json_each: one
// statement then covers any set, however sparse.
func uidRangesJSON(uids []uint32) string {
	sorted := slices.IsSorted(uids)
	if !sorted {
		uids = slices.Clone(uids)
		slices.Sort(uids)
	}
	b := make([]byte, 0, 32)
	b = append(b, '[')
	for i := 0; i < len(uids); {
		j := i
		for j+1 < len(uids) && uids[j+1] <= uids[j]+1 {
			j++
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendUint(b, uint64(uids[i]), 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(uids[j]), 10)
		b = append(b, ']')
		i = j + 1
	}
	return string(append(b, ']'))
}

// appendIDsJSON appends ids as a JSON array.
func appendIDsJSON(b []byte, ids []int64) []byte {
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string. Keywords are atoms
// (validKeyword), so the quick path is the usual one.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func applyFlags(cur int64, curKws string, op FlagOp, bits int64, kws []string) (int64, string) {
	switch op {
	case FlagsReplace:
		if len(kws) == 0 {
			return bits, ""
		}
		return bits, " " + strings.Join(kws, " ") + " "
	case FlagsAdd:
		cur |= bits
	case FlagsRemove:
		cur &^= bits
	}
	if len(kws) == 0 {
		return cur, curKws // system flags only: the keywords stay as they are
	}
	have := strings.Fields(curKws)
	switch op {
	case FlagsAdd:
		for _, k := range kws {
			if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, k) }) {
				have = append(have, k)
			}
		}
	case FlagsRemove:
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

// expungeTx removes uids from a mailbox in three set-based statements
// (see UpdateFlags for why not one per message).
func (a *Account) expungeTx(tx *txn, mailboxID int64, uids []uint32) ([]uint32, error) {
	modseq, err := a.lockMailbox(tx, mailboxID)
	if err != nil {
		return nil, err
	}
	modseq++
	rows, err := tx.Query(`SELECT m.id, m.uid FROM json_each(?) r CROSS JOIN messages m
		 WHERE m.mailbox_id = ? AND m.uid BETWEEN r.value->>0 AND r.value->>1`,
		uidRangesJSON(uids), mailboxID)
	if err != nil {
		return nil, err
	}
	var ids []int64
	var removed []uint32
	for rows.Next() {
		var id int64
		var uid uint32
		if err := rows.Scan(&id, &uid); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
		removed = append(removed, uid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(removed) == 0 {
		return nil, nil
	}
	if _, err := tx.Exec("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))", string(appendIDsJSON(nil, ids))); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(`INSERT INTO expunged(mailbox_id, uid, modseq)
		SELECT ?, value, ? FROM json_each(?) WHERE true
		ON CONFLICT DO UPDATE SET modseq = excluded.modseq`, mailboxID, modseq, uidsJSON(removed)); err != nil {
		return nil, err
	}
	for _, uid := range removed {
		tx.publish(Event{Kind: MessageExpunged, AccountID: a.ID, MailboxID: mailboxID, UID: uid, ModSeq: modseq})
	}
	if _, err := tx.Exec("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", modseq, mailboxID); err != nil {
		return nil, err
	}
	return removed, nil
}

// uidsJSON returns uids as a JSON array.
func uidsJSON(uids []uint32) string {
	b := make([]byte, 0, 8*len(uids)+2)
	b = append(b, '[')
	for i, u := range uids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(u), 10)
	}
	return string(append(b, ']'))
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

// copyTx reads the source set in one query and inserts the copies in one
// statement (see UpdateFlags for why not one per message).
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
	rows, err := tx.Query(`SELECT m.id, m.uid, m.flags, m.keywords FROM json_each(?) r CROSS JOIN messages m
		 WHERE m.mailbox_id = ? AND m.uid BETWEEN r.value->>0 AND r.value->>1`,
		uidRangesJSON(uids), from)
	if err != nil {
		return res, err
	}
	var ids []int64
	var evs []Event
	for rows.Next() {
		var id, bits int64
		var uid uint32
		var kws string
		if err := rows.Scan(&id, &uid, &bits, &kws); err != nil {
			rows.Close()
			return res, err
		}
		ids = append(ids, id)
		res.Source = append(res.Source, uid)
		res.Dest = append(res.Dest, uidnext)
		evs = append(evs, Event{Kind: MessageAdded, AccountID: a.ID, MailboxID: to, UID: uidnext, ModSeq: modseq, Flags: unpackFlags(bits, kws)})
		uidnext++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	if len(ids) == 0 {
		return res, nil
	}
	// json_each's key is the index in the array: the copy of ids[k] gets
	// res.Dest[k].
	if _, err := tx.Exec(`INSERT INTO messages(mailbox_id, uid, modseq, blob_id, size, internal_date, flags, keywords)
		SELECT ?, ? + j.key, ?, m.blob_id, m.size, m.internal_date, m.flags, m.keywords
		  FROM json_each(?) j CROSS JOIN messages m WHERE m.id = j.value`,
		to, res.Dest[0], modseq, string(appendIDsJSON(nil, ids))); err != nil {
		return res, err
	}
	if checkQuota {
		if err := a.checkQuotaTx(tx, 0); err != nil {
			return res, err
		}
	}
	for _, ev := range evs {
		tx.publish(ev)
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
