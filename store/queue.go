package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// The outbound queue holds mail for other servers until the queue runner
// (in package smtp) has handed it over. One outbound row holds the message
// (its bytes are a blob, shared with the local copies of the same
// submission); one queue row per remote recipient holds the delivery state.
//
// Crash safety: Claim marks entries as being sent (the sending column) in
// a committed transaction before the runner connects anywhere, and
// Delivered removes them in a committed transaction right after the
// remote server's 250 to the message data. After a crash, Recover makes
// the entries that were being sent due again. So an entry is never lost,
// and it is sent twice only if the process died between the remote 250
// and our commit, a window of one local fsync (RFC 5321 §6.1: a duplicate
// is better than a loss). An attempt cut off before the remote 250
// delivered nothing there, and is simply made again.

// QueueEntry is one remote recipient of a queued message.
type QueueEntry struct {
	ID int64
	// MessageID identifies the queued message; entries of one submission
	// share it (and its bytes).
	MessageID int64
	// Sender is the envelope sender; "" is the null sender (a bounce).
	Sender string
	// Account submitted the message ("" for bounces and deleted accounts).
	Account   string
	Recipient string
	Domain    string
	Size      int64
	Created   time.Time
	Attempts  int
	// NextAttempt is when the runner tries again.
	NextAttempt time.Time
	LastAttempt time.Time // zero before the first attempt
	// LastError is the last remote reply or connection error.
	LastError string
	// Sending is true while an attempt is under way (or was cut off by a
	// crash and Recover has not run yet).
	Sending bool
	// Warned is set once the sender was told of the delay.
	Warned bool
}

// Notice is a delivery status notification the runner hands back: it is
// delivered with the null sender to To (locally, or queued if To is
// remote) in the same transaction that records the outcome.
type Notice struct {
	To   string
	Data []byte
}

const queueColumns = `q.id, q.outbound_id, o.sender, coalesce(a.address, ''), q.rcpt, q.domain, b.size, o.created,
	q.attempts, q.next_attempt, q.last_attempt, q.last_error, q.sending != 0, q.warned != 0`

const queueFrom = ` FROM queue q JOIN outbound o ON o.id = q.outbound_id JOIN blobs b ON b.id = o.blob_id
	LEFT JOIN accounts a ON a.id = o.account_id`

func scanQueueEntry(sc interface{ Scan(...any) error }) (QueueEntry, error) {
	var e QueueEntry
	var created, next, last int64
	err := sc.Scan(&e.ID, &e.MessageID, &e.Sender, &e.Account, &e.Recipient, &e.Domain, &e.Size, &created,
		&e.Attempts, &next, &last, &e.LastError, &e.Sending, &e.Warned)
	e.Created, e.NextAttempt = time.Unix(created, 0), time.Unix(next, 0)
	if last > 0 {
		e.LastAttempt = time.Unix(last, 0)
	}
	return e, err
}

// QueueFilter selects entries for Queue. Zero fields select everything.
type QueueFilter struct {
	// Domain keeps the entries for one recipient domain.
	Domain string
	// AfterID continues a listing after the entry with this id.
	AfterID int64
	// Limit bounds the number of entries (0: no limit).
	Limit int
}

