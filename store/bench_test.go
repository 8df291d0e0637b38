package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
