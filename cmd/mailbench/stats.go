package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxErrorSamples is how many distinct error texts a run keeps to print.
const maxErrorSamples = 8

// recorder collects latencies and errors from many workers. Runs are
// bounded in count, so keeping every latency is cheap and exact.
type recorder struct {
	mu      sync.Mutex
	lat     []time.Duration
	errors  int
	samples map[string]int // error text -> occurrences, up to maxErrorSamples texts
}

func newRecorder(capacity int) *recorder {
	return &recorder{lat: make([]time.Duration, 0, capacity), samples: map[string]int{}}
}

func (r *recorder) ok(d time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors++
	text := err.Error()
	if _, seen := r.samples[text]; seen || len(r.samples) < maxErrorSamples {
		r.samples[text]++
	}
}

// counts returns the number of successes and errors so far.
func (r *recorder) counts() (ok, errs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lat), r.errors
}

// percentiles returns p50, p90, p99 and max of the recorded latencies.
func (r *recorder) percentiles() (p50, p90, p99, maxLat time.Duration) {
	r.mu.Lock()
	lat := slices.Clone(r.lat)
	r.mu.Unlock()
	if len(lat) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(lat)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(lat))+0.5) - 1
		return lat[max(0, min(i, len(lat)-1))]
	}
	return at(0.50), at(0.90), at(0.99), lat[len(lat)-1]
}

// latencyFields formats the percentiles as summary fields.
func (r *recorder) latencyFields() string {
	p50, p90, p99, mx := r.percentiles()
	return fmt.Sprintf("p50=%s p90=%s p99=%s max=%s", ms(p50), ms(p90), ms(p99), ms(mx))
}

// printErrors writes the error samples, most frequent first, to w.
func (r *recorder) printErrors(w io.Writer, prefix string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	texts := make([]string, 0, len(r.samples))
	for t := range r.samples {
		texts = append(texts, t)
	}
	slices.SortFunc(texts, func(a, b string) int { return r.samples[b] - r.samples[a] })
	for _, t := range texts {
		fmt.Fprintf(w, "%s: error x%d: %s\n", prefix, r.samples[t], t)
	}
}

// ms formats a duration in milliseconds with one decimal, e.g. "12.3ms".
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// secs formats a duration in seconds with two decimals, e.g. "4.21s".
func secs(d time.Duration) string {
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// rate formats n events over d as events per second, e.g. "812.3/s".
func rate(n int, d time.Duration) string {
	if d <= 0 || n == 0 {
		return "0.0/s"
	}
	return fmt.Sprintf("%.1f/s", float64(n)/d.Seconds())
}

// mib formats a byte count in MiB with one decimal.
func mib(b int64) string {
	return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
}

// field quotes a summary value only when it would break the key=value form.
func field(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsAny(s, " \t\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
