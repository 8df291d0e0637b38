package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMTASTSPolicyCache(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.MTASTSPolicy(ctx, "far.test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no policy yet: %v", err)
	}
	fetched := time.Unix(1_800_000_000, 0)
	p := MTASTSPolicy{Domain: "Far.Test.", ID: "20260101", Mode: MTASTSEnforce,
		MX: []string{"mx1.far.test", "*.far.test"}, MaxAge: 86400 * time.Second, Fetched: fetched}
	if err := st.SaveMTASTSPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := st.MTASTSPolicy(ctx, "far.test")
	if err != nil || got.Domain != "far.test" || got.ID != p.ID || got.Mode != p.Mode || !slices.Equal(got.MX, p.MX) ||
		got.MaxAge != p.MaxAge || !got.Fetched.Equal(fetched) || !got.Expires().Equal(fetched.Add(24*time.Hour)) {
		t.Fatalf("got %+v %v", got, err)
	}
	// A new fetch replaces the policy; mode none has no mx lines.
	p = MTASTSPolicy{Domain: "far.test", ID: "2", Mode: MTASTSNone, MaxAge: time.Hour, Fetched: fetched.Add(time.Hour)}
	if err := st.SaveMTASTSPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, err := st.MTASTSPolicy(ctx, "FAR.test"); err != nil || got.ID != "2" || got.Mode != MTASTSNone || len(got.MX) != 0 {
		t.Fatalf("replaced: %+v %v", got, err)
	}
	for _, bad := range []MTASTSPolicy{
		{Domain: "far.test", Mode: "enforced"},
		{Domain: "", Mode: MTASTSNone},
		{Domain: "far.test", Mode: MTASTSEnforce, MX: []string{"a\nb"}},
	} {
		if err := st.SaveMTASTSPolicy(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
	// Expired policies are swept; live ones stay.
	live := MTASTSPolicy{Domain: "live.test", ID: "1", Mode: MTASTSTesting, MX: []string{"mx.live.test"},
		MaxAge: 365 * 24 * time.Hour, Fetched: fetched}
	if err := st.SaveMTASTSPolicy(ctx, live); err != nil {
		t.Fatal(err)
	}
	n, err := st.DeleteMTASTSPolicies(ctx, fetched.Add(3*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("swept %d, %v; want 1", n, err)
	}
	if _, err := st.MTASTSPolicy(ctx, "far.test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired policy kept: %v", err)
	}
	if _, err := st.MTASTSPolicy(ctx, "live.test"); err != nil {
		t.Fatal(err)
	}
}

// TestMTASTSMigrationKeepsQueue upgrades a database at schema 4 (the
// sending schema, before MTA-STS) with a queued message: the queue is
// untouched and policies can be saved afterwards.
func TestMTASTSMigrationKeepsQueue(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	for v := 0; v < 4; v++ {
		if err := migrateStep(ctx, db, v); err != nil {
			t.Fatalf("build version %d: %v", v+1, err)
		}
	}
	db.Close()
	st, err := Open(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	acct, err := st.CreateAccount(ctx, "a@example.test", "pw")
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte("From: a@example.test\r\nTo: x@far.test\r\nSubject: q\r\n\r\nbody\r\n")
	if _, err := acct.Submit(ctx, Submission{Recipients: []string{"x@far.test"}, Data: raw, NoSentCopy: true}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// Back to version 4 with the queue row in place, then forward again.
	db, err = sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TABLE mta_sts", "PRAGMA user_version = 4"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	st, err = Open(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var v int
	st.writer.QueryRow("PRAGMA user_version").Scan(&v)
	if v != schemaVersion || schemaVersion < 5 {
		t.Fatalf("version %d, want %d (>= 5)", v, schemaVersion)
	}
	q, err := st.Queue(ctx, QueueFilter{})
	if err != nil || len(q) != 1 || q[0].Recipient != "x@far.test" || !strings.EqualFold(q[0].Domain, "far.test") {
		t.Fatalf("queue after migration: %+v %v", q, err)
	}
	p := MTASTSPolicy{Domain: "far.test", ID: "1", Mode: MTASTSEnforce, MX: []string{"mx.far.test"}, MaxAge: time.Hour, Fetched: time.Now()}
	if err := st.SaveMTASTSPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, err := st.MTASTSPolicy(ctx, "far.test"); err != nil || got.Mode != MTASTSEnforce {
		t.Fatalf("%+v %v", got, err)
	}
}
