package smtp

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// TestConcurrentDeliveries: 64 connections delivering at once all land,
// with zero errors (group commit shares the syncs).
func TestConcurrentDeliveries(t *testing.T) {
	const conns, perConn = 64, 5
	h := start(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			left := perConn
			errs <- sendMany(h.addr, i, 4<<10, func() bool { left--; return left >= 0 })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := len(h.inbox(bob)); n != conns*perConn {
		t.Fatalf("bob has %d messages, want %d", n, conns*perConn)
	}
}

// sendMany sends messages of about size bytes to bob over one
// connection while more says so.
func sendMany(addr string, id, size int, more func() bool) error {
	c, err := gosmtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("load.test"); err != nil {
		return err
	}
	body := strings.Repeat(strings.Repeat("x", 62)+"\r\n", size/64)
	for j := 0; more(); j++ {
		if err := c.Mail("load@remote.test", nil); err != nil {
			return fmt.Errorf("conn %d msg %d: MAIL: %w", id, j, err)
		}
		if err := c.Rcpt(bob, nil); err != nil {
			return fmt.Errorf("conn %d msg %d: RCPT: %w", id, j, err)
		}
		w, err := c.Data()
		if err != nil {
			return fmt.Errorf("conn %d msg %d: DATA: %w", id, j, err)
		}
		fmt.Fprintf(w, "Subject: load %d.%d\r\nMessage-ID: <%d.%d.%d@load.test>\r\n\r\n", id, j, id, j, time.Now().UnixNano())
		io.WriteString(w, body)
		if err := w.Close(); err != nil {
			return fmt.Errorf("conn %d msg %d: end of DATA: %w", id, j, err)
		}
	}
	return c.Quit()
}

// BenchmarkSMTPIngest: 4 KiB messages over 8 loopback connections into a
// durable store (synced before each 250). Reports messages per second.
func BenchmarkSMTPIngest(b *testing.B) {
	const conns = 8
	h := start(b, Options{MaxCommands: -1})
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sendMany(h.addr, i, 4<<10, func() bool { return next.Add(1) <= int64(b.N) })
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
