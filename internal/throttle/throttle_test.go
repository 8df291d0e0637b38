package throttle

import (
	"fmt"
	"testing"
	"time"
)

func TestDelayGrowsAfterFreeFailures(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Options{Free: 3, BaseDelay: time.Second, MaxDelay: 8 * time.Second, Now: func() time.Time { return now }})
	want := []time.Duration{0, 0, 0, 1, 2, 4, 8, 8}
	for i, w := range want {
		if got := l.Delay("192.0.2.1:4000", "alice@example.test"); got != w*time.Second {
			t.Fatalf("after %d failures delay = %v, want %v", i, got, w*time.Second)
		}
		l.Failure("192.0.2.1:4000", "alice@example.test")
	}
	// Another address guessing the same account is slowed too.
	if got := l.Delay("198.51.100.7", "Alice@example.test"); got != 8*time.Second {
		t.Fatalf("same account from other address: %v", got)
	}
	// The same address guessing another account is slowed too.
	if got := l.Delay("192.0.2.1:5000", "bob@example.test"); got != 8*time.Second {
		t.Fatalf("same address, other account: %v", got)
	}
	// Success forgets the account, not the address.
	l.Success("192.0.2.1:4000", "alice@example.test")
	if got := l.Delay("198.51.100.7", "alice@example.test"); got != 0 {
		t.Fatalf("after success, account delay %v", got)
	}
	now = now.Add(DefaultWindow + time.Second)
	if got := l.Delay("192.0.2.1", "x"); got != 0 {
		t.Fatalf("after window: %v", got)
	}
}

func TestIPv6CountsPerPrefixAndMemoryIsBounded(t *testing.T) {
	l := New(Options{Free: 1, MaxKeys: 100})
	l.Failure("[2001:db8::1]:25", "")
	l.Failure("[2001:db8::2]:25", "")
	if l.Delay("2001:db8::ffff", "") == 0 {
		t.Fatal("IPv6 /64 not shared")
	}
	for i := range 1000 {
		l.Failure(fmt.Sprintf("10.0.%d.%d:1", i/256, i%256), "")
	}
	if n := len(l.keys); n > 100 {
		t.Fatalf("%d keys kept, limit 100", n)
	}
}
