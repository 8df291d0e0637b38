package imap

import (
	"context"
	"testing"
	"time"
)

// APPEND literals share a memory budget: an APPEND waits for room, and
// gives up when its connection ends.
func TestByteSemaphore(t *testing.T) {
	s := newByteSemaphore(100)
	ctx := context.Background()
	if err := s.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- s.acquire(ctx, 60) }()
	select {
	case err := <-got:
		t.Fatalf("second acquire did not wait: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.release(60)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := s.acquire(cctx, 60); err == nil {
		t.Fatal("acquire over budget succeeded after its context ended")
	}
	s.release(60)
	if err := s.acquire(ctx, 100); err != nil {
		t.Fatal(err)
	}
}
