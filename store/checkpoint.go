package store

import (
	"context"
	"database/sql"
	"time"
)

// WAL checkpoints run in their own goroutine on their own connection, so
// copying committed pages into the database file (and syncing it) no
// longer happens inside the writer's commit, where SQLite's automatic
// checkpoint put it: with large messages that was a tenth of the writer's
// time, and every delivery waiting in the batch waited for it too. A
// PASSIVE checkpoint never blocks the writer or readers. The writer keeps
// an automatic checkpoint at walBackstopPages in case this one falls
// behind.

const (
	// checkpointEvery is the least time between two background
	// checkpoints; each one syncs the database file.
	checkpointEvery = 100 * time.Millisecond
	// walBackstopPages is the writer's own automatic checkpoint threshold
	// (SQLite's default is 1000 pages).
	walBackstopPages = 16384
)

// checkpointer runs PASSIVE checkpoints after commits.
type checkpointer struct {
	db   *sql.DB
	wake chan struct{} // cap 1: the writer committed
	stop context.CancelFunc
	done chan struct{}
}

// poke tells the checkpointer that the WAL grew, without blocking.
func (c *checkpointer) poke() {
	if c == nil {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// startCheckpointer opens the checkpoint connection (dsn is the writer's)
// and starts its goroutine.
func (st *Store) startCheckpointer(dsn string) error {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{db: db, wake: make(chan struct{}, 1), stop: cancel, done: make(chan struct{})}
	st.ckpt = c
	go st.checkpointLoop(ctx, c)
	return nil
}

func (st *Store) checkpointLoop(ctx context.Context, c *checkpointer) {
	defer close(c.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		var busy, logPages, done int
		err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &done)
		if err != nil && ctx.Err() == nil {
			st.log.Warn("wal checkpoint", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(checkpointEvery):
		}
	}
}

// stopCheckpointer ends the goroutine and closes its connection; the
// writer's close checkpoints what is left.
func (st *Store) stopCheckpointer() error {
	if st.ckpt == nil {
		return nil
	}
	st.ckpt.stop()
	<-st.ckpt.done
	return st.ckpt.db.Close()
}
