package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// SystemFlags is a set of system flags as bits, the compact form a
// protocol keeps in memory for every message of a mailbox.
type SystemFlags uint8

// The system flags as SystemFlags bits.
const (
	Seen     SystemFlags = flagSeen
	Answered SystemFlags = flagAnswered
	Flagged  SystemFlags = flagFlagged
	Deleted  SystemFlags = flagDeleted
	Draft    SystemFlags = flagDraft
)

// Names returns the flags in the set, in a fixed order (\Seen,
// \Answered, \Flagged, \Deleted, \Draft).
func (f SystemFlags) Names() []string {
	out := make([]string, 0, 5)
	for _, sf := range systemFlags {
		if int64(f)&sf.bit != 0 {
			out = append(out, sf.name)
		}
	}
	return out
}

// SplitFlags splits a flag list (as in Message.Flags or Event.Flags)
// into its system flags and its keywords. The keywords come back as one
// string, each keyword followed by a space ("" for none), so equal sets
// in the same order compare equal; strings.Fields lists them.
func SplitFlags(flags []string) (SystemFlags, string) {
	bits, kws := packFlags(flags)
	return SystemFlags(bits), strings.TrimPrefix(kws, " ")
}

// View is a mailbox's messages as a protocol numbers and flags them in
// memory: UIDs ascending, each with its system flags, and the keywords
// of those that have any.
type View struct {
	// ModSeq is the mailbox's highest modseq when the view was read:
	// every change up to it is in the view, none after it.
	ModSeq int64
	// UIDs are the messages' UIDs, ascending.
	UIDs []uint32
	// System holds the system flags of UIDs[i] at index i.
	System []SystemFlags
	// Keywords maps the UID of each message with keywords to them (in
	// SplitFlags's form).
	Keywords map[uint32]string
}

// View reads a mailbox's UIDs and flags in one snapshot. It is the one
// query a protocol needs to serve a mailbox's numbering and flags from
// memory, kept current afterwards by the events after View.ModSeq.
func (a *Account) View(ctx context.Context, mailboxID int64) (View, error) {
	var v View
	conn, err := a.st.reader.Conn(ctx)
	if err != nil {
		return v, fmt.Errorf("read mailbox view: %w: %w", ErrTemporary, err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return v, fmt.Errorf("read mailbox view: %w: %w", ErrTemporary, err)
	}
	defer tx.Rollback()
	var n int
	err = tx.QueryRowContext(ctx, "SELECT highest_modseq, n_messages FROM mailboxes WHERE id = ? AND account_id = ?", mailboxID, a.ID).
		Scan(&v.ModSeq, &n)
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("mailbox %d: %w", mailboxID, ErrNotFound)
	} else if err != nil {
		return v, fmt.Errorf("read mailbox view: %w: %w", ErrTemporary, err)
	}
	// n_messages is a hint for the allocation, exact in a consistent
	// database; the rows decide.
	n = min(max(n, 0), 1<<20)
	v.UIDs = make([]uint32, 0, n)
	v.System = make([]SystemFlags, 0, n)
	rows, err := tx.QueryContext(ctx, "SELECT uid, flags, keywords FROM messages WHERE mailbox_id = ? ORDER BY uid", mailboxID)
	if err != nil {
		return v, fmt.Errorf("read mailbox view: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	var kws sql.RawBytes
	for rows.Next() {
		var uid uint32
		var bits int64
		if err := rows.Scan(&uid, &bits, &kws); err != nil {
			return v, fmt.Errorf("read mailbox view: %w: %w", ErrTemporary, err)
		}
		v.UIDs = append(v.UIDs, uid)
		v.System = append(v.System, SystemFlags(bits))
		if len(kws) > 0 {
			if k := strings.TrimPrefix(string(kws), " "); k != "" {
				if v.Keywords == nil {
					v.Keywords = map[uint32]string{}
				}
				v.Keywords[uid] = k
			}
		}
	}
	if err := rows.Err(); err != nil {
		return v, fmt.Errorf("read mailbox view: %w: %w", ErrTemporary, err)
	}
	return v, nil
}