// Queue lists queued entries by id (oldest first). The entries are read
// without joins; the few messages they belong to are looked up once each,
// so listing a queue of 100,000 entries stays well under a second.
func (st *Store) Queue(ctx context.Context, f QueueFilter) ([]QueueEntry, error) {
	q := `SELECT id, outbound_id, rcpt, domain, attempts, next_attempt, last_attempt, last_error, sending != 0, warned != 0
		FROM queue WHERE id > ? AND (? = '' OR domain = ?) ORDER BY id`
	args := []any{f.AfterID, f.Domain, strings.ToLower(f.Domain)}
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	fail := func(err error) ([]QueueEntry, error) {
		return nil, fmt.Errorf("list queue: %w: %w", ErrTemporary, err)
	}
	rows, err := st.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	var out []QueueEntry
	msgs := map[int64]*QueueEntry{} // outbound id → its fields
	for rows.Next() {
		var e QueueEntry
		var next, last int64
		if err := rows.Scan(&e.ID, &e.MessageID, &e.Recipient, &e.Domain, &e.Attempts, &next, &last,
			&e.LastError, &e.Sending, &e.Warned); err != nil {
			return fail(err)
		}
		e.NextAttempt = time.Unix(next, 0)
		if last > 0 {
			e.LastAttempt = time.Unix(last, 0)
		}
		msgs[e.MessageID] = nil
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	rows.Close()
	for id := range msgs {
		var m QueueEntry
		var created int64
		err := st.reader.QueryRowContext(ctx, `SELECT o.sender, coalesce(a.address, ''), b.size, o.created
			FROM outbound o JOIN blobs b ON b.id = o.blob_id LEFT JOIN accounts a ON a.id = o.account_id
			WHERE o.id = ?`, id).Scan(&m.Sender, &m.Account, &m.Size, &created)
		if errors.Is(err, sql.ErrNoRows) {
			continue // delivered since the first query
		} else if err != nil {
			return fail(err)
		}
		m.Created = time.Unix(created, 0)
		msgs[id] = &m
	}
	for i := range out {
		if m := msgs[out[i].MessageID]; m != nil {
			out[i].Sender, out[i].Account, out[i].Size, out[i].Created = m.Sender, m.Account, m.Size, m.Created
		}
	}
	return out, nil
}

// QueueStats counts the queue: all entries, those being sent, and when
// the earliest idle one is due (zero if none).
func (st *Store) QueueStats(ctx context.Context) (entries, sending int, nextDue time.Time, err error) {
	var next sql.NullInt64
	err = st.reader.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(sending != 0), 0),
		(SELECT min(next_attempt) FROM queue WHERE sending = 0) FROM queue`).Scan(&entries, &sending, &next)
	if err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("queue stats: %w: %w", ErrTemporary, err)
	}
	if next.Valid {
		nextDue = time.Unix(next.Int64, 0)
	}
	return entries, sending, nextDue, nil
}

// NextDue returns when the earliest entry not being sent is due (zero
// if there is none). It reads one index entry.
func (st *Store) NextDue(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	if err := st.reader.QueryRowContext(ctx, "SELECT min(next_attempt) FROM queue WHERE sending = 0").Scan(&next); err != nil {
		return time.Time{}, fmt.Errorf("queue next due: %w: %w", ErrTemporary, err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return time.Unix(next.Int64, 0), nil
}

// QueueSignal returns a channel that has a value after a commit that added
// due entries (a submission, a bounce, Retry). The runner waits on it
// besides its timer; there is one channel per Store, so one runner.
func (st *Store) QueueSignal() <-chan struct{} { return st.queued }

func (st *Store) signalQueue() {
	select {
	case st.queued <- struct{}{}:
	default:
	}
}

// Claim marks up to limit entries due at now as being sent and returns
// them, oldest due first, in one committed transaction: only after it
// returns may the runner connect. It skips entries already being sent.
func (st *Store) Claim(ctx context.Context, now time.Time, limit int) ([]QueueEntry, error) {
	var out []QueueEntry
	err := st.write(ctx, func(tx *txn) error {
		out = out[:0]
		rows, err := tx.Query("SELECT "+queueColumns+queueFrom+
			" WHERE q.sending = 0 AND q.next_attempt <= ? ORDER BY q.next_attempt, q.id LIMIT ?", now.Unix(), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			e, err := scanQueueEntry(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range out {
			if _, err := tx.Exec("UPDATE queue SET sending = ? WHERE id = ?", now.Unix(), out[i].ID); err != nil {
				return err
			}
			out[i].Sending = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim queue entries: %w", asTemporary(err))
	}
	return out, nil
}

// Recover makes every entry left marked as being sent (by a process that
// crashed or was killed mid-attempt) due now, and returns how many there
// were. The runner calls it once at start, before its first Claim.
func (st *Store) Recover(ctx context.Context) (int, error) {
	var n int64
	err := st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec("UPDATE queue SET sending = 0, next_attempt = ?, last_error = ? WHERE sending != 0",
			st.now().Unix(), "attempt interrupted (restart)")
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("recover queue: %w", asTemporary(err))
	}
	if n > 0 {
		st.signalQueue()
	}
	return int(n), nil
}

// OpenQueued returns the bytes of a queued message. The caller closes the
// reader. ErrNotFound if the message left the queue.
func (st *Store) OpenQueued(ctx context.Context, messageID int64) (io.ReadCloser, error) {
	var hash, data []byte
	var inline bool
	err := st.reader.QueryRowContext(ctx, `SELECT b.hash, b.data, b.data IS NOT NULL
		FROM outbound o JOIN blobs b ON b.id = o.blob_id WHERE o.id = ?`, messageID).Scan(&hash, &data, &inline)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("queued message %d: %w", messageID, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("queued message %d: %w: %w", messageID, ErrTemporary, err)
	}
	if inline {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	rc, err := st.blobs.Get(hex.EncodeToString(hash))
	if err != nil {
		return nil, fmt.Errorf("queued message %d: %w: %w", messageID, ErrTemporary, err)
	}
	return rc, nil
}

// Delivered removes entries the remote server accepted. A message whose
// last entry goes is dropped with its bytes (unless local copies share
// them).
func (st *Store) Delivered(ctx context.Context, ids []int64) error {
	return st.finish(ctx, "delivered", ids, nil, func(tx *txn) error { return st.removeEntries(tx, ids) })
}

// Defer records a failed attempt that will be retried at next; warned
// marks that the sender has been told of the delay (notice, if not nil, is
// that warning).
func (st *Store) Defer(ctx context.Context, ids []int64, next time.Time, lastErr string, notice *Notice) error {
	now := st.now().Unix()
	return st.finish(ctx, "defer", ids, notice, func(tx *txn) error {
		for _, id := range ids {
			if _, err := tx.Exec(`UPDATE queue SET sending = 0, attempts = attempts + 1, next_attempt = ?,
				last_attempt = ?, last_error = ?, warned = warned OR ? WHERE id = ?`,
				ceilUnix(next), now, lastErr, notice != nil, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// Fail removes entries that failed for good (a permanent refusal, or too
// old) and, in the same transaction, sends notice (the bounce; nil for a
// message from the null sender, which is never bounced).
func (st *Store) Fail(ctx context.Context, ids []int64, notice *Notice) error {
	return st.finish(ctx, "fail", ids, notice, func(tx *txn) error { return st.removeEntries(tx, ids) })
}

// Release gives claimed entries back without counting an attempt (the
// runner is shutting down before it tried them).
func (st *Store) Release(ctx context.Context, ids []int64) error {
	return st.finish(ctx, "release", ids, nil, func(tx *txn) error {
		for _, id := range ids {
			if _, err := tx.Exec("UPDATE queue SET sending = 0 WHERE id = ?", id); err != nil {
				return err
			}
		}
		return nil
	})
}

// RetryNow makes entries due now (all of them if ids is empty) and
// returns how many it changed. Entries being sent are left alone.
func (st *Store) RetryNow(ctx context.Context, ids []int64) (int, error) {
	var n int64
	now := st.now().Unix()
	err := st.write(ctx, func(tx *txn) error {
		n = 0
		if len(ids) == 0 {
			res, err := tx.Exec("UPDATE queue SET next_attempt = ? WHERE sending = 0", now)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		}
		for _, id := range ids {
			res, err := tx.Exec("UPDATE queue SET next_attempt = ? WHERE id = ? AND sending = 0", now, id)
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("retry queue entries: %w", asTemporary(err))
	}
	st.signalQueue()
	return int(n), nil
}

// DeleteQueued removes entries without delivering or bouncing them (an
// operator's decision) and returns how many went. Entries being sent are
// removed too; an attempt in progress may still deliver.
func (st *Store) DeleteQueued(ctx context.Context, ids []int64) (int, error) {
	var n int
	err := st.write(ctx, func(tx *txn) error {
		n = 0
		for _, id := range ids {
			var k int
			if err := tx.QueryRow("SELECT count(*) FROM queue WHERE id = ?", id).Scan(&k); err != nil {
				return err
			}
			n += k
		}
		return st.removeEntries(tx, ids)
	})
	if err != nil {
		return 0, fmt.Errorf("delete queue entries: %w", asTemporary(err))
	}
	return n, nil
}

// finish runs one outcome and its notice in one transaction.
func (st *Store) finish(ctx context.Context, what string, ids []int64, notice *Notice, fn func(tx *txn) error) error {
	var p *preparedBlob
	var targets []string
	remote := false
	if notice != nil {
		var err error
		if p, err = st.prepare(notice.Data); err != nil {
			return fmt.Errorf("queue %s: %w", what, err)
		}
		targets, err = st.Resolve(ctx, notice.To)
		switch {
		case errors.Is(err, ErrNotLocal):
			remote = true
		case errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid):
			st.log.Info("notice dropped: no such local sender", "to", notice.To)
			p = nil
		case err != nil:
			return fmt.Errorf("queue %s: %w", what, err)
		}
	}
	err := st.write(ctx, func(tx *txn) error {
		if err := fn(tx); err != nil {
			return err
		}
		if p == nil {
			return nil
		}
		return st.sendNotice(tx, notice.To, remote, targets, p)
	})
	if err != nil {
		return fmt.Errorf("queue %s: %w", what, asTemporary(err))
	}
	if remote && p != nil {
		st.signalQueue()
	}
	return nil
}

// sendNotice delivers a notification to local accounts' INBOXes, or
// queues it with the null sender for a remote address.
func (st *Store) sendNotice(tx *txn, to string, remote bool, accts []string, p *preparedBlob) error {
	blobID, err := st.insertBlob(tx, p)
	if err != nil {
		return err
	}
	now := st.now()
	if remote {
		_, domain := splitAddress(to)
		oid, err := insertOutbound(tx, 0, "", blobID, now)
		if err != nil {
			return err
		}
		return insertQueueRow(tx, oid, to, domain, now)
	}
	for _, acct := range accts {
		var acctID, mbID int64
		err := tx.QueryRow(`SELECT a.id, b.id FROM accounts a JOIN mailboxes b ON b.account_id = a.id
			WHERE a.address = ? AND b.role = ?`, acct, RoleInbox).Scan(&acctID, &mbID)
		if err != nil {
			return fmt.Errorf("notice to %s: %w", acct, err)
		}
		// A bounce is delivered even over quota: the sender must learn
		// that the mail did not arrive.
		if _, _, err := insertMessage(tx, acctID, mbID, blobID, p.size, now, 0, ""); err != nil {
			return err
		}
	}
	return nil
}

func (st *Store) removeEntries(tx *txn, ids []int64) error {
	for _, id := range ids {
		var oid int64
		err := tx.QueryRow("DELETE FROM queue WHERE id = ? RETURNING outbound_id", id).Scan(&oid)
		if errors.Is(err, sql.ErrNoRows) {
			continue // already removed (queue delete during an attempt)
		} else if err != nil {
			return err
		}
		if _, err := tx.Exec("DELETE FROM outbound WHERE id = ? AND NOT EXISTS (SELECT 1 FROM queue WHERE outbound_id = ?)", oid, oid); err != nil {
			return err
		}
	}
	return st.dropUnreferencedBlobs(tx)
}

// ceilUnix rounds up to whole seconds (the queue's unit), so an entry is
// never due before its time.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

func insertOutbound(tx *txn, accountID int64, sender string, blobID int64, now time.Time) (int64, error) {
	var acct any
	if accountID != 0 {
		acct = accountID
	}
	res, err := tx.Exec("INSERT INTO outbound(account_id, sender, blob_id, created) VALUES (?, ?, ?, ?)",
		acct, sender, blobID, now.Unix())
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

func insertQueueRow(tx *txn, outboundID int64, rcpt, domain string, now time.Time) error {
	_, err := tx.Exec("INSERT INTO queue(outbound_id, rcpt, domain, next_attempt) VALUES (?, ?, ?, ?)",
		outboundID, rcpt, domain, now.Unix())
	return err
}

// asTemporary marks an error without a kind as ErrTemporary: a database
// hiccup is never a permanent failure.
func asTemporary(err error) error {
	for _, k := range []error{ErrNotFound, ErrExists, ErrOverQuota, ErrInvalid, ErrNotLocal, ErrTemporary, ErrLimit} {
		if errors.Is(err, k) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", ErrTemporary, err)
}
