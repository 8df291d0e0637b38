package imap

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store"
	"mailbox/store/storetest"
)

// storeView is what a fresh read of the store says a SELECT and a FETCH
// 1:* (UID FLAGS) must show.
type storeView struct {
	uids     []uint32
	flags    []string // per message, sorted flags joined by spaces
	keywords []string
	unseen   uint32 // sequence number of the first unseen message, 0 if none
}

func readStoreView(t *testing.T, st *store.Store, addr, mailbox string) storeView {
	t.Helper()
	ctx := context.Background()
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := acct.Mailbox(ctx, mailbox)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := acct.Messages(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	var v storeView
	for i, m := range msgs {
		v.uids = append(v.uids, m.UID)
		fl := slices.Clone(m.Flags)
		slices.Sort(fl)
		v.flags = append(v.flags, strings.Join(fl, " "))
		if v.unseen == 0 && !slices.Contains(m.Flags, store.FlagSeen) {
			v.unseen = uint32(i + 1)
		}
	}
	if v.keywords, err = acct.Keywords(ctx, mb.ID); err != nil {
		t.Fatal(err)
	}
	return v
}

// sessionViewDiff compares a fresh SELECT and FETCH 1:* (UID FLAGS) of
// a session with the store; "" if they agree.
func sessionViewDiff(t *testing.T, c *client, raw *rawConn, want storeView, mailbox string) string {
	t.Helper()
	// imapclient drops the IMAP4rev1 UNSEEN code; the raw session reads it.
	raw.send(t, "u SELECT "+mailbox)
	var unseen uint32
	for {
		line := raw.expect(t, "")
		if _, rest, ok := strings.Cut(line, "[UNSEEN "); ok {
			fmt.Sscanf(rest, "%d", &unseen)
		}
		if strings.HasPrefix(line, "u ") {
			break
		}
	}
	if unseen != want.unseen {
		return fmt.Sprintf("SELECT: UNSEEN %d, store's first unseen is %d", unseen, want.unseen)
	}
	data := c.mustSelect(t, mailbox)
	if data.NumMessages != uint32(len(want.uids)) {
		return fmt.Sprintf("SELECT: %d messages, store has %d", data.NumMessages, len(want.uids))
	}
	if n := len(want.uids); n > 0 && uint32(data.UIDNext) <= want.uids[n-1] {
		return fmt.Sprintf("SELECT: UIDNEXT %d not above the last UID %d", data.UIDNext, want.uids[n-1])
	}
	var kws []string
	for _, f := range data.Flags {
		if !strings.HasPrefix(string(f), `\`) {
			kws = append(kws, string(f))
		}
	}
	if !slices.Equal(kws, want.keywords) {
		return fmt.Sprintf("SELECT: FLAGS keywords %v, store has %v", kws, want.keywords)
	}
	if len(want.uids) == 0 {
		return ""
	}
	msgs := c.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true})
	if len(msgs) != len(want.uids) {
		return fmt.Sprintf("FETCH 1:*: %d messages, store has %d", len(msgs), len(want.uids))
	}
	for i, m := range msgs {
		fl := strings.Fields(flagStrings(m.Flags))
		slices.Sort(fl)
		if m.SeqNum != uint32(i+1) || uint32(m.UID) != want.uids[i] || strings.Join(fl, " ") != want.flags[i] {
			return fmt.Sprintf("FETCH 1:* [%d] = %d UID %d FLAGS %v; store has UID %d FLAGS %s",
				i, m.SeqNum, m.UID, fl, want.uids[i], want.flags[i])
		}
	}
	return ""
}

// checkSessionView fails unless the session comes to agree with the
// store within a second: changes made by the store directly reach the
// shared state by events, asynchronously.
func checkSessionView(t *testing.T, ts *testServer, c *client, mailbox string) {
	t.Helper()
	raw := dialRaw(t, ts.addr)
	defer raw.Close()
	raw.send(t, `l LOGIN alice@example.test "alice secret"`)
	raw.expect(t, "l OK")
	deadline := time.Now().Add(time.Second)
	for {
		diff := sessionViewDiff(t, c, raw, readStoreView(t, ts.st, alice, mailbox), mailbox)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(diff)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A mailbox left by every session keeps its state while the account is
// logged in, fed by events: SELECT afterwards must show exactly what the
// store holds after deliveries, expunges, copies and flag changes made
// meanwhile by other sessions and by the store directly.
func TestIdleMailboxStateFollowsChanges(t *testing.T) {
	ts := newTestServer(t, testMessages(40))
	ctx := context.Background()
	acct, err := ts.st.Account(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(ctx, store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	a := ts.login(t, alice, alicePass)
	b := ts.login(t, alice, alicePass)
	checkSessionView(t, ts, a, "INBOX")
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 12 {
		// a leaves INBOX (its state stays) while b and the store change it.
		if err := a.Unselect().Wait(); err != nil {
			t.Fatal(err)
		}
		b.mustSelect(t, "INBOX")
		n := b.Mailbox().NumMessages
		pick := func() imap.SeqSet { return imap.SeqSetNum(1+rng.Uint32N(n), 1+rng.Uint32N(n)) }
		kw := imap.Flag(fmt.Sprintf("$K%d", rng.IntN(3)))
		if err := b.Store(pick(), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen, kw}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Store(pick(), &imap.StoreFlags{Op: imap.StoreFlagsSet, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Store(pick(), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Expunge().Collect(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Copy(pick(), "INBOX").Wait(); err != nil {
			t.Fatal(err)
		}
		if err := b.Unselect().Wait(); err != nil {
			t.Fatal(err)
		}
		storetest.Deliver(t, ts.st, alice, storetest.Message("x@y.test", alice, fmt.Sprint("late ", round), "x"))
		uids, err := acct.UIDs(ctx, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		some := []uint32{uids[rng.IntN(len(uids))], uids[rng.IntN(len(uids))]}
		if _, err := acct.SetFlags(ctx, inbox.ID, some, store.FlagsRemove, []string{store.FlagSeen, "$K0", "$K1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := acct.Expunge(ctx, inbox.ID, some[:1]); err != nil {
			t.Fatal(err)
		}
		checkSessionView(t, ts, a, "INBOX")
	}
}

// At most maxIdleMailboxes unselected mailboxes keep their state per
// account, the one left longest ago going first.
func TestIdleMailboxStatesBounded(t *testing.T) {
	ts := newTestServer(t, testMessages(3))
	c := ts.login(t, alice, alicePass)
	names := []string{"INBOX"}
	for i := range maxIdleMailboxes + 3 {
		name := fmt.Sprint("Folder", i)
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	for _, name := range names {
		c.mustSelect(t, name)
	}
	ts.srv.reg.mu.Lock()
	var as *accountState
	for _, a := range ts.srv.reg.accounts {
		as = a
	}
	ts.srv.reg.mu.Unlock()
	as.mu.Lock()
	n := len(as.mailboxes)
	as.mu.Unlock()
	// The selected mailbox and the idle ones.
	if n != maxIdleMailboxes+1 {
		t.Fatalf("%d mailbox states held, want %d", n, maxIdleMailboxes+1)
	}
	// INBOX was left first: it is read again, and shows its messages.
	checkSessionView(t, ts, c, "INBOX")
}

// A mailbox deleted and created again under the same name is a new
// mailbox (new UIDVALIDITY): SELECT must not show the old one's state.
func TestRecreatedMailboxIsNew(t *testing.T) {
	ts := newTestServer(t, testMessages(3))
	c := ts.login(t, alice, alicePass)
	if err := c.Create("Box", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	c.mustSelect(t, "INBOX")
	if _, err := c.Copy(imap.SeqSetNum(1, 2), "Box").Wait(); err != nil {
		t.Fatal(err)
	}
	first := c.mustSelect(t, "Box")
	if first.NumMessages != 2 {
		t.Fatalf("Box holds %d messages, want 2", first.NumMessages)
	}
	c.mustSelect(t, "INBOX")
	if err := c.Delete("Box").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Box", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	again := c.mustSelect(t, "Box")
	if again.NumMessages != 0 || again.UIDValidity == first.UIDValidity {
		t.Fatalf("recreated Box: %d messages, UIDVALIDITY %d (was %d)", again.NumMessages, again.UIDValidity, first.UIDValidity)
	}
}
