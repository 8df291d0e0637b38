package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// UIDRange is an inclusive range of UIDs, Start <= Stop.
type UIDRange struct {
	Start, Stop uint32
}

// spanSlack is how many UIDs outside the asked ranges one range query
// may read (before the factor spanDensity), so that nearby ranges share
// one index scan; ranges further apart get a query each.
const (
	spanSlack   = 256
	spanDensity = 4
)

// UIDs returns the UIDs of a mailbox in ascending order: what a protocol
// keeps to number messages (IMAP sequence numbers) without loading them.
func (a *Account) UIDs(ctx context.Context, mailboxID int64) ([]uint32, error) {
	conn, err := a.st.reader.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("list uids: %w: %w", ErrTemporary, err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("list uids: %w: %w", ErrTemporary, err)
	}
	defer tx.Rollback()
	if err := a.ownMailbox(ctx, tx, mailboxID); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", mailboxID)
	if err != nil {
		return nil, fmt.Errorf("list uids: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var uid uint32
		if err := rows.Scan(&uid); err != nil {
			return nil, fmt.Errorf("list uids: %w: %w", ErrTemporary, err)
		}
		out = append(out, uid)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list uids: %w: %w", ErrTemporary, err)
	}
	return out, nil
}

// spans groups ascending, disjoint ranges into UID spans that one index
// range scan reads each: a span covers at most spanDensity times the
// UIDs its ranges ask for, plus spanSlack. exact keeps one span per
// range, for rows too large to read in vain (bodies).
func spans(ranges []UIDRange, exact bool) []UIDRange {
	if exact {
		return ranges
	}
	var out []UIDRange
	var asked uint64
	for _, r := range ranges {
		n := len(out)
		if n > 0 {
			span := uint64(r.Stop) - uint64(out[n-1].Start) + 1
			if span <= spanDensity*(asked+uint64(r.Stop-r.Start)+1)+spanSlack {
				out[n-1].Stop = r.Stop
				asked += uint64(r.Stop-r.Start) + 1
				continue
			}
		}
		out = append(out, r)
		asked = uint64(r.Stop-r.Start) + 1
	}
	return out
}

// rangeFilter tells the UIDs of a span's rows that were asked for. The
// UIDs it is given must not decrease.
type rangeFilter struct {
	ranges []UIDRange // normalised
	next   int        // the first range that may hold the next UID
}

func (f *rangeFilter) has(uid uint32) bool {
	for f.next < len(f.ranges) && f.ranges[f.next].Stop < uid {
		f.next++
	}
	return f.next < len(f.ranges) && uid >= f.ranges[f.next].Start
}

// normRanges sorts ranges and merges those that overlap or touch.
func normRanges(ranges []UIDRange) []UIDRange {
	out := make([]UIDRange, 0, len(ranges))
	for _, r := range ranges {
		if r.Start > r.Stop {
			r.Start, r.Stop = r.Stop, r.Start
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b UIDRange) int { return cmp.Compare(a.Start, b.Start) })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && uint64(r.Start) <= uint64(merged[n-1].Stop)+1 {
			merged[n-1].Stop = max(merged[n-1].Stop, r.Stop)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// MessagesIn returns the messages of a mailbox whose UIDs fall in the
// ranges, in UID order (each message once). A mailbox of another account
// is ErrNotFound.
func (a *Account) MessagesIn(ctx context.Context, mailboxID int64, ranges []UIDRange) ([]Message, error) {
	var out []Message
	err := a.inRanges(ctx, mailboxID, ranges, false, messageSQL+" WHERE ", "", func(rows *sql.Rows, f *rangeFilter) error {
		m, err := scanMessage(rows)
		if err != nil {
			return err
		}
		if f.has(m.UID) {
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// MetaFields says which parts of Meta MessagesWithMeta decodes.
type MetaFields int

const (
	MetaEnvelope MetaFields = 1 << iota
	MetaStructure
)

// MessageMeta is a message with its parsed meta data.
type MessageMeta struct {
	Message
	Meta Meta
}

// MessagesWithMeta is MessagesIn with each message's Meta; only the parts
// asked for in fields are decoded (Lines and Attachments always are).
func (a *Account) MessagesWithMeta(ctx context.Context, mailboxID int64, ranges []UIDRange, fields MetaFields) ([]MessageMeta, error) {
	env, structure := "''", "''"
	if fields&MetaEnvelope != 0 {
		env = "t.envelope"
	}
	if fields&MetaStructure != 0 {
		structure = "t.structure"
	}
	q := `SELECT m.id, m.mailbox_id, m.uid, m.modseq, m.size, m.internal_date, m.flags, m.keywords,
	             ` + env + `, ` + structure + `, t.lines, t.attachments
	        FROM messages m JOIN meta t ON t.blob_id = m.blob_id WHERE `
	var out []MessageMeta
	// The JSON columns are read in place (RawBytes) and decoded only for
	// the rows kept.
	var envJSON, structJSON, kws sql.RawBytes
	err := a.inRanges(ctx, mailboxID, ranges, false, q, "m.", func(rows *sql.Rows, f *rangeFilter) error {
		var mm MessageMeta
		var date, bits int64
		if err := rows.Scan(&mm.ID, &mm.MailboxID, &mm.UID, &mm.ModSeq, &mm.Size, &date, &bits, &kws,
			&envJSON, &structJSON, &mm.Meta.Lines, &mm.Meta.Attachments); err != nil {
			return err
		}
		if !f.has(mm.UID) {
			return nil
		}
		mm.Message.InternalDate = time.Unix(date, 0)
		mm.Flags = unpackFlags(bits, string(kws))
		if len(envJSON) > 0 {
			if err := decodeEnvelope(envJSON, &mm.Meta.Envelope); err != nil {
				return fmt.Errorf("message %d envelope: %w", mm.ID, err)
			}
		}
		if len(structJSON) > 0 {
			if err := json.Unmarshal(structJSON, &mm.Meta.Structure); err != nil {
				return fmt.Errorf("message %d structure: %w", mm.ID, err)
			}
		}
		out = append(out, mm)
		return nil
	})
	return out, err
}

// MessageSize is a message's identity and size, what a FETCH of whole
// bodies needs besides the bytes.
type MessageSize struct {
	ID   int64
	UID  uint32
	Size int64
}

// Sizes returns the identities and sizes of the messages of a mailbox
// whose UIDs fall in the ranges, in UID order. A mailbox of another
// account is ErrNotFound.
func (a *Account) Sizes(ctx context.Context, mailboxID int64, ranges []UIDRange) ([]MessageSize, error) {
	var out []MessageSize
	err := a.inRanges(ctx, mailboxID, ranges, false, `SELECT uid, id, size FROM messages WHERE `, "",
		func(rows *sql.Rows, f *rangeFilter) error {
			var m MessageSize
			if err := rows.Scan(&m.UID, &m.ID, &m.Size); err != nil {
				return err
			}
			if f.has(m.UID) {
				out = append(out, m)
			}
			return nil
		})
	return out, err
}

// UIDEnvelope is a message's UID with its envelope.
type UIDEnvelope struct {
	UID      uint32
	Envelope Envelope
}

// Envelopes returns the envelopes of the messages of a mailbox whose
// UIDs fall in the ranges, in UID order: the narrow read behind IMAP
// FETCH ENVELOPE, whose flags come from memory. A mailbox of another
// account is ErrNotFound.
func (a *Account) Envelopes(ctx context.Context, mailboxID int64, ranges []UIDRange) ([]UIDEnvelope, error) {
	var out []UIDEnvelope
	var js sql.RawBytes
	err := a.inRanges(ctx, mailboxID, ranges, false, `SELECT m.uid, t.envelope FROM messages m JOIN meta t ON t.blob_id = m.blob_id WHERE `, "m.",
		func(rows *sql.Rows, f *rangeFilter) error {
			var e UIDEnvelope
			if err := rows.Scan(&e.UID, &js); err != nil {
				return err
			}
			if !f.has(e.UID) {
				return nil
			}
			if err := decodeEnvelope(js, &e.Envelope); err != nil {
				return fmt.Errorf("message %d envelope: %w", e.UID, err)
			}
			out = append(out, e)
			return nil
		})
	return out, err
}

// inRanges runs query (ending in "WHERE " or "AND ") for the mailbox
// and ranges, ordered by UID, calling scan per row; scan keeps only the
// rows whose UID f.has. The ranges are read as spans (see spans), one
// index range scan each (see spans for exact), in one read transaction.
// (SQLite answers a query with
// several OR-ed UID ranges by scanning the whole mailbox, which made a
// FETCH of a large mailbox quadratic.)
func (a *Account) inRanges(ctx context.Context, mailboxID int64, ranges []UIDRange, exact bool, query, prefix string, scan func(rows *sql.Rows, f *rangeFilter) error) error {
	ranges = normRanges(ranges)
	if len(ranges) == 0 {
		return nil
	}
	conn, err := a.st.reader.Conn(ctx)
	if err != nil {
		return fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
	}
	defer tx.Rollback()
	if err := a.ownMailbox(ctx, tx, mailboxID); err != nil {
		return err
	}
	q := query + prefix + "mailbox_id = ? AND " + prefix + "uid BETWEEN ? AND ? ORDER BY " + prefix + "uid"
	stmt, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
	}
	defer stmt.Close()
	f := &rangeFilter{ranges: ranges}
	for _, sp := range spans(ranges, exact) {
		rows, err := stmt.QueryContext(ctx, mailboxID, sp.Start, sp.Stop)
		if err != nil {
			return fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
		}
		for rows.Next() {
			if err := scan(rows, f); err != nil {
				rows.Close()
				return fmt.Errorf("list messages: %w", err)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
		}
	}
	return nil
}

// FirstUnseen returns the lowest UID of a mailbox without \Seen, or 0 if
// every message is seen.
func (a *Account) FirstUnseen(ctx context.Context, mailboxID int64) (uint32, error) {
	var uid sql.NullInt64
	err := a.st.readRow(ctx, `SELECT min(uid) FROM messages
		 WHERE mailbox_id = ? AND flags & ? = 0
		   AND mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?)`, mailboxID, flagSeen, a.ID).Scan(&uid)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("first unseen: %w: %w", ErrTemporary, err)
	}
	return uint32(uid.Int64), nil
}

// Keywords returns the keywords used by messages of a mailbox, sorted,
// each once (IMAP FLAGS of a selected mailbox).
func (a *Account) Keywords(ctx context.Context, mailboxID int64) ([]string, error) {
	rows, err := a.st.readRows(ctx, `SELECT DISTINCT keywords FROM messages
		 WHERE mailbox_id = ? AND keywords != ''
		   AND mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?)`, mailboxID, a.ID)
	if err != nil {
		return nil, fmt.Errorf("keywords: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var kws string
		if err := rows.Scan(&kws); err != nil {
			return nil, fmt.Errorf("keywords: %w: %w", ErrTemporary, err)
		}
		for _, k := range strings.Fields(kws) {
			if lk := strings.ToLower(k); !seen[lk] {
				seen[lk] = true
				out = append(out, k)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("keywords: %w: %w", ErrTemporary, err)
	}
	slices.Sort(out)
	return out, nil
}

// InlineBodies returns the bytes of the messages of a mailbox whose UIDs
// fall in the ranges and whose bodies live inside the database (all but
// the largest), keyed by UID; the others are absent from the map and are
// read with Open. The caller bounds the total size it asks for. A
// mailbox of another account is ErrNotFound.
func (a *Account) InlineBodies(ctx context.Context, mailboxID int64, ranges []UIDRange) (map[uint32][]byte, error) {
	out := map[uint32][]byte{}
	// The bytes share one buffer, grown as needed: one allocation per
	// batch rather than one per message.
	var arena []byte
	err := a.inRanges(ctx, mailboxID, ranges, true, `SELECT m.uid, b.data FROM messages m JOIN blobs b ON b.id = m.blob_id
		WHERE b.data IS NOT NULL AND `, "m.", func(rows *sql.Rows, f *rangeFilter) error {
		var uid uint32
		var data sql.RawBytes
		if err := rows.Scan(&uid, &data); err != nil {
			return err
		}
		if !f.has(uid) {
			return nil
		}
		if cap(arena)-len(arena) < len(data) {
			arena = make([]byte, 0, max(len(data), 1<<20))
		}
		start := len(arena)
		arena = append(arena, data...)
		out[uid] = arena[start:len(arena):len(arena)]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read bodies: %w", err)
	}
	return out, nil
}
