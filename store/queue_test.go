package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestQueueLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"},
		Options: store.Options{Dir: dir, InlineMaxBytes: 100}})
	alice, _ := st.Account(ctx, "alice@example.test")
	raw := []byte(storetest.CRLF(storetest.Message("alice@example.test", "x@far.test", "hi", strings.Repeat("long body ", 50))))
	res, err := alice.Submit(ctx, store.Submission{Recipients: []string{"x@far.test", "y@far.test", "z@other.test"}, Data: raw, NoSentCopy: true})
	if err != nil || len(res.Queued) != 3 || res.Sent.UID != 0 {
		t.Fatalf("submit: %+v %v", res, err)
	}
	select {
	case <-st.QueueSignal():
	default:
		t.Fatal("no queue signal after a submission with remote recipients")
	}
	all, err := st.Queue(ctx, store.QueueFilter{})
	if err != nil || len(all) != 3 || all[0].Sender != "alice@example.test" || all[0].Account != "alice@example.test" || all[0].Domain != "far.test" {
		t.Fatalf("queue: %+v %v", all, err)
	}
	claimed, err := st.Claim(ctx, time.Now(), 10)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claim: %d %v", len(claimed), err)
	}
	if again, _ := st.Claim(ctx, time.Now(), 10); len(again) != 0 {
		t.Fatalf("claimed entries claimed twice: %d", len(again))
	}
	rc, err := st.OpenQueued(ctx, claimed[0].MessageID)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != string(raw) {
		t.Fatalf("queued bytes differ")
	}
	// x delivered, y deferred, z bounced: the bounce lands in alice's INBOX.
	if err := st.Delivered(ctx, []int64{claimed[0].ID}); err != nil {
		t.Fatal(err)
	}
	next := time.Now().Add(time.Hour)
	if err := st.Defer(ctx, []int64{claimed[1].ID}, next, "451 4.3.0 later", nil); err != nil {
		t.Fatal(err)
	}
	bounce := storetest.CRLF(storetest.Message("MAILER-DAEMON@example.test", "alice@example.test", "Undelivered", "sorry"))
	if err := st.Fail(ctx, []int64{claimed[2].ID}, &store.Notice{To: "alice@example.test", Data: []byte(bounce)}); err != nil {
		t.Fatal(err)
	}
	inbox, _ := alice.MailboxByRole(ctx, store.RoleInbox)
	if msgs, _ := alice.Messages(ctx, inbox.ID); len(msgs) != 1 {
		t.Fatalf("bounce not delivered: %d", len(msgs))
	}
	left, _ := st.Queue(ctx, store.QueueFilter{})
	if len(left) != 1 || left[0].Recipient != "y@far.test" || left[0].Attempts != 1 || left[0].Sending || left[0].LastError != "451 4.3.0 later" {
		t.Fatalf("left: %+v", left)
	}
	if c, _ := st.Claim(ctx, time.Now(), 10); len(c) != 0 {
		t.Fatal("deferred entry claimed before it is due")
	}
	// A claimed entry survives a "crash" (close without finishing) and is
	// due again after Recover.
	if c, _ := st.Claim(ctx, next.Add(time.Second), 10); len(c) != 1 { // whole seconds, rounded up
		t.Fatal("deferred entry not due at its time")
	}
	st.Close()
	st2, err := store.Open(ctx, store.Options{Dir: dir, InlineMaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if n, err := st2.Recover(ctx); n != 1 || err != nil {
		t.Fatalf("recover: %d %v", n, err)
	}
	c, _ := st2.Claim(ctx, time.Now(), 10)
	if len(c) != 1 {
		t.Fatalf("recovered entry not due: %d", len(c))
	}
	if err := st2.Delivered(ctx, []int64{c[0].ID}); err != nil {
		t.Fatal(err)
	}
	if n, _, _, _ := st2.QueueStats(ctx); n != 0 {
		t.Fatalf("queue not empty: %d", n)
	}
}

func TestBounceToRemoteSenderIsQueuedWithNullSender(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"}})
	alice, _ := st.Account(ctx, "alice@example.test")
	raw := []byte(storetest.CRLF(storetest.Message("alice@example.test", "x@far.test", "hi", "body")))
	if _, err := alice.Submit(ctx, store.Submission{From: "alice@example.test", Recipients: []string{"x@far.test"}, Data: raw}); err != nil {
		t.Fatal(err)
	}
	c, _ := st.Claim(ctx, time.Now(), 10)
	if err := st.Fail(ctx, []int64{c[0].ID}, &store.Notice{To: "someone@far.test", Data: raw}); err != nil {
		t.Fatal(err)
	}
	q, _ := st.Queue(ctx, store.QueueFilter{})
	if len(q) != 1 || q[0].Sender != "" || q[0].Recipient != "someone@far.test" || q[0].Account != "" {
		t.Fatalf("queue: %+v", q)
	}
	if n, err := st.DeleteQueued(ctx, []int64{q[0].ID}); n != 1 || err != nil {
		t.Fatalf("delete: %d %v", n, err)
	}
}

func TestSendLimits(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{"alice@example.test": "a", "bob@example.test": "b"},
		Options: store.Options{SendLimits: store.SendLimits{MessagesPerHour: 2, RecipientsPerMessage: 2}}})
	alice, _ := st.Account(ctx, "alice@example.test")
	raw := []byte(storetest.CRLF(storetest.Message("alice@example.test", "bob@example.test", "hi", "body")))
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"a@x.test", "b@x.test", "c@x.test"}, Data: raw}); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("3 recipients: %v", err)
	}
	for i := range 2 {
		if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"bob@example.test"}, Data: raw}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := alice.CheckSendLimit(ctx); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("check after 2: %v", err)
	}
	if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{"bob@example.test"}, Data: raw}); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("third message: %v", err)
	}
	bob, _ := st.Account(ctx, "bob@example.test")
	if err := bob.CheckSendLimit(ctx); err != nil {
		t.Fatalf("bob is limited by alice's mail: %v", err)
	}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{{"alice@example.test", true}, {"ALICE@example.test", true}, {"alice+tag@example.test", true}, {"bob@example.test", false}, {"alice@far.test", false}, {"bad", false}} {
		if ok, err := alice.MaySendAs(ctx, tc.addr); ok != tc.ok || err != nil {
			t.Errorf("MaySendAs(%q) = %v, %v", tc.addr, ok, err)
		}
	}
}

// BenchmarkQueueList100k lists a queue of 100,000 deferred entries, what
// `mailbox queue list` reads.
func BenchmarkQueueList100k(b *testing.B) {
	ctx := context.Background()
	st := storetest.New(b, storetest.Fixture{Users: map[string]string{"alice@example.test": "a"}})
	alice, _ := st.Account(ctx, "alice@example.test")
	raw := []byte(storetest.CRLF(storetest.Message("alice@example.test", "x@far.test", "hi", strings.Repeat("x", 4096))))
	rcpts := make([]string, 1000)
	for i := range 100 {
		for j := range rcpts {
			rcpts[j] = fmt.Sprintf("r%d.%d@far%d.test", i, j, j%50)
		}
		if _, err := alice.Submit(ctx, store.Submission{Recipients: rcpts, Data: raw, NoSentCopy: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		q, err := st.Queue(ctx, store.QueueFilter{})
		if err != nil || len(q) != 100_000 {
			b.Fatal(len(q), err)
		}
	}
}
