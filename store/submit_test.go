package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestSubmitDeliversLocallyAndKeepsSentCopy(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a", "bob@example.test": "b"}})
	alice, _ := st.Account(ctx, "alice@example.test")
	raw := []byte(storetest.CRLF(storetest.Message("alice@example.test", "Bob B <bob@example.test>", "hi", "hello bob")))
	res, err := alice.Submit(ctx, store.Submission{Recipients: []string{"bob@example.test"}, Data: raw})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || res.Delivered[0].Account != "bob@example.test" || res.Sent.UID != 1 {
		t.Fatalf("res = %+v", res)
	}
	sent, _ := alice.MailboxByRole(ctx, store.RoleSent)
	msgs, _ := alice.Messages(ctx, sent.ID)
	if len(msgs) != 1 || !slices.Contains(msgs[0].Flags, store.FlagSeen) {
		t.Fatalf("sent = %+v", msgs)
	}
	cs, _ := alice.Contacts(ctx, "b", 5)
	if len(cs) != 1 || cs[0].Address != "bob@example.test" || cs[0].Name != "Bob B" {
		t.Fatalf("contacts = %+v", cs)
	}

	res, err = alice.Submit(ctx, store.Submission{Recipients: []string{"bob@example.test", "carol@elsewhere.test"}, Data: raw})
	if err != nil || len(res.Delivered) != 1 || !slices.Equal(res.Queued, []string{"carol@elsewhere.test"}) {
		t.Fatalf("local and remote: %+v, %v", res, err)
	}
	bob, _ := st.Account(ctx, "bob@example.test")
	inbox, _ := bob.MailboxByRole(ctx, store.RoleInbox)
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"bob@example.test", "nobody@example.test"}, Data: raw}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown local among others: %v", err)
	}
	if msgs, _ := bob.Messages(ctx, inbox.ID); len(msgs) != 2 {
		t.Fatalf("a refused submission delivered something: %d messages", len(msgs))
	}
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"nobody@example.test"}, Data: raw}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown local: %v", err)
	}
}
