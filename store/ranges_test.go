package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestRangesListOnlyWhatIsAsked(t *testing.T) {
	ctx := context.Background()
	const addr = "alice@example.test"
	var msgs []string
	for i := range 10 {
		msgs = append(msgs, storetest.Message("bob@example.test", addr, "subject "+string(rune('a'+i)), "body"))
	}
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{addr: "a", "eve@example.test": "e"},
		Messages: map[string][]string{addr: msgs},
	})
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(ctx, store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Expunge(ctx, inbox.ID, []uint32{4}); err != nil {
		t.Fatal(err)
	}
	if _, err := acct.SetFlags(ctx, inbox.ID, []uint32{1, 2, 5}, store.FlagsAdd, []string{store.FlagSeen, "$Work"}); err != nil {
		t.Fatal(err)
	}
	uids, err := acct.UIDs(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{1, 2, 3, 5, 6, 7, 8, 9, 10}; !slices.Equal(uids, want) {
		t.Fatalf("UIDs = %v, want %v", uids, want)
	}
	got, err := acct.MessagesIn(ctx, inbox.ID, []store.UIDRange{{2, 4}, {9, 9}, {9, 20}})
	if err != nil {
		t.Fatal(err)
	}
	var gotUIDs []uint32
	for _, m := range got {
		gotUIDs = append(gotUIDs, m.UID)
	}
	if want := []uint32{2, 3, 9, 10}; !slices.Equal(gotUIDs, want) {
		t.Fatalf("MessagesIn = %v, want %v", gotUIDs, want)
	}
	mm, err := acct.MessagesWithMeta(ctx, inbox.ID, []store.UIDRange{{3, 3}}, store.MetaEnvelope)
	if err != nil {
		t.Fatal(err)
	}
	if len(mm) != 1 || mm[0].Meta.Envelope.Subject != "subject c" || mm[0].Meta.Structure.Type != "" {
		t.Fatalf("MessagesWithMeta = %+v", mm)
	}
	first, err := acct.FirstUnseen(ctx, inbox.ID)
	if err != nil || first != 3 {
		t.Fatalf("FirstUnseen = %d, %v; want 3", first, err)
	}
	kws, err := acct.Keywords(ctx, inbox.ID)
	if err != nil || !slices.Equal(kws, []string{"$Work"}) {
		t.Fatalf("Keywords = %v, %v", kws, err)
	}
	eve, err := st.Account(ctx, "eve@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eve.MessagesIn(ctx, inbox.ID, []store.UIDRange{{1, 10}}); err == nil {
		t.Fatal("another account listed alice's inbox")
	}
}

func TestMailboxCountsDeleted(t *testing.T) {
	ctx := context.Background()
	const addr = "alice@example.test"
	st := storetest.New(t, storetest.Fixture{
		Users: map[string]string{addr: "a"},
		Messages: map[string][]string{addr: {
			storetest.Message("bob@example.test", addr, "one", "1"),
			storetest.Message("bob@example.test", addr, "two", "22"),
		}},
	})
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	changed, err := acct.SetFlags(ctx, inbox.ID, []uint32{2}, store.FlagsAdd, []string{store.FlagDeleted})
	if err != nil || len(changed) != 1 {
		t.Fatal(changed, err)
	}
	m, err := acct.Message(ctx, inbox.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err = acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if inbox.Deleted != 1 || inbox.DeletedSize != m.Size || inbox.Messages != 2 {
		t.Fatalf("counts = %+v, want 1 deleted of %d bytes", inbox, m.Size)
	}
}

func TestInlineBodies(t *testing.T) {
	ctx := context.Background()
	const addr = "alice@example.test"
	small := storetest.Message("bob@example.test", addr, "small", "tiny")
	large := storetest.Message("bob@example.test", addr, "large", strings.Repeat("x", 200<<10))
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{addr: "a", "eve@example.test": "e"},
		Messages: map[string][]string{addr: {small, large}},
	})
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := acct.Messages(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := acct.InlineBodies(ctx, inbox.ID, []store.UIDRange{{Start: msgs[0].UID, Stop: msgs[1].UID}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got[msgs[0].UID]) != storetest.CRLF(small) {
		t.Fatalf("small body = %q", got[msgs[0].UID])
	}
	if _, ok := got[msgs[1].UID]; ok {
		t.Fatal("a file-backed body came back inline")
	}
	eve, err := st.Account(ctx, "eve@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if other, err := eve.InlineBodies(ctx, inbox.ID, []store.UIDRange{{Start: 1, Stop: 2}}); !errors.Is(err, store.ErrNotFound) || len(other) != 0 {
		t.Fatalf("another account read alice's message: %v, %v", other, err)
	}
}

// TestRangesSparse asks for scattered ranges in a mailbox with gaps: each
// UID in a range comes back once, in order, and nothing else, whether
// the ranges share a span query or get their own.
func TestRangesSparse(t *testing.T) {
	ctx := context.Background()
	const addr = "alice@example.test"
	var msgs []string
	for i := range 700 {
		msgs = append(msgs, storetest.Message("bob@example.test", addr, fmt.Sprint("s", i), "b"))
	}
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{addr: "a"}, Messages: map[string][]string{addr: msgs}})
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(ctx, store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	var gone []uint32
	for u := uint32(5); u <= 700; u += 7 {
		gone = append(gone, u)
	}
	if _, err := acct.Expunge(ctx, inbox.ID, gone); err != nil {
		t.Fatal(err)
	}
	all, err := acct.UIDs(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ranges := range [][]store.UIDRange{
		{{1, 1}, {3, 4}, {650, 660}, {699, 5000}},
		{{600, 10}, {5, 20}, {21, 21}},             // reversed, overlapping, touching
		{{1, 1}, {2, 2}, {300, 300}, {1000, 2000}}, // far apart: own queries
		func() (r []store.UIDRange) { // every third UID: many ranges in a span
			for u := uint32(1); u <= 700; u += 3 {
				r = append(r, store.UIDRange{Start: u, Stop: u})
			}
			return r
		}(),
	} {
		var want []uint32
		for _, u := range all {
			for _, r := range ranges {
				if u >= min(r.Start, r.Stop) && u <= max(r.Start, r.Stop) {
					want = append(want, u)
					break
				}
			}
		}
		got, err := acct.MessagesIn(ctx, inbox.ID, ranges)
		if err != nil {
			t.Fatal(err)
		}
		var gotUIDs []uint32
		for _, m := range got {
			gotUIDs = append(gotUIDs, m.UID)
		}
		if !slices.Equal(gotUIDs, want) {
			t.Errorf("MessagesIn(%v) = %v, want %v", ranges, gotUIDs, want)
		}
		mm, err := acct.MessagesWithMeta(ctx, inbox.ID, ranges, store.MetaEnvelope)
		if err != nil || len(mm) != len(want) {
			t.Fatalf("MessagesWithMeta(%v): %d messages, %v; want %d", ranges, len(mm), err, len(want))
		}
		for i, m := range mm {
			if m.UID != want[i] || m.Meta.Envelope.Subject != fmt.Sprint("s", m.UID-1) {
				t.Fatalf("MessagesWithMeta(%v)[%d] = uid %d %q", ranges, i, m.UID, m.Meta.Envelope.Subject)
			}
		}
		sizes, err := acct.Sizes(ctx, inbox.ID, ranges)
		if err != nil || len(sizes) != len(want) {
			t.Fatalf("Sizes(%v): %d, %v; want %d", ranges, len(sizes), err, len(want))
		}
		for i, m := range sizes {
			if m.UID != want[i] || m.ID != got[i].ID || m.Size != got[i].Size {
				t.Fatalf("Sizes(%v)[%d] = %+v, message %+v", ranges, i, m, got[i])
			}
		}
		envs, err := acct.Envelopes(ctx, inbox.ID, ranges)
		if err != nil || len(envs) != len(want) {
			t.Fatalf("Envelopes(%v): %d, %v; want %d", ranges, len(envs), err, len(want))
		}
		for i, e := range envs {
			if e.UID != want[i] || e.Envelope.Subject != fmt.Sprint("s", e.UID-1) {
				t.Fatalf("Envelopes(%v)[%d] = uid %d %q", ranges, i, e.UID, e.Envelope.Subject)
			}
		}
		bodies, err := acct.InlineBodies(ctx, inbox.ID, ranges)
		if err != nil || len(bodies) != len(want) {
			t.Fatalf("InlineBodies(%v): %d bodies, %v; want %d", ranges, len(bodies), err, len(want))
		}
		for _, u := range want {
			if !strings.Contains(string(bodies[u]), fmt.Sprintf("Subject: s%d\r\n", u-1)) {
				t.Fatalf("InlineBodies(%v)[%d] = %q", ranges, u, bodies[u])
			}
		}
	}
}

// TestView reads a mailbox's UIDs and flags in one snapshot.
func TestView(t *testing.T) {
	ctx := context.Background()
	const addr = "alice@example.test"
	var msgs []string
	for i := range 5 {
		msgs = append(msgs, storetest.Message("bob@example.test", addr, fmt.Sprint("s", i), "b"))
	}
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{addr: "a", "eve@example.test": "e"},
		Messages: map[string][]string{addr: msgs},
	})
	acct, err := st.Account(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(ctx, store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Expunge(ctx, inbox.ID, []uint32{2}); err != nil {
		t.Fatal(err)
	}
	changed, err := acct.SetFlags(ctx, inbox.ID, []uint32{3, 4}, store.FlagsAdd, []string{store.FlagSeen, store.FlagDraft, "$Work", "later"})
	if err != nil || len(changed) != 2 {
		t.Fatalf("SetFlags: %v, %v", changed, err)
	}
	v, err := acct.View(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.UIDs, []uint32{1, 3, 4, 5}) || v.ModSeq != changed[0].ModSeq {
		t.Fatalf("View = %+v, want UIDs 1 3 4 5 at modseq %d", v, changed[0].ModSeq)
	}
	if want := []store.SystemFlags{0, store.Seen | store.Draft, store.Seen | store.Draft, 0}; !slices.Equal(v.System, want) {
		t.Fatalf("View.System = %v, want %v", v.System, want)
	}
	if len(v.Keywords) != 2 || v.Keywords[3] != "$Work later " || v.Keywords[4] != "$Work later " {
		t.Fatalf("View.Keywords = %v", v.Keywords)
	}
	if sys, kws := store.SplitFlags(changed[0].Flags); sys != store.Seen|store.Draft || kws != "$Work later " ||
		!slices.Equal(sys.Names(), []string{store.FlagSeen, store.FlagDraft}) || !slices.Equal(strings.Fields(kws), []string{"$Work", "later"}) {
		t.Fatalf("SplitFlags(%v) = %v %q", changed[0].Flags, sys, kws)
	}
	eve, err := st.Account(ctx, "eve@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eve.View(ctx, inbox.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another account's View: %v", err)
	}
}
