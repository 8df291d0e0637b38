package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// openIndexTest opens a store in dir with bob@example.test and returns it
// with bob's INBOX id.
func openIndexTest(t *testing.T, dir string, opts Options) (*Store, *Account, int64) {
	t.Helper()
	ctx := context.Background()
	opts.Dir = dir
	st, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	acct, err := st.Account(ctx, "bob@example.test")
	if err != nil {
		if err := st.AddDomain(ctx, "example.test"); err != nil {
			t.Fatal(err)
		}
		if acct, err = st.CreateAccount(ctx, "bob@example.test", "pw"); err != nil {
			t.Fatal(err)
		}
	}
	inbox, err := acct.MailboxByRole(ctx, RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	return st, acct, inbox.ID
}

func indexTestMessage(i int, word string) []byte {
	return fmt.Appendf(nil, "From: a@example.test\r\nTo: bob@example.test\r\nSubject: note %d\r\n\r\nline one\r\n%s is here\r\n", i, word)
}

func deliverTo(t *testing.T, st *Store, raw []byte) {
	t.Helper()
	if _, err := st.Deliver(context.Background(), Delivery{Recipients: []string{"bob@example.test"}, Data: raw}); err != nil {
		t.Fatal(err)
	}
}

func unindexedCount(t *testing.T, st *Store) int {
	t.Helper()
	var n int
	if err := st.reader.QueryRow("SELECT count(*) FROM unindexed").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A delivery answers before its text is indexed; a body search right
// after it still finds it, and the indexer then empties unindexed.
func TestSearchFindsMessagesNotYetIndexed(t *testing.T) {
	ctx := context.Background()
	st, acct, inbox := openIndexTest(t, t.TempDir(), Options{})
	for i := range 50 {
		deliverTo(t, st, indexTestMessage(i, fmt.Sprintf("word%d", i)))
		got, err := acct.Search(ctx, inbox, SearchCriteria{Body: []string{fmt.Sprintf("word%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []uint32{uint32(i + 1)}) {
			t.Fatalf("search for message %d right after delivery: %v", i+1, got)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for unindexedCount(t, st) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d blobs still unindexed", unindexedCount(t, st))
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := acct.Search(ctx, inbox, SearchCriteria{Text: []string{"note"}})
	if err != nil || len(got) != 50 {
		t.Fatalf("text search: %d hits, %v", len(got), err)
	}
}

// A crash between the delivery's commit and the indexer's leaves blobs in
// unindexed: the next Open indexes them, and searches find them meanwhile.
func TestUnindexedBlobsAreIndexedAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, _, _ := openIndexTest(t, dir, Options{})
	for i := range 5 {
		deliverTo(t, st, indexTestMessage(i, "zanzibar"))
	}
	st.Close()
	// What a crash right after the deliveries leaves: no index rows.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"DELETE FROM blob_text",
		"INSERT OR IGNORE INTO unindexed(blob_id) SELECT id FROM blobs",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	st, acct, inbox := openIndexTest(t, dir, Options{})
	got, err := acct.Search(ctx, inbox, SearchCriteria{Body: []string{"zanzibar"}})
	if err != nil || !slices.Equal(got, []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("search after restart: %v %v", got, err)
	}
	if n := unindexedCount(t, st); n != 0 {
		t.Fatalf("%d blobs unindexed after the search", n)
	}
}

// Deliveries keep the writer busy; a search must not wait for a pause in
// them (the indexer serves a waiting mailbox at once).
func TestSearchDuringSteadyDeliveries(t *testing.T) {
	ctx := context.Background()
	st, acct, inbox := openIndexTest(t, t.TempDir(), Options{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			deliverTo(t, st, indexTestMessage(i, "filler"))
		}
	}()
	time.Sleep(50 * time.Millisecond)
	deliverTo(t, st, indexTestMessage(-1, "needle"))
	start := time.Now()
	got, err := acct.Search(ctx, inbox, SearchCriteria{Body: []string{"needle"}})
	waited := time.Since(start)
	close(stop)
	<-done
	if err != nil || len(got) != 1 {
		t.Fatalf("search: %v %v", got, err)
	}
	t.Logf("search waited %v", waited)
	if waited > 5*time.Second {
		t.Fatalf("search waited %v for the indexer", waited)
	}
}

// Messages expunged before the indexer reached them leave nothing behind.
func TestExpungeBeforeIndexing(t *testing.T) {
	ctx := context.Background()
	st, acct, inbox := openIndexTest(t, t.TempDir(), Options{})
	for i := range 20 {
		deliverTo(t, st, indexTestMessage(i, "gone"))
		if _, err := acct.Expunge(ctx, inbox, []uint32{uint32(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := unindexedCount(t, st); n != 0 {
		t.Fatalf("%d unindexed rows for expunged messages", n)
	}
	deliverTo(t, st, indexTestMessage(99, "kept"))
	got, err := acct.Search(ctx, inbox, SearchCriteria{Body: []string{"gone"}})
	if err != nil || len(got) != 0 {
		t.Fatalf("search for expunged text: %v %v", got, err)
	}
	got, err = acct.Search(ctx, inbox, SearchCriteria{Body: []string{"kept"}})
	if err != nil || !slices.Equal(got, []uint32{21}) {
		t.Fatalf("search: %v %v", got, err)
	}
}

// Closing the store with a backlog neither hangs nor loses it.
func TestCloseWithIndexBacklog(t *testing.T) {
	dir := t.TempDir()
	st, _, _ := openIndexTest(t, dir, Options{})
	for i := range 30 {
		deliverTo(t, st, indexTestMessage(i, "later"))
	}
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
	st, acct, inbox := openIndexTest(t, dir, Options{})
	got, err := acct.Search(context.Background(), inbox, SearchCriteria{Body: []string{"later"}})
	if err != nil || len(got) != 30 {
		t.Fatalf("search after reopen: %d hits, %v", len(got), err)
	}
	_ = st
}

func TestCanonicalCRLF(t *testing.T) {
	slow := func(data []byte) bool {
		for i, c := range data {
			if c == '\n' && (i == 0 || data[i-1] != '\r') || c == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
				return false
			}
		}
		return true
	}
	alphabet := []byte("a\r\n.")
	// Every string of up to 6 bytes over the alphabet.
	var walk func(b []byte)
	walk = func(b []byte) {
		if got, want := canonicalCRLF(b), slow(b); got != want {
			t.Fatalf("canonicalCRLF(%q) = %v, want %v", b, got, want)
		}
		if len(b) == 6 {
			return
		}
		for _, c := range alphabet {
			walk(append(bytes.Clone(b), c))
		}
	}
	walk(nil)
}
