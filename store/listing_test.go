package store_test

import (
	"context"
	"fmt"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestListNewestFirstWithMeta(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"}})
	for i := 1; i <= 7; i++ {
		storetest.Deliver(t, st, "alice@example.test", storetest.Message(
			fmt.Sprintf("\"Sender %d\" <s%d@elsewhere.test>", i, i), "alice@example.test", fmt.Sprintf("subject %d", i), "body"))
	}
	acct, _ := st.Account(ctx, "alice@example.test")
	inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
	page, err := acct.List(ctx, inbox.ID, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 3 || page[0].UID != 5 || page[2].UID != 3 {
		t.Fatalf("page = %+v", page)
	}
	if page[0].Subject != "subject 5" || len(page[0].From) != 1 || page[0].From[0].Name != "Sender 5" || page[0].Date.IsZero() {
		t.Fatalf("item = %+v", page[0])
	}
	got, err := acct.ListUIDs(ctx, inbox.ID, []uint32{1, 7, 99})
	if err != nil || len(got) != 2 || got[0].UID != 7 || got[1].UID != 1 {
		t.Fatalf("ListUIDs = %+v, %v", got, err)
	}
	bob, err := st.CreateAccount(ctx, "bob@example.test", "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.List(ctx, inbox.ID, 0, 10); err == nil {
		t.Fatal("bob listed alice's inbox")
	}
	cs, err := acct.Contacts(ctx, "s3", 10)
	if err != nil || len(cs) != 1 || cs[0].Address != "s3@elsewhere.test" || cs[0].Name != "Sender 3" {
		t.Fatalf("Contacts = %+v, %v", cs, err)
	}
}
