package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailbox/store"
)

// TestQueueCommands: queue list, retry and delete on a real store, and
// domain dns with the DKIM records.
func TestQueueCommands(t *testing.T) {
	data := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	st.AddDomain(ctx, "example.test")
	alice, err := st.CreateAccount(ctx, "alice@example.test", "pw")
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: alice@example.test\r\nTo: x@far.test\r\nSubject: q\r\n\r\nbody\r\n"
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"x@far.test", "y@other.test"}, Data: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	code, out, errs := runCLI(t, data, "", "queue", "list")
	if code != exitOK || !regexp.MustCompile(`(?m)^1 +\S+ +0 +now +alice@example.test +x@far.test`).MatchString(out) ||
		!strings.Contains(out, "2 entries") {
		t.Fatalf("queue list: %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ = runCLI(t, data, "", "queue", "list", "--domain", "other.test"); code != exitOK || !strings.Contains(out, "1 entries") {
		t.Fatalf("queue list --domain: %s", out)
	}
	if code, out, _ = runCLI(t, data, "", "queue", "retry"); code != exitOK || out != "2 entries due now\n" {
		t.Fatalf("queue retry: %q", out)
	}
	if code, _, _ = runCLI(t, data, "", "queue", "delete", "abc"); code != exitUsage {
		t.Fatalf("queue delete abc: %d", code)
	}
	if code, out, _ = runCLI(t, data, "", "queue", "delete", "1"); code != exitOK || out != "deleted 1 entries\n" {
		t.Fatalf("queue delete: %q", out)
	}
	code, out, errs = runCLI(t, data, "", "domain", "dns", "example.test")
	if code != exitOK {
		t.Fatalf("domain dns: %s", errs)
	}
	for _, want := range []string{"example.test.\t3600\tIN\tMX\t10 localhost.", `"v=spf1 mx ~all"`,
		`mailbox-ed25519._domainkey.example.test.	3600	IN	TXT	( "v=DKIM1; k=ed25519; p=`,
		`mailbox-rsa._domainkey.example.test.	3600	IN	TXT	( "v=DKIM1; k=rsa; p=`,
		`_dmarc.example.test.	3600	IN	TXT	"v=DMARC1; p=quarantine`, "_submissions._tcp.example.test.\t3600\tIN\tSRV\t0 1 4650 localhost.",
		"_imaps._tcp.example.test."} {
		if !strings.Contains(out, want) {
			t.Errorf("domain dns lacks %q:\n%s", want, out)
		}
	}
	// The keys are made once: a second run prints the same records.
	if _, again, _ := runCLI(t, data, "", "domain", "dns", "example.test"); again != out {
		t.Errorf("domain dns changed between runs")
	}
	if code, _, errs = runCLI(t, data, "", "domain", "dns", "nope.test"); code == exitOK || !strings.Contains(errs, "not a local domain") {
		t.Errorf("domain dns of a foreign domain: %d %s", code, errs)
	}
}

// TestQueueList100k: `mailbox queue list` over 100,000 deferred entries
// finishes in under a second (the figure; not checked under
// -race, which is several times slower).
func TestQueueList100k(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a big queue")
	}
	data := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	st.AddDomain(ctx, "example.test")
	alice, _ := st.CreateAccount(ctx, "alice@example.test", "pw")
	msg := []byte("From: alice@example.test\r\nSubject: q\r\n\r\n" + strings.Repeat("x", 4096) + "\r\n")
	rcpts := make([]string, 1000)
	for i := range 100 {
		for j := range rcpts {
			rcpts[j] = fmt.Sprintf("r%d.%d@far%d.test", i, j, j%50)
		}
		if _, err := alice.Submit(ctx, store.Submission{Recipients: rcpts, Data: msg, NoSentCopy: true}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := st.Queue(ctx, store.QueueFilter{})
	ids := make([]int64, len(all))
	for i, e := range all {
		ids[i] = e.ID
	}
	c, _ := st.Claim(ctx, time.Now(), len(ids))
	if err := st.Defer(ctx, ids, time.Now().Add(time.Hour), "451 4.3.0 try again later", nil); err != nil || len(c) != len(ids) {
		t.Fatal(err)
	}
	st.Close()
	start := time.Now()
	code, out, errs := runCLI(t, data, "", "queue", "list")
	dur := time.Since(start)
	if code != exitOK || !strings.HasSuffix(out, "100000 entries\n") {
		t.Fatalf("queue list: %d %s", code, errs)
	}
	t.Logf("queue list of 100,000 deferred entries: %v, %d bytes of output", dur, len(out))
	if !raceEnabled && dur > time.Second {
		t.Errorf("queue list took %v, want under 1s", dur)
	}
}
