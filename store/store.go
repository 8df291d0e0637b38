// Package store is the one mail store that every protocol shares: accounts,
// domains, aliases, mailboxes, messages, flags and the changes between them,
// kept in one SQLite database with message bytes stored by content hash.
//
// It knows nothing about SMTP, POP3, IMAP or HTTP. Every committed change is
// published on an event Hub after commit. Writes are serialised through one
// writer connection and batched (group commit), so a message is synced to
// disk before Deliver returns without costing one fsync per message.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite"
)

// Error kinds. Protocols choose their replies with errors.Is, never from
// error text.
var (
	ErrNotFound   = errors.New("not found")
	ErrExists     = errors.New("already exists")
	ErrOverQuota  = errors.New("over quota")
	ErrAuthFailed = errors.New("authentication failed")
	ErrLocked     = errors.New("locked")
	ErrTemporary  = errors.New("temporary failure")
	ErrNotLocal   = errors.New("domain is not local")
	ErrInvalid    = errors.New("invalid argument")
	ErrTooBig     = errors.New("message too big")
)

const (
	// DefaultReadConns is the size of the read-only connection pool.
	DefaultReadConns = 8
	// DefaultInlineMaxBytes is the largest message body kept inside the
	// database; larger bodies are files named by their hash. Chosen by
	// BenchmarkDeliverSize: below this an inline row costs less than the
	// extra file, directory sync and open.
	DefaultInlineMaxBytes = 128 << 10
	// DefaultBatchMax is the most write requests committed in one
	// transaction by the group-commit writer.
	DefaultBatchMax = 256
	// dbFile is the database file name inside Options.Dir.
	dbFile = "mailbox.db"
	// blobDir is the folder of large message bodies inside Options.Dir.
	blobDir = "blobs"
)

// Options configures Open. Zero values mean the documented default.
type Options struct {
	// Dir is the data directory holding mailbox.db and blobs/. Required.
	Dir string
	// Logger receives store diagnostics. Nil discards them.
	Logger *slog.Logger
	// ReadConns bounds the read-only pool (default DefaultReadConns).
	ReadConns int
	// InlineMaxBytes is the size above which a body is stored as a file
	// (default DefaultInlineMaxBytes).
	InlineMaxBytes int64
	// BatchMax bounds one group commit (default DefaultBatchMax).
	BatchMax int
	// Hub carries change events; nil means a new in-process hub.
	Hub Hub
	// Now is the clock; nil means time.Now. Tests may set it.
	Now func() time.Time
	// SendLimits bound what each account may submit (Account.Submit);
	// zero fields mean no limit.
	SendLimits SendLimits
	// HashMemoryRelease is how long password hashing must have been quiet
	// before its memory goes back to the operating system (default
	// DefaultHashMemoryRelease; negative: never). See hashMemory.
	HashMemoryRelease time.Duration
	// IndexBacklog is the number of messages waiting for the full-text
	// index up to which indexing waits for the writer to be idle; past it,
	// indexing shares the writer with deliveries (default
	// DefaultIndexBacklog).
	IndexBacklog int
}

// Store is the mail store. It is safe for concurrent use.
type Store struct {
	dir    string
	log    *slog.Logger
	writer *sql.DB
	reader *sql.DB
	blobs  Blobs
	hub    Hub
	now    func() time.Time

	inlineMax  int64
	batchMax   int
	sendLimits SendLimits
	queued     chan struct{} // signalled after a commit that queued mail
	writes     chan *writeReq
	lowWrites  chan *writeReq // the indexer's chunks, see writeWith
	stopped    chan struct{}
	index      *indexer
	ckpt       *checkpointer
	closeOnce  sync.Once
	closeMu    sync.RWMutex // held shared while queueing a write
	closed     bool

	locksMu sync.Mutex
	locks   map[int64]bool // maildrops locked by a POP3 session

	hashSlots chan struct{} // bounds concurrent argon2 computations
	hashMem   *hashMemory   // returns their memory after a burst

	readStmts sync.Map // query string -> *sql.Stmt on the reader pool
	readCount atomic.Int32
}

// maxReadStmts bounds the reader's statement cache; queries built from
// search criteria vary, and past the bound they simply run unprepared.
const maxReadStmts = 256

// readStmt returns query prepared on the reader pool, or nil when it
// cannot or should not be cached. Parsing the SQL again was about half the
// cost of a POP3 RETR.
func (st *Store) readStmt(ctx context.Context, query string) *sql.Stmt {
	if s, ok := st.readStmts.Load(query); ok {
		return s.(*sql.Stmt)
	}
	if st.readCount.Load() >= maxReadStmts {
		return nil
	}
	s, err := st.reader.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	if prev, loaded := st.readStmts.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sql.Stmt)
	}
	st.readCount.Add(1)
	return s
}

