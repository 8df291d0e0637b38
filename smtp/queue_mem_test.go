package smtp

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"mailbox/store"
)

// TestRunnerMemory100k: a queue of 100,000 entries (100 messages of 4 KiB
// to 1,000 recipients in 50 domains each), all due, and every MX refusing
// connections: the runner works through them holding at most
// MaxConns*maxInflightPerConn claimed entries, so the heap stays small
// (the issue asks for under 100 MiB).
func TestRunnerMemory100k(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a big queue; measured without -race")
	}
	d := startDNS(t)
	for i := range 50 {
		d.add(t, fmt.Sprintf("far%d.test. 60 IN MX 10 mx.far.test.", i))
	}
	d.add(t, "mx.far.test. 60 IN A 127.0.0.1")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // connections are refused

	a := newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	ctx := context.Background()
	alice, _ := a.st.Account(ctx, aliceA)
	msg := []byte("From: alice@a.test\r\nSubject: q\r\n\r\n" + strings.Repeat("x", 4096) + "\r\n")
	rcpts := make([]string, 1000)
	for i := range 100 {
		for j := range rcpts {
			rcpts[j] = fmt.Sprintf("r%d.%d@far%d.test", i, j, j%50)
		}
		if _, err := alice.Submit(ctx, store.Submission{Recipients: rcpts, Data: msg, NoSentCopy: true}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	opts := fastRetry(d, port)
	opts.RetryMin, opts.RetryMax = time.Hour, time.Hour
	opts.NoDKIM = true
	a.startRunner(opts)
	var peak uint64
	deadline := time.Now().Add(60 * time.Second)
	for {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
		due, err := a.st.NextDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if due.After(time.Now().Add(time.Minute)) {
			break // every entry has been tried and deferred
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all entries tried after a minute (next due %v)", due)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("heap in use: %.1f MiB before the runner, peak %.1f MiB while it tried 100,000 entries",
		float64(base)/(1<<20), float64(peak)/(1<<20))
	if peak > 100<<20 {
		t.Errorf("peak heap %.1f MiB, want under 100 MiB", float64(peak)/(1<<20))
	}
}
