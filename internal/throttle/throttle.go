// Package throttle slows down repeated failed logins: after a few failures
// from one client address or against one account name, every further
// attempt waits a growing delay before it is answered. It knows nothing of
// mail; protocols share one Limiter so a client cannot switch protocols to
// escape it.
package throttle

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultFree is how many failures a key may have before delays start.
	DefaultFree = 3
	// DefaultBaseDelay is the first delay; each further failure doubles it.
	DefaultBaseDelay = time.Second
	// DefaultMaxDelay caps the delay.
	DefaultMaxDelay = 30 * time.Second
	// DefaultWindow is how long a failure is remembered after the last one.
	DefaultWindow = 15 * time.Minute
	// DefaultMaxKeys bounds memory: beyond it, the oldest entries go.
	DefaultMaxKeys = 100_000
)

// Options configures a Limiter. Zero values mean the defaults.
type Options struct {
	Free      int
	BaseDelay time.Duration
	MaxDelay  time.Duration
	Window    time.Duration
	MaxKeys   int
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Limiter tracks failures per client address and per account name. It is
// safe for concurrent use.
type Limiter struct {
	opts Options
	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	failures int
	last     time.Time
}

// New returns a Limiter.
func New(opts Options) *Limiter {
	if opts.Free <= 0 {
		opts.Free = DefaultFree
	}
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = DefaultBaseDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Limiter{opts: opts, keys: map[string]*entry{}}
}

// keysFor names the two counters of an attempt. IPv6 clients are counted
// per /64, since one host usually has the whole prefix.
func keysFor(remote, account string) [2]string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return [2]string{"ip:" + host, "user:" + strings.ToLower(account)}
}

// Delay is how long an attempt from remote (an address, "host:port" or
// "host") for account must wait before it is answered: the larger of the
// two keys' delays. An empty account counts only the address.
func (l *Limiter) Delay(remote, account string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	var d time.Duration
	for i, k := range keysFor(remote, account) {
		if i == 1 && account == "" {
			break
		}
		e := l.keys[k]
		if e == nil || now.Sub(e.last) > l.opts.Window {
			continue
		}
		d = max(d, l.delayFor(e.failures))
	}
	return d
}

func (l *Limiter) delayFor(failures int) time.Duration {
	over := failures - l.opts.Free
	if over < 0 {
		return 0
	}
	d := l.opts.BaseDelay
	for range over {
		d *= 2
		if d >= l.opts.MaxDelay {
			return l.opts.MaxDelay
		}
	}
	return d
}

// Wait sleeps for Delay(remote, account), or until ctx is done.
func (l *Limiter) Wait(ctx context.Context, remote, account string) error {
	d := l.Delay(remote, account)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Failure records a failed attempt.
func (l *Limiter) Failure(remote, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	for i, k := range keysFor(remote, account) {
		if i == 1 && account == "" {
			break
		}
		e := l.keys[k]
		if e == nil || now.Sub(e.last) > l.opts.Window {
			if e == nil && len(l.keys) >= l.opts.MaxKeys {
				l.prune(now)
			}
			e = &entry{}
			l.keys[k] = e
		}
		e.failures++
		e.last = now
	}
}

// Success forgets the account's failures (not the address's: a client
// that guesses many accounts stays slow).
func (l *Limiter) Success(remote, account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.keys, keysFor(remote, account)[1])
}

// prune drops expired entries, then, if still full, the oldest half.
func (l *Limiter) prune(now time.Time) {
	var oldest time.Time
	for k, e := range l.keys {
		if now.Sub(e.last) > l.opts.Window {
			delete(l.keys, k)
		} else if oldest.IsZero() || e.last.Before(oldest) {
			oldest = e.last
		}
	}
	if len(l.keys) < l.opts.MaxKeys {
		return
	}
	cut := oldest.Add(now.Sub(oldest) / 2)
	for k, e := range l.keys {
		if !e.last.After(cut) {
			delete(l.keys, k)
		}
	}
}
