package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateFromEveryVersion builds a database at each older schema
// version, then opens it with the current code: every step must apply on
// top of the ones before it, and a fully migrated store must work.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	for from := 0; from < schemaVersion; from++ {
		dir := t.TempDir()
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile))
		if err != nil {
			t.Fatal(err)
		}
		for v := 0; v < from; v++ {
			if err := migrateStep(ctx, db, v); err != nil {
				t.Fatalf("build version %d: %v", v+1, err)
			}
		}
		db.Close()
		st, err := Open(ctx, Options{Dir: dir})
		if err != nil {
			t.Fatalf("open from version %d: %v", from, err)
		}
		var v int
		st.writer.QueryRow("PRAGMA user_version").Scan(&v)
		if v != schemaVersion {
			t.Fatalf("from %d: version %d, want %d", from, v, schemaVersion)
		}
		if err := st.AddDomain(ctx, "example.test"); err != nil {
			t.Fatalf("from %d: %v", from, err)
		}
		if _, err := st.CreateAccount(ctx, "a@example.test", "pw"); err != nil {
			t.Fatalf("from %d: %v", from, err)
		}
		st.Close()
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := Open(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	st.writer.Exec("PRAGMA user_version = 999")
	st.Close()
	if _, err := Open(ctx, Options{Dir: dir}); err == nil {
		t.Fatal("opened a database from a newer program")
	}
}

func TestDummyHashMatchesParameters(t *testing.T) {
	h, err := hashPassword("x")
	if err != nil {
		t.Fatal(err)
	}
	// Same algorithm, version and cost: everything before the salt.
	prefix := func(s string) string {
		return s[:len(s)-len(s[strings.LastIndex(s[:strings.LastIndex(s, "$")], "$"):])]
	}
	if prefix(h) != prefix(dummyHash) {
		t.Fatalf("dummy hash %q has other parameters than %q", prefix(dummyHash), prefix(h))
	}
	if !checkPassword(dummyHash, "not a real password") || checkPassword(dummyHash, "x") {
		t.Fatal("dummy hash does not verify as generated")
	}
}

func TestOpenRelativeDir(t *testing.T) {
	t.Chdir(t.TempDir())
	st, err := Open(context.Background(), Options{Dir: "data"})
	if err != nil {
		t.Fatalf("open relative dir: %v", err)
	}
	defer st.Close()
	if err := st.AddDomain(context.Background(), "example.test"); err != nil {
		t.Fatal(err)
	}
}
