package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestSessionsExpireAndSurviveReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"},
		Options: store.Options{Dir: dir, Now: clock}})
	acct, _ := st.Account(ctx, "alice@example.test")
	token, s, err := acct.CreateSession(ctx, time.Hour)
	if err != nil || s.CSRF == "" || token == "" {
		t.Fatalf("CreateSession: %v", err)
	}
	st.Close()
	st2, err := store.Open(ctx, store.Options{Dir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	a2, s2, err := st2.Session(ctx, token, time.Hour)
	if err != nil || a2.Address != "alice@example.test" || s2.CSRF != s.CSRF {
		t.Fatalf("Session after reopen: %+v %v", s2, err)
	}
	if _, _, err := st2.Session(ctx, token+"x", time.Hour); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("wrong token: %v", err)
	}
	now = now.Add(50 * time.Minute)
	if _, _, err := st2.Session(ctx, token, time.Hour); err != nil {
		t.Fatalf("within idle: %v", err)
	}
	now = now.Add(50 * time.Minute) // touched 50 minutes ago: still alive
	if _, _, err := st2.Session(ctx, token, time.Hour); err != nil {
		t.Fatalf("after touch: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if _, _, err := st2.Session(ctx, token, time.Hour); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired: %v", err)
	}
	a2, _ = st2.Account(ctx, "alice@example.test")
	t1, _, _ := a2.CreateSession(ctx, time.Hour)
	t2, _, _ := a2.CreateSession(ctx, time.Hour)
	if err := a2.DeleteOtherSessions(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st2.Session(ctx, t1, time.Hour); err != nil {
		t.Fatalf("kept session: %v", err)
	}
	if _, _, err := st2.Session(ctx, t2, time.Hour); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other session: %v", err)
	}
	if ok, err := st2.SessionAlive(ctx, t1, time.Hour); !ok || err != nil {
		t.Fatalf("SessionAlive(kept) = %v %v", ok, err)
	}
	if err := st2.DeleteSession(ctx, t1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st2.Session(ctx, t1, time.Hour); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted session: %v", err)
	}
	if ok, err := st2.SessionAlive(ctx, t1, time.Hour); ok || err != nil {
		t.Fatalf("SessionAlive(deleted) = %v %v", ok, err)
	}
}
