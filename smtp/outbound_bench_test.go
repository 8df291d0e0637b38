package smtp

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailbox/store"
)

// BenchmarkOutbound1000: instance A delivers 1,000 queued messages of
// 4 KiB to instance B on loopback over 8 connections: A claims, reads,
// DKIM-signs (Ed25519 and RSA) and sends; B receives over STARTTLS and
// commits each message durably (synchronous=FULL, group commit) before its
// 250; A records each delivery durably. One iteration is the whole batch.
// cpu-ms/msg is the CPU time of the process (both instances) per message
// while sending, a figure that a loaded machine disturbs less than the
// rate.
//
//	go test ./smtp -run '^$' -bench Outbound1000 -benchtime 3x
func BenchmarkOutbound1000(b *testing.B) {
	for _, dkim := range []bool{true, false} {
		b.Run(fmt.Sprintf("dkim=%v", dkim), func(b *testing.B) { benchOutbound(b, 1000, 8, dkim) })
	}
}

func benchOutbound(b *testing.B, n, conns int, sign bool) {
	d := startDNS(b)
	serverTLS, _ := tlsPair(b)
	bi := newInstance(b, "b.test", []string{bobB}, Options{TLS: serverTLS, MaxCommands: -1}, store.Options{})
	a := newInstance(b, "a.test", []string{aliceA}, Options{}, store.Options{})
	publishDomain(b, d, a, "a.test", "none")
	publishDomain(b, d, bi, "b.test", "none")
	ctx := context.Background()
	alice, _ := a.st.Account(ctx, aliceA)
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 64) // 4 KiB
	total := 0
	var cpu time.Duration // process CPU time (both instances) while sending
	for b.Loop() {
		b.StopTimer()
		for i := range n {
			msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: bench %d\r\nMessage-ID: <%d.%d@a.test>\r\n\r\n%s", aliceA, bobB, i, total, i, body)
			if _, err := alice.Submit(ctx, store.Submission{Recipients: []string{bobB}, Data: []byte(msg), NoSentCopy: true}); err != nil {
				b.Fatal(err)
			}
		}
		total += n
		cpu0 := processCPU(b)
		b.StartTimer()
		r := NewRunner(RunnerOptions{Store: a.st, Hostname: "mx.a.test", Resolver: NewResolver(d.addr, 2*time.Second),
			MXPort: bi.mx.port(), MaxConnsPerDomain: conns, NoDKIM: !sign, PollInterval: 10 * time.Millisecond})
		if err := r.Start(ctx); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			q, _, _, err := a.st.QueueStats(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if q == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d entries left after 2 minutes", q)
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.StopTimer()
		cpu += processCPU(b) - cpu0
		r.Shutdown(ctx)
		b.StartTimer()
	}
	b.StopTimer()
	if got := len(inboxOf(b, bi.st, bobB)); got != total {
		b.Fatalf("bob has %d messages, want %d", got, total)
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(total), "cpu-ms/msg")
}

// processCPU is the user plus system CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
