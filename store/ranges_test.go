package store_test

import (
	"context"
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
	got, err := acct.InlineBodies(ctx, []int64{msgs[0].ID, msgs[1].ID})
	if err != nil {
		t.Fatal(err)
	}
	if string(got[msgs[0].ID]) != storetest.CRLF(small) {
		t.Fatalf("small body = %q", got[msgs[0].ID])
	}
	if _, ok := got[msgs[1].ID]; ok {
		t.Fatal("a file-backed body came back inline")
	}
	eve, err := st.Account(ctx, "eve@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if other, err := eve.InlineBodies(ctx, []int64{msgs[0].ID}); err != nil || len(other) != 0 {
		t.Fatalf("another account read alice's message: %v, %v", other, err)
	}
}
