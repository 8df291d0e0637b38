package store

import (
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

// maxRangesPerQuery bounds the OR terms of one range query; longer lists
// are split into several queries.
const maxRangesPerQuery = 200

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

// rangeCond returns an SQL condition on column uid for the ranges and its
// arguments.
func rangeCond(ranges []UIDRange) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, 2*len(ranges))
	b.WriteString("(")
	for i, r := range ranges {
		if i > 0 {
			b.WriteString(" OR ")
		}
		if r.Start == r.Stop {
			b.WriteString("uid = ?")
			args = append(args, r.Start)
			continue
		}
		b.WriteString("uid BETWEEN ? AND ?")
		args = append(args, r.Start, r.Stop)
	}
	b.WriteString(")")
	return b.String(), args
}

// MessagesIn returns the messages of a mailbox whose UIDs fall in the
// ranges, in UID order (each message once). A mailbox of another account
// yields nothing.
func (a *Account) MessagesIn(ctx context.Context, mailboxID int64, ranges []UIDRange) ([]Message, error) {
	var out []Message
	err := a.inRanges(ctx, mailboxID, ranges, messageSQL+" WHERE ", "", func(rows *sql.Rows) error {
		m, err := scanMessage(rows)
		if err != nil {
			return err
		}
		out = append(out, m)
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
	err := a.inRanges(ctx, mailboxID, ranges, q, "m.", func(rows *sql.Rows) error {
		var mm MessageMeta
		var envJSON, structJSON string
		var date, bits int64
		var kws string
		if err := rows.Scan(&mm.ID, &mm.MailboxID, &mm.UID, &mm.ModSeq, &mm.Size, &date, &bits, &kws,
			&envJSON, &structJSON, &mm.Meta.Lines, &mm.Meta.Attachments); err != nil {
			return err
		}
		mm.Message.InternalDate = time.Unix(date, 0)
		mm.Flags = unpackFlags(bits, kws)
		if envJSON != "" {
			if err := json.Unmarshal([]byte(envJSON), &mm.Meta.Envelope); err != nil {
				return fmt.Errorf("message %d envelope: %w", mm.ID, err)
			}
		}
		if structJSON != "" {
			if err := json.Unmarshal([]byte(structJSON), &mm.Meta.Structure); err != nil {
				return fmt.Errorf("message %d structure: %w", mm.ID, err)
			}
		}
		out = append(out, mm)
		return nil
	})
	return out, err
}

// inRanges runs query (ending in "WHERE ") for the mailbox and ranges,
// in chunks, ordered by UID, calling scan per row.
func (a *Account) inRanges(ctx context.Context, mailboxID int64, ranges []UIDRange, query, prefix string, scan func(*sql.Rows) error) error {
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
	for len(ranges) > 0 {
		chunk := ranges[:min(len(ranges), maxRangesPerQuery)]
		ranges = ranges[len(chunk):]
		cond, args := rangeCond(chunk)
		if prefix != "" {
			cond = strings.ReplaceAll(cond, "uid", prefix+"uid")
		}
		rows, err := tx.QueryContext(ctx, query+prefix+"mailbox_id = ? AND "+cond+" ORDER BY "+prefix+"uid",
			append([]any{mailboxID}, args...)...)
		if err != nil {
			return fmt.Errorf("list messages: %w: %w", ErrTemporary, err)
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
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

// InlineBodies returns the bytes of those given messages of this account
// whose bodies live inside the database (all but the largest), in one
// query; the others are absent from the map and are read with Open. The
// caller bounds the total size it asks for.
func (a *Account) InlineBodies(ctx context.Context, messageIDs []int64) (map[int64][]byte, error) {
	out := make(map[int64][]byte, len(messageIDs))
	for len(messageIDs) > 0 {
		chunk := messageIDs[:min(len(messageIDs), maxRangesPerQuery)]
		messageIDs = messageIDs[len(chunk):]
		q := `SELECT m.id, b.data FROM messages m JOIN mailboxes x ON x.id = m.mailbox_id JOIN blobs b ON b.id = m.blob_id
		       WHERE x.account_id = ? AND b.data IS NOT NULL AND m.id IN (?` + strings.Repeat(", ?", len(chunk)-1) + `)`
		args := make([]any, 0, len(chunk)+1)
		args = append(args, a.ID)
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := a.st.readRows(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("read bodies: %w: %w", ErrTemporary, err)
		}
		for rows.Next() {
			var id int64
			var data []byte
			if err := rows.Scan(&id, &data); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read bodies: %w: %w", ErrTemporary, err)
			}
			out[id] = data
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read bodies: %w: %w", ErrTemporary, err)
		}
	}
	return out, nil
}
