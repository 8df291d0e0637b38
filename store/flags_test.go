package store_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

// TestUpdateFlagsSparseSets checks the set-based flag update: sparse and
// unsorted UID sets, missing UIDs, keywords added and removed without
// regard to case, every message of the set reported, only the changed
// ones with the new modseq, and events for exactly those.
func TestUpdateFlagsSparseSets(t *testing.T) {
	ctx := context.Background()
	const user = "alice@example.test"
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{user: "a"}})
	acct, _ := st.Account(ctx, user)
	for range 10 {
		storetest.Deliver(t, st, user, storetest.Message("x@elsewhere.test", user, "s", "body"))
	}
	inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
	sub := st.Hub().Subscribe(acct.ID)
	defer sub.Close()

	flagsOf := func() map[uint32]string {
		t.Helper()
		msgs, err := acct.Messages(ctx, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint32]string{}
		for _, m := range msgs {
			out[m.UID] = strings.Join(m.Flags, " ")
		}
		return out
	}

	res, err := acct.UpdateFlags(ctx, inbox.ID, []uint32{9, 3, 99, 4, 3, 1}, store.FlagsAdd, []string{`\flagged`, "$Work"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ModSeq == 0 || len(res.Messages) != 4 {
		t.Fatalf("UpdateFlags = %+v", res)
	}
	var uids []uint32
	for _, m := range res.Messages {
		uids = append(uids, m.UID)
		if m.ModSeq != res.ModSeq || strings.Join(m.Flags, " ") != `\Flagged $Work` {
			t.Errorf("message %d: modseq %d flags %v, want %d [\\Flagged $Work]", m.UID, m.ModSeq, m.Flags, res.ModSeq)
		}
	}
	if !slices.Equal(uids, []uint32{1, 3, 4, 9}) {
		t.Errorf("UIDs %v, want [1 3 4 9]", uids)
	}
	var evUIDs []uint32
	for _, ev := range sub.Next() {
		if ev.Kind == store.FlagsChanged {
			evUIDs = append(evUIDs, ev.UID)
		}
	}
	if !slices.Equal(evUIDs, []uint32{1, 3, 4, 9}) {
		t.Errorf("FlagsChanged events for %v, want [1 3 4 9]", evUIDs)
	}

	// Adding again changes only the messages that lack a flag; the
	// keyword matches whatever its case.
	res2, err := acct.UpdateFlags(ctx, inbox.ID, []uint32{1, 2, 3}, store.FlagsAdd, []string{"$work"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res2.Messages) != 3 {
		t.Fatalf("UpdateFlags = %+v", res2)
	}
	for _, m := range res2.Messages {
		changed := m.ModSeq == res2.ModSeq
		if changed != (m.UID == 2) {
			t.Errorf("message %d changed = %v", m.UID, changed)
		}
	}
	if got := flagsOf(); got[1] != `\Flagged $Work` || got[2] != "$work" || got[5] != "" {
		t.Errorf("flags after second add: %v", got)
	}

	// Removing a keyword in another case, and a flag.
	if _, err := acct.SetFlags(ctx, inbox.ID, []uint32{1, 2, 3, 4}, store.FlagsRemove, []string{"$WORK", `\Flagged`}); err != nil {
		t.Fatal(err)
	}
	if got := flagsOf(); got[1] != "" || got[2] != "" || got[9] != `\Flagged $Work` {
		t.Errorf("flags after remove: %v", got)
	}

	// Nothing to change: no modseq, no events.
	sub.Next()
	res3, err := acct.UpdateFlags(ctx, inbox.ID, []uint32{1, 2}, store.FlagsRemove, []string{`\Seen`})
	if err != nil || res3.ModSeq != 0 || len(res3.Messages) != 2 {
		t.Fatalf("no-op UpdateFlags = %+v, %v", res3, err)
	}
	if evs := sub.Next(); len(evs) != 0 {
		t.Errorf("no-op update published %v", evs)
	}

	// Replace sets exactly the given flags.
	if _, err := acct.SetFlags(ctx, inbox.ID, []uint32{9, 10}, store.FlagsReplace, []string{`\Seen`, "a", "b"}); err != nil {
		t.Fatal(err)
	}
	if got := flagsOf(); got[9] != `\Seen a b` || got[10] != `\Seen a b` {
		t.Errorf("flags after replace: %v", got)
	}
}

// TestExpungeCopyMoveSparseSets checks the set-based expunge, copy and
// move on sparse, unsorted sets with missing UIDs.
func TestExpungeCopyMoveSparseSets(t *testing.T) {
	ctx := context.Background()
	const user = "alice@example.test"
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{user: "a"}})
	acct, _ := st.Account(ctx, user)
	for range 10 {
		storetest.Deliver(t, st, user, storetest.Message("x@elsewhere.test", user, "s", "body"))
	}
	inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
	trash, _ := acct.MailboxByRole(ctx, store.RoleTrash)
	if _, err := acct.SetFlags(ctx, inbox.ID, []uint32{7}, store.FlagsAdd, []string{"$Keep"}); err != nil {
		t.Fatal(err)
	}
	uidsOf := func(id int64) []uint32 {
		t.Helper()
		msgs, err := acct.Messages(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint32
		for _, m := range msgs {
			out = append(out, m.UID)
		}
		return out
	}
	res, err := acct.Copy(ctx, inbox.ID, trash.ID, []uint32{7, 2, 50, 3})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Source, []uint32{2, 3, 7}) || !slices.Equal(res.Dest, []uint32{1, 2, 3}) {
		t.Fatalf("Copy = %+v", res)
	}
	msgs, _ := acct.Messages(ctx, trash.ID)
	if len(msgs) != 3 || strings.Join(msgs[2].Flags, " ") != "$Keep" {
		t.Fatalf("trash after copy: %+v", msgs)
	}
	res, err = acct.Move(ctx, inbox.ID, trash.ID, []uint32{10, 1, 5, 5})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Source, []uint32{1, 5, 10}) || !slices.Equal(res.Dest, []uint32{4, 5, 6}) {
		t.Fatalf("Move = %+v", res)
	}
	removed, err := acct.Expunge(ctx, inbox.ID, []uint32{9, 1, 2, 4, 4})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []uint32{2, 4, 9}) {
		t.Fatalf("Expunge removed %v, want [2 4 9]", removed)
	}
	if got := uidsOf(inbox.ID); !slices.Equal(got, []uint32{3, 6, 7, 8}) {
		t.Errorf("inbox %v, want [3 6 7 8]", got)
	}
	if got := uidsOf(trash.ID); !slices.Equal(got, []uint32{1, 2, 3, 4, 5, 6}) {
		t.Errorf("trash %v", got)
	}
	// The copies keep their bytes after the originals went.
	msgs, _ = acct.Messages(ctx, trash.ID)
	for _, m := range msgs {
		rc, err := acct.Open(ctx, m.ID)
		if err != nil {
			t.Fatalf("open copy %d: %v", m.UID, err)
		}
		rc.Close()
	}
}