// readRow runs a one-row query on the reader pool with a cached statement.
func (st *Store) readRow(ctx context.Context, query string, args ...any) *sql.Row {
	if s := st.readStmt(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return st.reader.QueryRowContext(ctx, query, args...)
}

// readRows runs a query on the reader pool with a cached statement.
func (st *Store) readRows(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := st.readStmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return st.reader.QueryContext(ctx, query, args...)
}

// Open opens (creating if needed) the store in opts.Dir, runs schema
// migrations and starts the writer.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("open store: %w: no data directory", ErrInvalid)
	}
	// The database is opened by a file: URI, where a relative path would
	// read as a host name.
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	opts.Dir = dir
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	st := &Store{
		dir:       opts.Dir,
		log:       opts.Logger,
		hub:       opts.Hub,
		now:       opts.Now,
		inlineMax: opts.InlineMaxBytes,
		batchMax:  opts.BatchMax,
		locks:     map[int64]bool{},
		hashSlots: make(chan struct{}, max(2, runtime.NumCPU())),
		hashMem:   newHashMemory(opts.HashMemoryRelease),
		queued:    make(chan struct{}, 1),
		index:     newIndexer(opts.IndexBacklog),
	}
	st.sendLimits = opts.SendLimits
	if st.log == nil {
		st.log = slog.New(slog.DiscardHandler)
	}
	if st.hub == nil {
		st.hub = NewHub()
	}
	if st.now == nil {
		st.now = time.Now
	}
	if st.inlineMax <= 0 {
		st.inlineMax = DefaultInlineMaxBytes
	}
	if st.batchMax <= 0 {
		st.batchMax = DefaultBatchMax
	}
	readConns := opts.ReadConns
	if readConns <= 0 {
		readConns = DefaultReadConns
	}
	blobs, err := newFileBlobs(filepath.Join(opts.Dir, blobDir))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	st.blobs = blobs

	path := filepath.Join(opts.Dir, dbFile)
	u := url.URL{Scheme: "file", Path: path}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "busy_timeout(5000)")
	// Savepoints (one per request in a group commit) keep their undo
	// pages in memory rather than in a temporary file.
	q.Add("_pragma", "temp_store(MEMORY)")
	// 16 MiB of page cache (SQLite's default is 2 MiB): a group commit of
	// large messages no longer spills dirty pages into the WAL before its
	// commit (BenchmarkDeliverText 100KiB/64: 885 -> 744 CPU µs/msg).
	q.Add("_pragma", "cache_size(-16384)")
	// Checkpoints run in the background (checkpoint.go); this one is the
	// backstop.
	q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walBackstopPages))
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	writerDSN := u.String()
	st.writer, err = sql.Open("sqlite", writerDSN)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	st.writer.SetMaxOpenConns(1)
	st.writer.SetMaxIdleConns(1)
	st.writer.SetConnMaxLifetime(0)
	st.writer.SetConnMaxIdleTime(0)
	if err := migrate(ctx, st.writer); err != nil {
		st.writer.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}

	q = url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "query_only(1)")
	u.RawQuery = q.Encode()
	st.reader, err = sql.Open("sqlite", u.String())
	if err != nil {
		st.writer.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	st.reader.SetMaxOpenConns(readConns)
	st.reader.SetMaxIdleConns(readConns)
	st.reader.SetConnMaxIdleTime(time.Minute)
	if err := st.startCheckpointer(writerDSN); err != nil {
		st.reader.Close()
		st.writer.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}

	st.writes = make(chan *writeReq, st.batchMax)
	st.lowWrites = make(chan *writeReq, 1)
	st.stopped = make(chan struct{})
	go st.writeLoop()
	if err := st.sweepBlobs(ctx); err != nil {
		st.log.Warn("sweep unreferenced blobs", "err", err)
	}
	st.startIndexer()
	return st, nil
}

// Close stops the writer after the writes already queued, and closes the
// database. Calls after the first return nil.
func (st *Store) Close() error {
	var err error
	st.closeOnce.Do(func() {
		st.hashMem.stop()
		if st.writes != nil {
			st.stopIndexer()
			st.closeMu.Lock()
			st.closed = true
			close(st.writes)
			st.closeMu.Unlock()
			<-st.stopped
		}
		err = errors.Join(err, st.stopCheckpointer())
		st.readStmts.Range(func(_, s any) bool {
			s.(*sql.Stmt).Close()
			return true
		})
		if st.reader != nil {
			err = errors.Join(err, st.reader.Close())
		}
		if st.writer != nil {
			err = errors.Join(err, st.writer.Close())
		}
	})
	return err
}

// Hub returns the event hub that carries this store's changes.
func (st *Store) Hub() Hub { return st.hub }

// Dir returns the data directory.
func (st *Store) Dir() string { return st.dir }
