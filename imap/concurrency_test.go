package imap

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store"
	"mailbox/store/storetest"
)

// Several sessions expunge, flag and receive mail in one mailbox at once.
// The shared tracker must accept every queued expunge (it panics on a
// wrong sequence number), and afterwards every session must see exactly
// the store's messages, in order.
func TestConcurrentExpungeKeepsEverySessionConsistent(t *testing.T) {
	const sessions, rounds = 6, 15
	ts := newTestServer(t, testMessages(120))
	clients := make([]*client, sessions)
	for i := range clients {
		clients[i] = ts.login(t, alice, alicePass)
		clients[i].mustSelect(t, "INBOX")
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, sessions+1)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for r := range rounds {
				mbox := c.Mailbox()
				if mbox == nil {
					errs <- fmt.Errorf("session %d round %d: not selected (connection lost?)", i, r)
					return
				}
				n := mbox.NumMessages
				if n == 0 {
					continue
				}
				var set imap.SeqSet
				for range 3 {
					set.AddNum(1 + rng.Uint32N(n))
				}
				if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
					errs <- fmt.Errorf("session %d round %d store: %w", i, r, err)
					return
				}
				var err error
				if r%2 == 0 {
					_, err = c.Expunge().Collect()
				} else {
					_, err = c.Move(imap.SeqSetNum(1+rng.Uint32N(n)), "Trash").Wait()
				}
				if err != nil {
					errs <- fmt.Errorf("session %d round %d expunge: %w", i, r, err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 30 {
			if _, err := ts.st.Deliver(ctx, store.Delivery{Recipients: []string{alice}, Data: []byte(storetest.CRLF(storetest.Message("x@y.test", alice, fmt.Sprintf("late %d", i), "x")))}); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	acct, err := ts.st.Account(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(ctx, store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	want, err := acct.UIDs(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		msgs := c.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true})
		var got []uint32
		for j, m := range msgs {
			if m.SeqNum != uint32(j+1) {
				t.Fatalf("session %d: message %d has sequence number %d", i, j+1, m.SeqNum)
			}
			got = append(got, uint32(m.UID))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("session %d sees %v\nstore has %v", i, got, want)
		}
		if n := c.Mailbox().NumMessages; n != uint32(len(want)) {
			t.Fatalf("session %d counts %d messages, store has %d", i, n, len(want))
		}
	}
}

// A session that does not poll while others expunge and append keeps a
// consistent view: its sequence numbers stay valid until it is told.
func TestStaleViewUntilPolled(t *testing.T) {
	ts := newTestServer(t, testMessages(5))
	slow := ts.login(t, alice, alicePass)
	slow.mustSelect(t, "INBOX")
	fast := ts.login(t, alice, alicePass)
	fast.mustSelect(t, "INBOX")
	if err := fast.Store(imap.SeqSetNum(2, 4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := fast.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	storetest.Deliver(t, ts.st, alice, storetest.Message("x@y.test", alice, "new", "x"))
	time.Sleep(50 * time.Millisecond)
	// FETCH may not send EXPUNGE (RFC 9051 §7.4.1): the slow session still
	// numbers messages 1..5; 2 and 4 are gone, 6 is not announced yet.
	// (Pending FETCH FLAGS updates for 2 and 4 come first; RFC822.SIZE
	// tells the command's own responses apart.)
	msgs := slow.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: true})
	var got []string
	for _, m := range msgs {
		if m.RFC822Size > 0 {
			got = append(got, fmt.Sprintf("%d:%d", m.SeqNum, m.UID))
		}
	}
	if fmt.Sprint(got) != "[1:1 3:3 5:5]" {
		t.Fatalf("stale FETCH 1:* = %v, want [1:1 3:3 5:5]", got)
	}
	if err := slow.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	slow.up.wait(t, "EXPUNGE 2", time.Second)
	slow.up.wait(t, "EXISTS 4", time.Second)
	msgs = slow.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true})
	got = nil
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d:%d", m.SeqNum, m.UID))
	}
	if fmt.Sprint(got) != "[1:1 2:3 3:5 4:6]" {
		t.Fatalf("after NOOP FETCH 1:* = %v", got)
	}
}
