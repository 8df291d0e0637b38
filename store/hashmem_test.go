package store

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestHashMemoryReleasesAfterQuiet checks that hashing memory is handed
// back once per quiet period, never while hashes keep coming or run.
func TestHashMemoryReleasesAfterQuiet(t *testing.T) {
	const quiet = 50 * time.Millisecond
	h := newHashMemory(quiet)
	var n atomic.Int32
	h.release = func() { n.Add(1) }

	// A burst: one hash every 10 ms for 200 ms. No release meanwhile.
	for range 20 {
		h.begin()
		h.end()
		time.Sleep(quiet / 5)
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("%d releases during the burst", got)
	}
	time.Sleep(3 * quiet)
	if got := n.Load(); got != 1 {
		t.Fatalf("%d releases after the burst, want 1", got)
	}

	// A hash in progress holds the release back.
	h.begin()
	h.begin()
	h.end()
	time.Sleep(3 * quiet)
	if got := n.Load(); got != 1 {
		t.Fatalf("released while a hash ran (%d)", got)
	}
	h.end()
	time.Sleep(3 * quiet)
	if got := n.Load(); got != 2 {
		t.Fatalf("%d releases, want 2", got)
	}

	// After stop nothing more happens; a negative period disables.
	h.begin()
	h.end()
	h.stop()
	time.Sleep(3 * quiet)
	if got := n.Load(); got != 2 {
		t.Fatalf("released after stop (%d)", got)
	}
	if newHashMemory(-1) != nil {
		t.Fatal("negative period: want no releaser")
	}
	var off *hashMemory
	off.begin()
	off.end()
	off.stop()
}
