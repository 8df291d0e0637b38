package imap

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store"
	"mailbox/store/storetest"
)

// A 100,000-message INBOX: SELECT, FETCH and SEARCH work, and sessions
// share one list of UIDs instead of each holding the mailbox.
func TestHugeMailbox(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("fills 100,000 messages; run without -short and -race")
	}
	const n = 100_000
	ts := newTestServer(t, nil)
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int, 64)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				msg := fmt.Sprintf("From: s%d@example.org\r\nSubject: n%d\r\n\r\nword%d\r\n", i%50, i, i%1000)
				if _, err := ts.st.Deliver(context.Background(), store.Delivery{Recipients: []string{alice}, Data: []byte(msg)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("filled %d messages in %v", n, time.Since(start))

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	clients := make([]*client, 5)
	for i := range clients {
		clients[i] = ts.login(t, alice, alicePass)
		start := time.Now()
		sel := clients[i].mustSelect(t, "INBOX")
		if sel.NumMessages != n {
			t.Fatalf("SELECT: %d messages", sel.NumMessages)
		}
		t.Logf("SELECT %d took %v", i, time.Since(start))
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap grew %d KiB for 5 sessions on %d messages", grew>>10, n)
	if grew > 8<<20 {
		t.Errorf("heap grew %d bytes: sessions do not share the mailbox state", grew)
	}

	c := clients[0]
	start = time.Now()
	msgs, err := c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil || len(msgs) != n {
		t.Fatalf("UID FETCH 1:* = %d messages, %v", len(msgs), err)
	}
	t.Logf("UID FETCH 1:* (UID FLAGS) took %v", time.Since(start))
	msgs = c.fetch(t, imap.SeqSet{{Start: n - 9, Stop: 0}}, &imap.FetchOptions{Envelope: true})
	if len(msgs) != 10 || msgs[9].Envelope.Subject != fmt.Sprintf("n%d", n-1) && msgs[9].Envelope.Subject == "" {
		t.Fatalf("FETCH last 10 = %d", len(msgs))
	}
	start = time.Now()
	found, err := c.UIDSearch(&imap.SearchCriteria{Body: []string{"word999"}}, nil).Wait()
	if err != nil || len(found.AllUIDs()) != n/1000 {
		t.Fatalf("SEARCH BODY = %d, %v", len(found.AllUIDs()), err)
	}
	t.Logf("UID SEARCH BODY took %v", time.Since(start))
	// The last message goes; every session hears of it.
	if err := c.Store(imap.SeqSetNum(n), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	storetest.Deliver(t, ts.st, alice, "Subject: one more\r\n\r\nx\r\n")
	for _, o := range clients[1:] {
		// The delivery reaches the sessions' queues a moment after
		// Deliver returns; a session not in IDLE hears of it at a
		// command after that.
		for range 50 {
			if err := o.Noop().Wait(); err != nil {
				t.Fatal(err)
			}
			if o.Mailbox().NumMessages == n {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		o.up.wait(t, fmt.Sprintf("EXPUNGE %d", n), 5*time.Second)
		o.up.wait(t, fmt.Sprintf("EXISTS %d", n), 5*time.Second)
	}
}
