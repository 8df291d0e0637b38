package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Full-text indexing runs after delivery. A delivery commits its blob with
// a row in unindexed and returns; the indexer goroutine then reads those
// blobs through the reader pool, extracts their text (extractText) and
// hands the writer one chunk of many blobs at a time, which it inserts
// into blob_text and removes from unindexed in one transaction. Tokenizing
// a 100 KiB body costs the writer milliseconds, so inside the delivery it
// was most of the cost of a large message; batched and out of the way it
// no longer delays the 250.
//
// Invariants:
//   - A blob is in exactly one of unindexed and blob_text once its
//     delivery committed; a crash leaves it in unindexed, and Open starts
//     the indexer, which finds it there.
//   - A search with a body or text condition first waits until none of
//     the messages the searched mailbox holds is unindexed (awaitIndexed;
//     the indexer serves such a mailbox before any other), and leaves out
//     messages that arrive while it runs. So SEARCH finds every message,
//     only a little later while mail pours in.
//   - Indexing yields to deliveries: its chunks go to the writer's
//     low-priority queue, which the writer serves only once no delivery
//     has been queued for writerIdle, while fewer than IndexBacklog blobs
//     wait and no search waits. Past that the chunks take their turn with
//     the deliveries, so the backlog stays bounded under any load.

const (
	// DefaultIndexBacklog is the number of unindexed blobs up to which
	// indexing waits for the writer to be idle.
	DefaultIndexBacklog = 5000
	// indexChunkBytes bounds the text of one indexing transaction, so a
	// chunk holds the writer for tens of milliseconds at most.
	indexChunkBytes = 2 << 20
	// indexChunkMax bounds the blobs of one indexing transaction.
	indexChunkMax = 256
	// indexRetry is the pause after a failed chunk before the next try.
	indexRetry = time.Second
	// maxIndexWait bounds how long a search waits for the indexer before
	// it fails with ErrTemporary.
	maxIndexWait = time.Minute
)

// indexer is the state shared between the indexer goroutine and the
// searches waiting for it.
type indexer struct {
	backlog int
	wake    chan struct{} // cap 1: new unindexed blobs, or a waiter
	stop    context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex
	progress chan struct{} // closed and replaced after every chunk
	urgent   map[int64]int // mailbox id -> searches waiting for it
	closing  bool          // stopIndexer was called
}

func newIndexer(backlog int) *indexer {
	if backlog <= 0 {
		backlog = DefaultIndexBacklog
	}
	return &indexer{
		backlog:  backlog,
		wake:     make(chan struct{}, 1),
		progress: make(chan struct{}),
		urgent:   map[int64]int{},
		done:     make(chan struct{}),
	}
}

// poke wakes the indexer goroutine without blocking.
func (ix *indexer) poke() {
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

// startIndexer starts the indexer goroutine; it indexes what a previous
// run left unindexed at once.
func (st *Store) startIndexer() {
	ctx, cancel := context.WithCancel(context.Background())
	st.index.stop = cancel
	st.index.poke()
	go st.indexLoop(ctx)
}

// stopIndexer ends the indexer goroutine and waits for it; a chunk already
// handed to the writer is committed first.
func (st *Store) stopIndexer() {
	if st.index.stop != nil {
		st.index.mu.Lock()
		st.index.closing = true
		st.index.mu.Unlock()
		st.index.stop()
		<-st.index.done
	}
}

func (st *Store) indexLoop(ctx context.Context) {
	defer close(st.index.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.index.wake:
		}
		for {
			n, err := st.indexChunk(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				st.log.Error("full-text indexing", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(indexRetry):
				}
				continue
			}
			if n == 0 {
				break
			}
		}
	}
}

// indexItem is one blob's text, ready for blob_text.
type indexItem struct {
	id   int64
	hash []byte
	text [3]string // subject, addresses, body
}

