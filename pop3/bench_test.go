package pop3

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"

	"mailbox/store"
	"mailbox/store/storetest"
)

// BenchmarkRETR downloads from a 10,000-message INBOX of 4 KiB messages,
// one RETR at a time over loopback (as a POP3 client does), and reports
// messages per second.
func BenchmarkRETR(b *testing.B) {
	const (
		messages = 10_000
		size     = 4 << 10
		workers  = 32
	)
	st := storetest.New(b, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	// Concurrent deliveries share group commits, so setup takes seconds.
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				head := fmt.Sprintf("From: bob@example.test\r\nTo: %s\r\nSubject: message %d\r\nMessage-ID: <%d@bench.example.test>\r\n\r\n", alice, i, i)
				line := strings.Repeat("x", 76) + "\r\n"
				body := strings.Repeat(line, (size-len(head))/len(line))
				msg := head + body
				msg += strings.Repeat("y", size-len(msg)-2) + "\r\n"
				if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{alice}, Data: []byte(msg)}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range messages {
		next <- i
	}
	close(next)
	wg.Wait()

	ts := startServer(b, Options{Store: st, Logger: nil}, "")
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64<<10)
	w := bufio.NewWriter(conn)
	reply := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	cmd := func(s string) string {
		w.WriteString(s + "\r\n")
		w.Flush()
		return reply()
	}
	reply()
	cmd("USER " + alice)
	if l := cmd("PASS " + alicePwd); !strings.HasPrefix(l, "+OK 10000 messages") {
		b.Fatalf("login: %q", l)
	}
	b.SetBytes(size)
	b.ResetTimer()
	n := 0
	for b.Loop() {
		if l := cmd(fmt.Sprintf("RETR %d", n%messages+1)); !strings.HasPrefix(l, "+OK 4096 octets") {
			b.Fatalf("RETR: %q", l)
		}
		if err := skipMultiline(r); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	cmd("QUIT")
}

// skipMultiline reads to the end of a multi-line reply.
func skipMultiline(r *bufio.Reader) error {
	bol := true
	for {
		l, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if bol && len(l) == 3 && string(l) == ".\r\n" {
			return nil
		}
		bol = err == nil
	}
}

// BenchmarkIdleConnections opens 1,000 connections that sit after the
// greeting and reports the memory they add per connection (heap and
// stacks; the client side, in the same process, is included). Each
// iteration opens 1,000 connections: run it with -benchtime 1x.
func BenchmarkIdleConnections(b *testing.B) {
	const conns = 1000
	st := storetest.New(b, storetest.Fixture{Users: map[string]string{alice: alicePwd}})
	ts := startServer(b, Options{Store: st, MaxConnsPerIP: -1}, "")
	inUse := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for b.Loop() {
		before := inUse()
		var open []net.Conn
		for range conns {
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
		}
		if err := waitSessions(ts.srv, conns); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(inUse()-before)/conns/1024, "KiB/conn")
		for _, c := range open {
			c.Close()
		}
		if err := waitSessions(ts.srv, 0); err != nil {
			b.Fatal(err)
		}
	}
}
