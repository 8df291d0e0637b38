package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

// benchMessages is the size of the mailbox BenchmarkListPage lists
// (WEB_BENCH_MESSAGES overrides it for quicker runs).
const benchMessages = 100_000

// BenchmarkListPage measures the server time of the first message list
// page (folder list with counts, 50 newest messages with sender, subject,
// date, size, attachment and flag marks) of a 100,000-message INBOX, and
// reports the median.
func BenchmarkListPage(b *testing.B) {
	n := benchMessages
	if s := os.Getenv("WEB_BENCH_MESSAGES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	e := newEnv(b, Options{}, storetest.Fixture{})
	fill(b, e.st, alice, n)
	c := e.client()
	c.mustLogin(alice)
	inbox := e.box(alice, store.RoleInbox)
	u, _ := http.NewRequest("GET", e.ts.URL, nil)
	cookies := c.http.Jar.Cookies(u.URL)
	for _, page := range []int{1, 1000} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			path := fmt.Sprintf("/box/%d?page=%d", inbox.ID, page)
			var times []time.Duration
			for b.Loop() {
				req := httptest.NewRequest("GET", path, nil)
				for _, ck := range cookies {
					req.AddCookie(ck)
				}
				w := httptest.NewRecorder()
				start := time.Now()
				e.srv.ServeHTTP(w, req)
				times = append(times, time.Since(start))
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
		})
	}
}

// fill delivers n small messages (every tenth with an attachment) to addr
// concurrently, so the store's group commit batches them.
func fill(b testing.TB, st *store.Store, addr string, n int) {
	const workers = 256
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				raw := storetest.Message(fmt.Sprintf("Sender %d <s%d@elsewhere.test>", i%500, i%500), addr, fmt.Sprintf("Message %d", i), "hello there")
				if i%10 == 0 {
					raw = "From: s@elsewhere.test\r\nTo: " + addr + "\r\nSubject: with file\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n" +
						"--B\r\nContent-Type: text/plain\r\n\r\nsee file\r\n--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"f" + strconv.Itoa(i) + ".pdf\"\r\n\r\nPDF\r\n--B--\r\n"
				}
				if _, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{addr}, Data: []byte(raw)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	start := time.Now()
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	b.Logf("filled %d messages in %v", n, time.Since(start).Round(time.Millisecond))
}
