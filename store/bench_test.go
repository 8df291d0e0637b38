package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

// BenchmarkDeliverSize compares keeping a body inside the database with
// keeping it as a file, at several sizes, with 8 concurrent deliveries
// (group commit on). It is how DefaultInlineMaxBytes was chosen.
func BenchmarkDeliverSize(b *testing.B) {
	for _, size := range []int{4 << 10, 32 << 10, 128 << 10, 512 << 10} {
		for _, where := range []string{"inline", "file"} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, where), func(b *testing.B) {
				inline := int64(1 << 30)
				if where == "file" {
					inline = 1
				}
				st := storetest.New(b, storetest.Fixture{
					Users:   map[string]string{"bench@example.test": "x"},
					Options: store.Options{InlineMaxBytes: inline},
				})
				body := strings.Repeat(strings.Repeat("x", 76)+"\r\n", size/78)
				var seq atomic.Int64
				b.SetBytes(int64(size))
				b.SetParallelism(4) // 8 goroutines on 2 cores
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						raw := fmt.Sprintf("Subject: m%d\r\n\r\n%s", seq.Add(1), body)
						if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{"bench@example.test"}, Data: []byte(raw)}); err != nil {
							b.Error(err)
						}
					}
				})
			})
		}
	}
}

// BenchmarkGroupCommit delivers 4 KiB messages from 64 goroutines.
func BenchmarkGroupCommit(b *testing.B) {
	st := storetest.New(b, storetest.Fixture{Users: map[string]string{"bench@example.test": "x"}})
	body := strings.Repeat(strings.Repeat("y", 76)+"\r\n", 52)
	var seq atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	per := b.N/64 + 1
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				raw := fmt.Sprintf("Subject: m%d\r\n\r\n%s", seq.Add(1), body)
				if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{"bench@example.test"}, Data: []byte(raw)}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(seq.Load())/b.Elapsed().Seconds(), "msgs/s")
}

// textBody returns about size bytes of English-like text in CRLF lines of
// at most 72 characters, different for each seed: what mailbench sends,
// so the full-text index sees real words rather than one long token.
func textBody(size int, seed uint64) string {
	words := strings.Fields(`the of and to in is was for on that with as by at from this be are have
not or an but which one all were when there can been has their more if will would about out up what
into its time only new some could these two may first then do any like other such than over very
after also most made many before must through back years where much your way well down should because
each just those people how too little state good world still own see men work long here get both
between life being under never day same another know while last might great old year off come since
against go came right used take three states himself few house use during without again place around
however home small found thought went say part once general high upon school every does got united
left number course war until always away something fact though water less public put think almost
hand enough far took head yet government system better set told nothing night end why called eyes
find going look asked later knew point next city business give group toward young let room president
side social given present several order national possible rather second face per among form important
often things looking early white case john become large big need four within felt along children saw
best church ever least power development light thing seemed family interest want members mind country`)
	var b strings.Builder
	x := seed*2654435761 + 1
	line := 0
	for b.Len() < size-80 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		w := words[x%uint64(len(words))]
		if line+len(w)+1 > 72 {
			b.WriteString("\r\n")
			line = 0
		} else if line > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// BenchmarkDeliverText delivers 4 KiB and 100 KiB messages of real words
// (so the full-text index does real work) from 8 and 64 goroutines: the
// store's share of mailbench's ingest figures.
func BenchmarkDeliverText(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		for _, conns := range []int{8, 64} {
			b.Run(fmt.Sprintf("%dKiB/%d", size>>10, conns), func(b *testing.B) {
				st := storetest.New(b, storetest.Fixture{Users: map[string]string{"bench@example.test": "x"}})
				bodies := make([]string, 64)
				for i := range bodies {
					bodies[i] = textBody(size, uint64(i+1))
				}
				var seq atomic.Int64
				b.SetBytes(int64(size))
				cpu0 := cpuTime()
				b.ResetTimer()
				var wg sync.WaitGroup
				per := b.N/conns + 1
				for range conns {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							n := seq.Add(1)
							raw := fmt.Sprintf("From: <a@example.test>\r\nTo: <bench@example.test>\r\nSubject: m%d\r\n"+
								"Content-Type: text/plain; charset=us-ascii\r\n\r\n%s", n, bodies[n%int64(len(bodies))])
							if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{"bench@example.test"}, Data: []byte(raw)}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(seq.Load())/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(seq.Load()), "cpu-µs/msg")
			})
		}
	}
}

// cpuTime is the user and system CPU time of the process so far: on a
// shared machine it varies much less than throughput does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
