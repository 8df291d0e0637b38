package store_test

import (
	"context"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

// TestMailboxCountersMatchMessages checks the trigger-kept counters
// against the messages after every kind of change.
func TestMailboxCountersMatchMessages(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"}})
	acct, _ := st.Account(ctx, "alice@example.test")
	for i := 0; i < 6; i++ {
		storetest.Deliver(t, st, "alice@example.test", storetest.Message("x@elsewhere.test", "alice@example.test", "s", "body"))
	}
	inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
	trash, _ := acct.MailboxByRole(ctx, store.RoleTrash)
	check := func(step string) {
		t.Helper()
		boxes, err := acct.Mailboxes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, mb := range boxes {
			msgs, err := acct.Messages(ctx, mb.ID)
			if err != nil {
				t.Fatal(err)
			}
			var want store.Mailbox
			for _, m := range msgs {
				want.Messages++
				want.Size += m.Size
				seen, deleted := false, false
				for _, f := range m.Flags {
					seen = seen || f == store.FlagSeen
					deleted = deleted || f == store.FlagDeleted
				}
				if !seen {
					want.Unseen++
				}
				if deleted {
					want.Deleted++
					want.DeletedSize += m.Size
				}
			}
			if mb.Messages != want.Messages || mb.Unseen != want.Unseen || mb.Size != want.Size ||
				mb.Deleted != want.Deleted || mb.DeletedSize != want.DeletedSize {
				t.Fatalf("%s: %s counters %+v, want %+v", step, mb.Name, mb, want)
			}
		}
	}
	check("deliver")
	acct.SetFlags(ctx, inbox.ID, []uint32{1, 2, 3}, store.FlagsAdd, []string{store.FlagSeen})
	acct.SetFlags(ctx, inbox.ID, []uint32{2, 4}, store.FlagsAdd, []string{store.FlagDeleted, store.FlagFlagged})
	check("flags")
	acct.SetFlags(ctx, inbox.ID, []uint32{1}, store.FlagsReplace, []string{store.FlagAnswered})
	check("replace")
	acct.Copy(ctx, inbox.ID, trash.ID, []uint32{1, 2})
	acct.Move(ctx, inbox.ID, trash.ID, []uint32{3})
	check("copy and move")
	acct.Expunge(ctx, inbox.ID, []uint32{4, 5})
	check("expunge")
	if _, err := acct.CreateMailbox(ctx, "Work", ""); err != nil {
		t.Fatal(err)
	}
	work, _ := acct.Mailbox(ctx, "Work")
	acct.Move(ctx, trash.ID, work.ID, []uint32{1})
	check("move to new")
	if err := acct.DeleteMailbox(ctx, "Work"); err != nil {
		t.Fatal(err)
	}
	check("delete mailbox")
}