// indexChunk indexes one chunk of unindexed blobs, those of mailboxes a
// search waits for first, and returns how many it took.
func (st *Store) indexChunk(ctx context.Context) (int, error) {
	ix := st.index
	ix.mu.Lock()
	mailboxes := make([]int64, 0, len(ix.urgent))
	for id := range ix.urgent {
		mailboxes = append(mailboxes, id)
	}
	ix.mu.Unlock()
	items, backlog, err := st.readUnindexed(ctx, mailboxes)
	if err != nil || len(items) == 0 {
		return 0, err
	}
	urgent := len(mailboxes) > 0 || backlog >= ix.backlog
	err = st.writeWith(ctx, !urgent, func(tx *txn) error {
		for _, it := range items {
			// The blob may have gone (its last message expunged) and its
			// id been reused since it was read: index only the same bytes.
			res, err := tx.Exec(`DELETE FROM unindexed WHERE blob_id = ?
				AND EXISTS (SELECT 1 FROM blobs WHERE id = ? AND hash = ?)`, it.id, it.id, it.hash)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				continue
			}
			if _, err := tx.Exec("INSERT INTO blob_text(rowid, subject, addresses, body) VALUES (?, ?, ?, ?)",
				it.id, it.text[0], it.text[1], it.text[2]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	ix.mu.Lock()
	close(ix.progress)
	ix.progress = make(chan struct{})
	ix.mu.Unlock()
	return len(items), nil
}

// readUnindexed returns the text of the next chunk of unindexed blobs
// (of the given mailboxes, if any are unindexed there, else the oldest)
// and how many blobs wait in all, counted up to the backlog bound.
func (st *Store) readUnindexed(ctx context.Context, mailboxes []int64) ([]indexItem, int, error) {
	conn, err := st.reader.Conn(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	var backlog int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT 1 FROM unindexed LIMIT ?)", st.index.backlog).Scan(&backlog); err != nil {
		return nil, 0, err
	}
	if backlog == 0 {
		return nil, 0, nil
	}
	const cols = `SELECT b.id, b.hash, b.data, t.envelope, t.structure
		FROM unindexed u JOIN blobs b ON b.id = u.blob_id JOIN meta t ON t.blob_id = u.blob_id`
	var rows *sql.Rows
	if len(mailboxes) > 0 {
		ids, _ := json.Marshal(mailboxes) // []int64 always encodes
		rows, err = tx.QueryContext(ctx, cols+` WHERE u.blob_id IN (SELECT m.blob_id FROM messages m
			WHERE m.mailbox_id IN (SELECT value FROM json_each(?))) ORDER BY u.blob_id LIMIT ?`, string(ids), indexChunkMax)
	} else {
		rows, err = tx.QueryContext(ctx, cols+" ORDER BY u.blob_id LIMIT ?", indexChunkMax)
	}
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var items []indexItem
	size := 0
	for size < indexChunkBytes && rows.Next() {
		var it indexItem
		var data []byte
		var env, structure string
		if err := rows.Scan(&it.id, &it.hash, &data, &env, &structure); err != nil {
			return nil, 0, err
		}
		var m Meta
		if err := json.Unmarshal([]byte(env), &m.Envelope); err != nil {
			return nil, 0, fmt.Errorf("blob %d: decode envelope: %w", it.id, err)
		}
		if err := json.Unmarshal([]byte(structure), &m.Structure); err != nil {
			return nil, 0, fmt.Errorf("blob %d: decode structure: %w", it.id, err)
		}
		if data == nil {
			if data, err = st.readBlobFile(it.hash); err != nil {
				if !errors.Is(err, ErrNotFound) {
					return nil, 0, fmt.Errorf("blob %d: %w", it.id, err)
				}
				// Without its bytes the message cannot be read either;
				// index what the meta data says, so searches do not wait
				// for it forever.
				st.log.Error("index message: body file missing", "blob", it.id)
				data = nil
				m.Structure = Part{}
			}
		}
		it.text[0], it.text[1], it.text[2] = extractText(data, &m)
		size += len(it.text[0]) + len(it.text[1]) + len(it.text[2])
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if len(items) == 0 && len(mailboxes) > 0 {
		// The waiting mailboxes are done; take the oldest of the rest.
		return st.readUnindexed(ctx, nil)
	}
	return items, backlog, nil
}

// readBlobFile reads a body kept as a file.
func (st *Store) readBlobFile(hash []byte) ([]byte, error) {
	rc, err := st.blobs.Get(fmt.Sprintf("%x", hash))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// hasTextCondition reports whether c, or any criteria nested in it, needs
// the full-text index.
func hasTextCondition(c *SearchCriteria) bool {
	if len(c.Body) > 0 || len(c.Text) > 0 {
		return true
	}
	for i := range c.Not {
		if hasTextCondition(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if hasTextCondition(&c.Or[i][0]) || hasTextCondition(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

// awaitIndexed returns once no message the mailbox holds now waits for
// the indexer, asking the indexer to serve this mailbox first. It fails with
// ErrTemporary after maxIndexWait.
func (st *Store) awaitIndexed(ctx context.Context, mailboxID int64) error {
	ix := st.index
	registered := false
	defer func() {
		if registered {
			ix.mu.Lock()
			if ix.urgent[mailboxID]--; ix.urgent[mailboxID] <= 0 {
				delete(ix.urgent, mailboxID)
			}
			ix.mu.Unlock()
		}
	}()
	// Wait for what the mailbox holds now: while mail keeps arriving there
	// is always a newer unindexed message.
	var last int64
	err := st.readRow(ctx, `SELECT coalesce(max(u.blob_id), 0) FROM messages m JOIN unindexed u ON u.blob_id = m.blob_id
		WHERE m.mailbox_id = ?`, mailboxID).Scan(&last)
	if err != nil {
		return fmt.Errorf("search: %w: %w", ErrTemporary, err)
	}
	if last == 0 {
		return nil
	}
	var deadline <-chan time.Time
	for {
		ix.mu.Lock()
		progress := ix.progress
		ix.mu.Unlock()
		var waiting bool
		err := st.readRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages m JOIN unindexed u ON u.blob_id = m.blob_id
			WHERE m.mailbox_id = ? AND u.blob_id <= ?)`, mailboxID, last).Scan(&waiting)
		if err != nil {
			return fmt.Errorf("search: %w: %w", ErrTemporary, err)
		}
		if !waiting {
			return nil
		}
		if !registered {
			registered = true
			ix.mu.Lock()
			ix.urgent[mailboxID]++
			ix.mu.Unlock()
			t := time.NewTimer(maxIndexWait)
			defer t.Stop()
			deadline = t.C
		}
		ix.poke()
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("search: %w: full-text index is behind", ErrTemporary)
		}
	}
}

// urgentNow reports whether the writer should serve a queued indexing
// chunk before deliveries: a search waits for it, or the store closes.
func (ix *indexer) urgentNow() bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return len(ix.urgent) > 0 || ix.closing
}
