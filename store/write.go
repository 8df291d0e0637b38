package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Writes go through one goroutine that owns the writer connection. It takes
// every request already queued (up to BatchMax), runs each inside its own
// SAVEPOINT of one transaction, and commits once: one fsync for the whole
// batch (group commit). A request that fails rolls back to its savepoint
// and does not disturb the others. Inside a request there is SQL only: no
// network, no client writes, no channel waits. Events and file deletions
// are collected on the txn and run only after the commit succeeded.

// txn is one write request's view of the batch transaction. Its Exec,
// Query and QueryRow use statements prepared once on the writer
// connection: parsing SQL again for every message was a fifth of the cost
// of a delivery.
type txn struct {
	*sql.Tx
	stmts  *stmtCache
	events []Event
	after  []func() // run after a successful commit, in order
}

// stmtCache holds the writer's prepared statements. Only the writer
// goroutine touches it. A query seen for the first time runs unprepared
// and is prepared after the batch, when the one connection is free again.
type stmtCache struct {
	prepared map[string]*sql.Stmt
	wanted   map[string]bool
}

func (tx *txn) stmt(query string) *sql.Stmt {
	if s := tx.stmts.prepared[query]; s != nil {
		return tx.Tx.Stmt(s)
	}
	tx.stmts.wanted[query] = true
	return nil
}

func (tx *txn) Exec(query string, args ...any) (sql.Result, error) {
	if s := tx.stmt(query); s != nil {
		return s.Exec(args...)
	}
	return tx.Tx.Exec(query, args...)
}

func (tx *txn) Query(query string, args ...any) (*sql.Rows, error) {
	if s := tx.stmt(query); s != nil {
		return s.Query(args...)
	}
	return tx.Tx.Query(query, args...)
}

func (tx *txn) QueryRow(query string, args ...any) *sql.Row {
	if s := tx.stmt(query); s != nil {
		return s.QueryRow(args...)
	}
	return tx.Tx.QueryRow(query, args...)
}

// prepareWanted prepares the queries first seen in the last batch. It
// runs between batches, when no transaction holds the connection.
func (c *stmtCache) prepareWanted(db *sql.DB) {
	for q := range c.wanted {
		if s, err := db.Prepare(q); err == nil {
			c.prepared[q] = s
		}
		delete(c.wanted, q)
	}
}

// publish queues an event for the hub; it is sent only after commit.
func (tx *txn) publish(ev Event) { tx.events = append(tx.events, ev) }

// afterCommit runs fn once the transaction is durable (e.g. remove a blob
// file whose last reference was dropped).
func (tx *txn) afterCommit(fn func()) { tx.after = append(tx.after, fn) }

type writeReq struct {
	ctx  context.Context
	fn   func(tx *txn) error
	done chan error
	txn  txn
}

var errClosed = errors.New("store closed")

// write runs fn in the shared write transaction and returns once it is
// committed and synced (or failed). Once queued, the request runs even if
// ctx is cancelled, so a caller never reports failure for a committed
// change.
func (st *Store) write(ctx context.Context, fn func(tx *txn) error) error {
	return st.writeWith(ctx, false, fn)
}

// writeWith is write, with low asking for the low-priority queue: the
// writer takes such a request only when no other has been queued for
// writerIdle, or when the indexer says it is urgent (see indexer.go).
func (st *Store) writeWith(ctx context.Context, low bool, fn func(tx *txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	st.closeMu.RLock()
	if st.closed {
		st.closeMu.RUnlock()
		return fmt.Errorf("%w: %w", ErrTemporary, errClosed)
	}
	// The writer never takes closeMu, so these cannot deadlock.
	if low {
		st.lowWrites <- req
	} else {
		st.writes <- req
	}
	st.closeMu.RUnlock()
	return <-req.done
}

// writerIdle is how long no write request may have been queued before
// the writer serves the low-priority queue.
const writerIdle = 10 * time.Millisecond

// nextWrite waits for the request that opens the next batch: a normal
// one if any is queued, else a low-priority one once the writer has been
// idle for writerIdle (at once if it is urgent). It returns nil when the
// store closes.
func (st *Store) nextWrite(idle *time.Timer) *writeReq {
	if len(st.lowWrites) > 0 && st.index.urgentNow() {
		select {
		case r := <-st.lowWrites:
			return r
		default:
		}
	}
	select {
	case r := <-st.writes:
		return r
	default:
	}
	idle.Reset(writerIdle)
	select {
	case r := <-st.writes:
		return r
	case <-idle.C:
	}
	select {
	case r := <-st.writes:
		return r
	case r := <-st.lowWrites:
		return r
	}
}

func (st *Store) writeLoop() {
	defer close(st.stopped)
	batch := make([]*writeReq, 0, st.batchMax)
	stmts := &stmtCache{prepared: map[string]*sql.Stmt{}, wanted: map[string]bool{}}
	defer func() {
		for _, s := range stmts.prepared {
			s.Close()
		}
	}()
	idle := time.NewTimer(writerIdle)
	defer idle.Stop()
	for {
		req := st.nextWrite(idle)
		if req == nil {
			return
		}
		batch = append(batch[:0], req)
	drain:
		for len(batch) < st.batchMax {
			select {
			case r, ok := <-st.writes:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		st.commitBatch(batch, stmts)
		stmts.prepareWanted(st.writer)
	}
}

func (st *Store) commitBatch(batch []*writeReq, stmts *stmtCache) {
	fail := func(err error) {
		for _, r := range batch {
			r.done <- fmt.Errorf("%w: %w", ErrTemporary, err)
		}
	}
	tx, err := st.writer.BeginTx(context.Background(), nil)
	if err != nil {
		st.log.Error("begin write transaction", "err", err)
		fail(err)
		return
	}
	defer tx.Rollback() // harmless after Commit
	errs := make([]error, len(batch))
	ok := 0
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		if _, err := tx.Exec("SAVEPOINT req"); err != nil {
			errs[i] = err
			continue
		}
		r.txn = txn{Tx: tx, stmts: stmts}
		if err := r.fn(&r.txn); err != nil {
			errs[i] = err
			if _, rbErr := tx.Exec("ROLLBACK TO req"); rbErr != nil {
				st.log.Error("rollback to savepoint", "err", rbErr)
				fail(rbErr)
				return
			}
		}
		if _, err := tx.Exec("RELEASE req"); err != nil {
			st.log.Error("release savepoint", "err", err)
			fail(err)
			return
		}
		if errs[i] == nil {
			ok++
		}
	}
	if ok > 0 {
		if err := tx.Commit(); err != nil {
			st.log.Error("commit write transaction", "err", err, "batch", len(batch))
			fail(err)
			return
		}
		st.ckpt.poke()
	}
	for i, r := range batch {
		if errs[i] == nil {
			for _, fn := range r.txn.after {
				fn()
			}
			if len(r.txn.events) > 0 {
				st.hub.Publish(r.txn.events...)
			}
		}
		r.done <- errs[i]
	}
}
