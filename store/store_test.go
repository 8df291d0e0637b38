package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

func readAll(t *testing.T, acct *store.Account, id int64) []byte {
	t.Helper()
	rc, err := acct.Open(context.Background(), id)
	if err != nil {
		t.Fatalf("open message %d: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeliverSharesBytesAndReturnsThemExactly(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{
		"alice@example.test": "a", "bob@example.test": "b",
	}})
	raw := []byte(storetest.Message("carol@elsewhere.test", "alice@example.test", "hello", "body line\n.dot line"))
	got, err := st.Deliver(ctx, store.Delivery{Recipients: []string{"alice@example.test", "BOB@example.test", "alice@example.test"}, Data: raw})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("delivered to %d recipients, want 2 (duplicates once)", len(got))
	}
	for _, addr := range []string{"alice@example.test", "bob@example.test"} {
		acct, err := st.Account(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		inbox, err := acct.MailboxByRole(ctx, store.RoleInbox)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := acct.Messages(ctx, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 1 || msgs[0].UID != 1 || msgs[0].Size != int64(len(raw)) {
			t.Fatalf("%s inbox = %+v", addr, msgs)
		}
		if b := readAll(t, acct, msgs[0].ID); !bytes.Equal(b, raw) {
			t.Fatalf("%s bytes differ:\n%q\n%q", addr, b, raw)
		}
		info, _ := acct.Info(ctx)
		if info.UsedBytes != int64(len(raw)) || info.Messages != 1 {
			t.Fatalf("%s info = %+v", addr, info)
		}
	}
}

func TestLargeBodyIsAFileAndIsRemovedWithLastReference(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := storetest.New(t, storetest.Fixture{
		Users:   map[string]string{"alice@example.test": "a", "bob@example.test": "b"},
		Options: store.Options{Dir: dir, InlineMaxBytes: 1024},
	})
	raw := []byte(storetest.Message("c@x.test", "alice@example.test", "big", strings.Repeat("0123456789abcdef\n", 200)))
	if _, err := st.Deliver(ctx, store.Delivery{Recipients: []string{"alice@example.test", "bob@example.test"}, Data: raw}); err != nil {
		t.Fatal(err)
	}
	files := func() int {
		n := 0
		filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(p)) != "tmp" {
				n++
			}
			return nil
		})
		return n
	}
	if n := files(); n != 1 {
		t.Fatalf("%d blob files, want 1 shared", n)
	}
	for i, addr := range []string{"alice@example.test", "bob@example.test"} {
		acct, _ := st.Account(ctx, addr)
		inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
		msgs, _ := acct.Messages(ctx, inbox.ID)
		if b := readAll(t, acct, msgs[0].ID); !bytes.Equal(b, raw) {
			t.Fatal("large body differs")
		}
		rc, err := acct.OpenRange(ctx, msgs[0].ID, 6, 10)
		if err != nil {
			t.Fatal(err)
		}
		part, _ := io.ReadAll(rc)
		rc.Close()
		if string(part) != string(raw[6:16]) {
			t.Fatalf("range = %q, want %q", part, raw[6:16])
		}
		if _, err := acct.Expunge(ctx, inbox.ID, []uint32{msgs[0].UID}); err != nil {
			t.Fatal(err)
		}
		if want := 1 - i; files() != want {
			t.Fatalf("after expunge %d: %d files, want %d", i, files(), want)
		}
	}
}

func TestLoginDoesNotRevealAccounts(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "secret pass"}})
	if _, err := st.Login(ctx, "Alice@Example.test", "secret pass"); err != nil {
		t.Fatalf("good login: %v", err)
	}
	for _, c := range [][2]string{{"alice@example.test", "wrong"}, {"nobody@example.test", "secret pass"}, {"garbage", "x"}, {"", ""}} {
		if _, err := st.Login(ctx, c[0], c[1]); !errors.Is(err, store.ErrAuthFailed) {
			t.Errorf("login %q: err = %v, want ErrAuthFailed", c[0], err)
		}
	}
}

func TestResolveAliasesCatchAllAndTags(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a", "bob@example.test": "b"}})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddAlias(ctx, "team@example.test", "alice@example.test"))
	must(st.AddAlias(ctx, "team@example.test", "bob@example.test"))
	cases := []struct {
		addr    string
		want    string
		wantErr error
	}{
		{"alice@example.test", "alice@example.test", nil},
		{"ALICE@EXAMPLE.TEST", "alice@example.test", nil},
		{"alice+news@example.test", "alice@example.test", nil},
		{"team@example.test", "alice@example.test,bob@example.test", nil},
		{"nobody@example.test", "", store.ErrNotFound},
		{"alice@elsewhere.test", "", store.ErrNotLocal},
	}
	for _, c := range cases {
		got, err := st.Resolve(ctx, c.addr)
		if !errors.Is(err, c.wantErr) || strings.Join(got, ",") != c.want {
			t.Errorf("Resolve(%q) = %v, %v; want %q, %v", c.addr, got, err, c.want, c.wantErr)
		}
	}
	must(st.AddAlias(ctx, "@example.test", "bob@example.test"))
	if got, err := st.Resolve(ctx, "nobody@example.test"); err != nil || strings.Join(got, ",") != "bob@example.test" {
		t.Errorf("catch-all: %v %v", got, err)
	}
	if err := st.AddAlias(ctx, "alice@example.test", "bob@example.test"); !errors.Is(err, store.ErrExists) {
		t.Errorf("alias over account: %v", err)
	}
}

