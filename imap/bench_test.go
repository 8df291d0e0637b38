package imap

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

// benchWords gives messages distinct bodies so SEARCH BODY has work.
var benchWords = []string{"meeting", "invoice", "holiday", "report", "lunch", "budget", "travel", "review"}

// fillInbox delivers n messages of about 4 KiB to alice, concurrently so
// the store's group commit batches them.
func fillInbox(tb testing.TB, st *store.Store, n int) {
	tb.Helper()
	filler := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n", 66)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				body := fmt.Sprintf("Hello,\nthe %s is on day %d.\n%s", benchWords[i%len(benchWords)], i, filler)
				msg := storetest.Message(fmt.Sprintf("sender%d@example.org", i%97), alice, fmt.Sprintf("Message number %d", i), body)
				if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{alice}, Data: []byte(storetest.CRLF(msg))}); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// command sends one tagged command and reads up to its tagged reply,
// returning the number of lines (literals count as bytes read through).
func (c *rawConn) command(tb testing.TB, tag, cmd string) int {
	tb.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	c.send(tb, tag+" "+cmd)
	lines := 0
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			tb.Fatalf("%s: %v", cmd, err)
		}
		lines++
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				tb.Fatalf("%s: %s", cmd, line)
			}
			return lines
		}
		// Skip literal contents.
		if i := strings.LastIndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}\r\n") {
			var n int
			fmt.Sscanf(line[i+1:], "%d", &n)
			if _, err := c.r.Discard(n); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and reports CPU ms per op besides wall time (the
// process holds client and server), which is steadier on a busy machine.
func loop(b *testing.B, f func()) {
	start := cpuTime()
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// BenchmarkMailbox10k measures the workloads of the Dovecot comparison on
// a 10,000-message INBOX of 4 KiB messages, over a loopback socket.
func BenchmarkMailbox10k(b *testing.B) {
	const n = 10_000
	ts := newTestServer(b, nil)
	fillInbox(b, ts.st, n)
	c := dialRaw(b, ts.addr)
	c.command(b, "l", `LOGIN alice@example.test "alice secret"`)

	b.Run("SELECT", func(b *testing.B) {
		loop(b, func() {
			c.command(b, "s", "SELECT INBOX")
			c.command(b, "u", "UNSELECT")
		})
	})
	c.command(b, "s", "SELECT INBOX")
	b.Run("UID_FETCH_FLAGS", func(b *testing.B) {
		loop(b, func() {
			if got := c.command(b, "f", "UID FETCH 1:* (UID FLAGS)"); got != n+1 {
				b.Fatalf("%d lines", got)
			}
		})
	})
	b.Run("FETCH_ENVELOPE", func(b *testing.B) {
		loop(b, func() { c.command(b, "f", "FETCH 1:* (ENVELOPE)") })
	})
	b.Run("UID_SEARCH_BODY", func(b *testing.B) {
		loop(b, func() { c.command(b, "q", `UID SEARCH BODY "holiday"`) })
	})
	b.Run("UID_STORE", func(b *testing.B) {
		i := 0
		loop(b, func() {
			op := "+"
			if i%2 == 1 {
				op = "-"
			}
			i++
			c.command(b, "t", "UID STORE 1:* "+op+"FLAGS.SILENT (\\Flagged)")
		})
	})
	b.Run("FETCH_BODY_PEEK_ALL", func(b *testing.B) {
		loop(b, func() { c.command(b, "b", "FETCH 1:* (BODY.PEEK[])") })
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkNoop is one command round trip.
func BenchmarkNoop(b *testing.B) {
	ts := newTestServer(b, nil)
	c := dialRaw(b, ts.addr)
	c.command(b, "l", `LOGIN alice@example.test "alice secret"`)
	loop(b, func() { c.command(b, "n", "NOOP") })
}
