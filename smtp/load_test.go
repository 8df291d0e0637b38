package smtp

import (
	"fmt"
	"io"
	"log/slog"
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

// BenchmarkSMTPIngest: messages over concurrent loopback connections into
// a durable store (each synced before its 250); the first case, 4 KiB over
// 8 connections, is the headline figure. Reports messages per second.
func BenchmarkSMTPIngest(b *testing.B) {
	for _, bc := range []struct{ conns, size int }{{8, 4 << 10}, {64, 4 << 10}, {8, 100 << 10}} {
		b.Run(fmt.Sprintf("conns=%d/size=%dKiB", bc.conns, bc.size>>10), func(b *testing.B) {
			benchmarkIngest(b, bc.conns, bc.size)
		})
	}
}

func benchmarkIngest(b *testing.B, conns, size int) {
	h := start(b, Options{MaxCommands: -1, Logger: slog.New(slog.DiscardHandler)})
	var next atomic.Int64
	b.SetBytes(int64(size))
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sendMany(h.addr, i, size, func() bool { return next.Add(1) <= int64(b.N) })
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