func TestQuotaRefusesWholeDelivery(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a", "bob@example.test": "b"}})
	if err := st.SetQuota(ctx, "bob@example.test", 100); err != nil {
		t.Fatal(err)
	}
	raw := []byte(storetest.Message("c@x.test", "alice@example.test", "s", strings.Repeat("x", 200)))
	if err := st.CheckQuota(ctx, "bob@example.test", int64(len(raw))); !errors.Is(err, store.ErrOverQuota) {
		t.Fatalf("CheckQuota = %v", err)
	}
	_, err := st.Deliver(ctx, store.Delivery{Recipients: []string{"alice@example.test", "bob@example.test"}, Data: raw})
	if !errors.Is(err, store.ErrOverQuota) {
		t.Fatalf("Deliver = %v, want ErrOverQuota", err)
	}
	ai, _ := st.AccountInfo(ctx, "alice@example.test")
	if ai.Messages != 0 {
		t.Fatalf("alice got %d messages from a refused delivery", ai.Messages)
	}
}

func TestConcurrentDeliveriesGetDistinctUIDsAndEvents(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"}})
	acct, _ := st.Account(ctx, "alice@example.test")
	sub := st.Hub().Subscribe(acct.ID)
	defer sub.Close()
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := storetest.Message("c@x.test", "alice@example.test", fmt.Sprint("m", i), fmt.Sprint("body ", i))
			if _, err := st.Deliver(ctx, store.Delivery{Recipients: []string{"alice@example.test"}, Data: []byte(raw)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
	msgs, _ := acct.Messages(ctx, inbox.ID)
	if len(msgs) != n || inbox.UIDNext != n+1 || inbox.Messages != n {
		t.Fatalf("%d messages, uidnext %d, count %d", len(msgs), inbox.UIDNext, inbox.Messages)
	}
	for i, m := range msgs {
		if m.UID != uint32(i+1) {
			t.Fatalf("uid %d at %d", m.UID, i)
		}
	}
	var evs []store.Event
	for len(evs) < n {
		<-sub.Ready()
		evs = append(evs, sub.Next()...)
	}
	for i, ev := range evs {
		if ev.Kind != store.MessageAdded || ev.UID != uint32(i+1) {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}
}

func TestFlagsMoveAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := storetest.New(t, storetest.Fixture{
		Users:    map[string]string{"alice@example.test": "a"},
		Messages: map[string][]string{"alice@example.test": {storetest.Message("c@x.test", "alice@example.test", "one", "1"), storetest.Message("c@x.test", "alice@example.test", "two", "2")}},
		Options:  store.Options{Dir: dir},
	})
	acct, _ := st.Account(ctx, "alice@example.test")
	inbox, _ := acct.MailboxByRole(ctx, store.RoleInbox)
	trash, _ := acct.MailboxByRole(ctx, store.RoleTrash)
	ch, err := acct.SetFlags(ctx, inbox.ID, []uint32{1, 2, 99}, store.FlagsAdd, []string{`\seen`, "$Work"})
	if err != nil || len(ch) != 2 {
		t.Fatalf("SetFlags = %v, %v", ch, err)
	}
	res, err := acct.Move(ctx, inbox.ID, trash.ID, []uint32{2})
	if err != nil || len(res.Dest) != 1 || res.Dest[0] != 1 {
		t.Fatalf("Move = %+v, %v", res, err)
	}
	st.Close()
	st2, err := store.Open(ctx, store.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	acct, _ = st2.Account(ctx, "alice@example.test")
	msgs, _ := acct.Messages(ctx, inbox.ID)
	tm, _ := acct.Messages(ctx, trash.ID)
	if len(msgs) != 1 || len(tm) != 1 || strings.Join(tm[0].Flags, " ") != `\Seen $Work` {
		t.Fatalf("after reopen: inbox %+v trash %+v", msgs, tm)
	}
	mb, _ := acct.MailboxByID(ctx, inbox.ID)
	if mb.UIDValidity != inbox.UIDValidity || mb.UIDNext != 3 {
		t.Fatalf("inbox after reopen = %+v", mb)
	}
}

func TestNormalizeCRLF(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"clean", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"bare lf", "a\nb\n", "a\r\nb\r\n"},
		{"bare cr", "a\rb\r", "a\r\nb\r\n"},
		{"mixed", "a\r\r\nb\n\rc", "a\r\n\r\nb\r\n\r\nc"},
		{"empty", "", ""},
	}
	for _, c := range cases {
		if got := string(store.NormalizeCRLF([]byte(c.in))); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
