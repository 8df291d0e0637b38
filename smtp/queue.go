package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"mailbox/store"
)

// The queue runner delivers what Account.Submit queued in the store to
// other servers: MX lookup (falling back to the domain's own address, RFC
// 5321 §5.1), MX hosts in preference order, STARTTLS whenever offered
// (required, with a verified certificate, where the recipient domain's
// MTA-STS policy says so: mtasts.go), DKIM signing, per-destination
// concurrency with connection reuse, retries with exponential backoff, a
// delay warning and a bounce (RFC 3464) on permanent failure or expiry.
// The null sender is never bounced.
//
// Invariants:
//   - An entry is claimed (marked as being sent, committed) before any
//     connection is made for it, and removed (committed) right after the
//     remote 250 for its data, so after a crash it is sent again only if
//     the crash fell between those two (see store's queue comment).
//   - Every claimed entry ends in exactly one of Delivered, Defer, Fail or
//     Release; the runner holds at most MaxInflight claimed entries.
//   - One goroutine (loop) claims and dispatches; worker goroutines each
//     own one connection to one destination and take that destination's
//     jobs one after another (connection reuse). No store call runs under
//     mu.

// Defaults for RunnerOptions. A zero field means its default.
const (
	// DefaultMXPort is where other servers listen for mail.
	DefaultMXPort = 25
	// DefaultMaxOutboundConns bounds all outbound connections at once.
	DefaultMaxOutboundConns = 100
	// DefaultMaxConnsPerDomain bounds connections to one destination
	// (Postfix's default_destination_concurrency_limit is 20; a small
	// server should be gentler on big receivers' rate limits).
	DefaultMaxConnsPerDomain = 8
	// DefaultRetryMin is the wait after the first failed attempt; each
	// further failure doubles it, up to DefaultRetryMax.
	DefaultRetryMin = 5 * time.Minute
	// DefaultRetryMax caps the wait between attempts (Postfix's
	// maximal_backoff_time is 4000s).
	DefaultRetryMax = 2 * time.Hour
	// DefaultQueueLifetime is how long a message is retried before it is
	// bounced (RFC 5321 §4.5.4.1: "at least 4-5 days").
	DefaultQueueLifetime = 5 * 24 * time.Hour
	// DefaultDelayWarning is when the sender is told that a message is
	// still not delivered (Postfix's delay_warning_time, when enabled).
	DefaultDelayWarning = 4 * time.Hour
	// DefaultConnectTimeout bounds TCP connect plus the greeting.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultCommandTimeout bounds each command's reply (RFC 5321
	// §4.5.3.2 asks for 5 minutes for MAIL and RCPT; we are less patient
	// and retry later).
	DefaultCommandTimeout = 2 * time.Minute
	// DefaultDataTimeout bounds the reply after the final dot (RFC 5321
	// §4.5.3.2.6: 10 minutes).
	DefaultDataReplyTimeout = 10 * time.Minute
	// DefaultPollInterval is the longest the runner sleeps without
	// looking at the queue.
	DefaultPollInterval = time.Minute
	// maxInflightPerConn sizes how many claimed entries wait in memory per
	// allowed connection.
	maxInflightPerConn = 10
)

// RunnerOptions configures a Runner.
type RunnerOptions struct {
	// Store holds the queue. Required.
	Store *store.Store
	// Logger receives queue events (delivered, deferred, bounced). Nil
	// discards them.
	Logger *slog.Logger
	// Hostname is our EHLO name and the reporting MTA in bounces
	// (default DefaultHostname).
	Hostname string
	// Resolver does every DNS lookup (default NewResolver("", 0)).
	Resolver Resolver
	// MXPort is the port of MX hosts (default DefaultMXPort); other values
	// are for tests with several servers on one machine.
	MXPort int
	// Smarthost, when its Addr is set, takes all remote mail instead of
	// the recipients' MX hosts.
	Smarthost Smarthost
	// RequireTLS refuses to deliver to MX hosts that do not offer
	// STARTTLS (the message is deferred). Certificates of MX hosts are
	// not verified either way (RFC 7435 opportunistic TLS), except where
	// an MTA-STS policy in enforce mode asks for it.
	RequireTLS bool
	// NoMTASTS turns MTA-STS (RFC 8461) off: recipient domains' policies
	// are neither looked up nor applied. Smarthost delivery never applies
	// them (the relay does).
	NoMTASTS bool
	// MTASTSRoots verifies the certificates of MTA-STS policy hosts and,
	// under a policy, of MX hosts; nil means the system's roots.
	MTASTSRoots *x509.CertPool
	// MTASTSPort is the HTTPS port of policy hosts (default
	// DefaultMTASTSPort); other values are for tests on one machine.
	MTASTSPort int
	// MTASTSFetchTimeout bounds one policy fetch (default
	// DefaultMTASTSFetchTimeout).
	MTASTSFetchTimeout time.Duration
	// DKIMSelector names the domains' DKIM keys (see DKIMSelectors); ""
	// means DefaultDKIMSelector. Messages whose From: domain is local are
	// signed with that domain's keys.
	DKIMSelector string
	// NoDKIM turns signing off.
	NoDKIM bool

	// MaxConns bounds outbound connections (default DefaultMaxOutboundConns).
	MaxConns int
	// MaxConnsPerDomain bounds connections per destination (default
	// DefaultMaxConnsPerDomain).
	MaxConnsPerDomain int
	// RetryMin and RetryMax shape the backoff (defaults DefaultRetryMin,
	// DefaultRetryMax).
	RetryMin, RetryMax time.Duration
	// QueueLifetime is when an undelivered message is bounced (default
	// DefaultQueueLifetime).
	QueueLifetime time.Duration
	// DelayWarning is when the sender hears of a delay (default
	// DefaultDelayWarning; negative: never).
	DelayWarning time.Duration
	// ConnectTimeout, CommandTimeout and DataReplyTimeout bound the
	// network steps (defaults DefaultConnectTimeout,
	// DefaultCommandTimeout, DefaultDataReplyTimeout).
	ConnectTimeout, CommandTimeout, DataReplyTimeout time.Duration
	// PollInterval is the longest sleep between looks at the queue
	// (default DefaultPollInterval).
	PollInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Smarthost is a relay that takes all outbound mail (for networks that
// block port 25).
type Smarthost struct {
	// Addr is "host:port"; "" means deliver directly.
	Addr string
	// TLS is "starttls" (the default), "tls" (implicit, as on 465) or
	// "none".
	TLS string
	// Username and Password, if Username is set, log in with AUTH PLAIN
	// (only over TLS).
	Username, Password string
	// TLSConfig verifies the relay's certificate; nil means the system
	// roots with ServerName from Addr.
	TLSConfig *tls.Config
}

func (o RunnerOptions) withDefaults() RunnerOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Hostname == "" {
		o.Hostname = DefaultHostname
	}
	if o.Resolver == nil {
		o.Resolver = NewResolver("", 0)
	}
	if o.MXPort <= 0 {
		o.MXPort = DefaultMXPort
	}
	if o.DKIMSelector == "" {
		o.DKIMSelector = DefaultDKIMSelector
	}
	if o.MTASTSPort <= 0 {
		o.MTASTSPort = DefaultMTASTSPort
	}
	if o.MTASTSFetchTimeout <= 0 {
		o.MTASTSFetchTimeout = DefaultMTASTSFetchTimeout
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxOutboundConns
	}
	if o.MaxConnsPerDomain <= 0 {
		o.MaxConnsPerDomain = DefaultMaxConnsPerDomain
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.QueueLifetime <= 0 {
		o.QueueLifetime = DefaultQueueLifetime
	}
	if o.DelayWarning == 0 {
		o.DelayWarning = DefaultDelayWarning
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.DataReplyTimeout <= 0 {
		o.DataReplyTimeout = DefaultDataReplyTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Smarthost.TLS == "" {
		o.Smarthost.TLS = "starttls"
	}
	return o
}

// Runner delivers the store's outbound queue. Start it once; Shutdown
// stops it.
type Runner struct {
	opts RunnerOptions
	log  *slog.Logger
	st   *store.Store
	dkim *dkimKeys
	sts  *mtaSTS // nil when MTA-STS is off

	ctx    context.Context // cancelled when Shutdown's deadline passes
	cancel context.CancelFunc
	stop   chan struct{} // closed by Shutdown: claim nothing more
	done   chan struct{} // closed when loop and workers are gone
	wake   chan struct{} // a worker finished: capacity may be free

	mu       sync.Mutex
	dests    map[string]*dest
	conns    int // running workers
	inflight int // claimed entries held in memory
	workers  sync.WaitGroup
}

// dest is one destination (a recipient domain, or the smarthost).
type dest struct {
	name    string
	pending []*job
	conns   int
}

// job is one message for the recipients of one domain: one MAIL
// transaction.
type job struct {
	msgID   int64
	sender  string
	domain  string
	created time.Time
	warned  bool
	entries []store.QueueEntry
}

// NewRunner returns a Runner for opts.
func NewRunner(opts RunnerOptions) *Runner {
	opts = opts.withDefaults()
	r := &Runner{
		opts:  opts,
		log:   opts.Logger.With("proto", "smtp", "mode", "queue"),
		st:    opts.Store,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		wake:  make(chan struct{}, 1),
		dests: map[string]*dest{},
	}
	r.dkim = newDKIMKeys(opts.Store, opts.DKIMSelector)
	if !opts.NoMTASTS && opts.Smarthost.Addr == "" {
		r.sts = newMTASTS(mtaSTSOptions{st: opts.Store, resolver: opts.Resolver, roots: opts.MTASTSRoots,
			port: opts.MTASTSPort, timeout: opts.MTASTSFetchTimeout, log: r.log, now: opts.Now})
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

// Start recovers entries left in flight by a crash and starts delivering
// in the background. It returns an error only if the queue cannot be
// read.
func (r *Runner) Start(ctx context.Context) error {
	if r.st == nil {
		return errors.New("smtp: RunnerOptions.Store is required")
	}
	n, err := r.st.Recover(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		// store's queue comment: these may have reached the remote
		// server just before the crash; RFC 5321 §6.1 prefers a
		// duplicate to a loss.
		r.log.Warn("attempts interrupted by a restart are retried", "entries", n)
	}
	if r.sts != nil {
		if _, err := r.st.DeleteMTASTSPolicies(ctx, r.opts.Now()); err != nil {
			r.log.Warn("sweep expired MTA-STS policies", "err", err)
		}
	}
	go r.loop()
	return nil
}

// Shutdown stops claiming, gives back entries not yet tried, lets
// attempts in progress finish, and returns when they have. If ctx ends
// first, the remaining connections are closed (those entries stay marked
// as being sent and are retried after the next Start) and ctx's error is
// returned.
func (r *Runner) Shutdown(ctx context.Context) error {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.cancel()
		<-r.done
		return ctx.Err()
	}
}

func (r *Runner) loop() {
	defer close(r.done)
	defer r.workers.Wait()
	maxInflight := r.opts.MaxConns * maxInflightPerConn
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-r.stop:
			r.releasePending()
			return
		default:
		}
		r.mu.Lock()
		room := maxInflight - r.inflight
		r.mu.Unlock()
		wait := r.opts.PollInterval
		if room > 0 {
			// A read first: most wake-ups (a job finished) find nothing
			// due, and Claim is a write transaction. With no room, a
			// finishing job wakes the loop anyway.
			next, err := r.st.NextDue(r.ctx)
			if err != nil {
				r.log.Error("read queue", "err", err)
			}
			if !next.IsZero() && !next.After(r.opts.Now()) {
				entries, err := r.st.Claim(r.ctx, r.opts.Now(), room)
				if err != nil {
					r.log.Error("claim queue entries", "err", err)
				}
				r.dispatch(entries)
				if len(entries) == room {
					continue // more may be due
				}
				next, err = r.st.NextDue(r.ctx)
				if err != nil {
					r.log.Error("read queue", "err", err)
				}
			}
			if !next.IsZero() {
				if d := next.Sub(r.opts.Now()); d < wait {
					wait = max(d, 10*time.Millisecond)
				}
			}
		}
		timer.Reset(wait)
		select {
		case <-r.stop:
		case <-r.st.QueueSignal():
		case <-r.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// dispatch groups entries into jobs (one per message and domain) and
// hands them to their destinations.
func (r *Runner) dispatch(entries []store.QueueEntry) {
	if len(entries) == 0 {
		return
	}
	jobs := map[[2]string]*job{}
	var order []*job
	for _, e := range entries {
		key := [2]string{fmt.Sprint(e.MessageID), e.Domain}
		j := jobs[key]
		if j == nil {
			j = &job{msgID: e.MessageID, sender: e.Sender, domain: e.Domain, created: e.Created, warned: e.Warned}
			jobs[key] = j
			order = append(order, j)
		}
		j.entries = append(j.entries, e)
		j.warned = j.warned || e.Warned
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight += len(entries)
	for _, j := range order {
		name := j.domain
		if r.opts.Smarthost.Addr != "" {
			name = "smarthost " + r.opts.Smarthost.Addr
		}
		d := r.dests[name]
		if d == nil {
			d = &dest{name: name}
			r.dests[name] = d
		}
		d.pending = append(d.pending, j)
	}
	r.startWorkersLocked()
}

// startWorkersLocked starts workers for destinations with waiting jobs,
// as far as the connection limits allow.
func (r *Runner) startWorkersLocked() {
	for _, d := range r.dests {
		for len(d.pending) > d.conns && d.conns < r.opts.MaxConnsPerDomain && r.conns < r.opts.MaxConns {
			d.conns++
			r.conns++
			r.workers.Add(1)
			go r.worker(d)
		}
	}
}

// next takes a job for a worker of d, or tells it to end.
func (r *Runner) next(d *dest) *job {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.stop:
		return nil
	default:
	}
	if len(d.pending) == 0 {
		return nil
	}
	j := d.pending[0]
	d.pending = d.pending[1:]
	return j
}

func (r *Runner) workerDone(d *dest) {
	r.mu.Lock()
	d.conns--
	r.conns--
	if d.conns == 0 && len(d.pending) == 0 {
		delete(r.dests, d.name)
	}
	r.startWorkersLocked()
	r.mu.Unlock()
	r.workers.Done()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) jobDone(j *job) {
	r.mu.Lock()
	r.inflight -= len(j.entries)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// releasePending gives back every job no worker has started.
func (r *Runner) releasePending() {
	r.mu.Lock()
	var ids []int64
	for _, d := range r.dests {
		for _, j := range d.pending {
			for _, e := range j.entries {
				ids = append(ids, e.ID)
			}
			r.inflight -= len(j.entries)
		}
		d.pending = nil
	}
	r.mu.Unlock()
	if len(ids) > 0 {
		if err := r.st.Release(context.Background(), ids); err != nil {
			r.log.Error("release queue entries", "err", err)
		}
	}
}

// worker delivers d's jobs over one connection, reused from job to job.
func (r *Runner) worker(d *dest) {
	defer r.workerDone(d)
	var c *outConn
	defer func() {
		if c != nil {
			c.quit()
		}
	}()
	clean := false // the last transaction on c ended with the reply to its data
	for {
		j := r.next(d)
		if j == nil {
			return
		}
		var connErr error
		c, clean, connErr = r.attempt(c, clean, j)
		r.jobDone(j)
		if connErr != nil {
			r.destinationDown(d, connErr)
			return
		}
	}
}

// destinationDown records connErr for every job waiting for d, without
// trying each one: the destination did not answer just now, and a
// thousand more connection attempts would not change that (Postfix calls
// this a dead destination).
func (r *Runner) destinationDown(d *dest, connErr error) {
	r.mu.Lock()
	jobs := d.pending
	d.pending = nil
	r.mu.Unlock()
	for _, j := range jobs {
		r.record(r.log.With("qid", j.msgID, "domain", j.domain), j, allFail(j, connErr), "")
		r.jobDone(j)
	}
}

// outcome is what one recipient's attempt came to.
type outcome struct {
	entry store.QueueEntry
	err   error // nil: delivered
	perm  bool  // permanent failure
}

// attempt delivers one job, reusing c if it is still good, and records
// the outcome of every entry. It returns the connection to reuse (nil if
// it is gone), whether its last transaction ended cleanly, and, if no
// connection could be made, why.
//
// A reused connection gets RSET only after a transaction that did not
// end with the reply to its data (refused MAIL, RCPT or DATA): after a
// completed one, RFC 5321 §4.1.1.4 lets the next MAIL follow directly,
// which saves a round trip per message.
func (r *Runner) attempt(c *outConn, clean bool, j *job) (*outConn, bool, error) {
	log := r.log.With("qid", j.msgID, "domain", j.domain)
	if c != nil && !clean && !c.reset() {
		c.close()
		c = nil
	}
	var err error
	if c == nil {
		c, err = r.connectDomain(r.ctx, j.domain)
		if err != nil {
			r.record(log, j, allFail(j, err), "")
			return nil, false, err
		}
	}
	sent := c.count
	results, err := r.send(r.ctx, c, j)
	if results == nil {
		results = allFail(j, err)
	}
	if err != nil {
		c.close()
		r.record(log, j, results, c.host)
		return nil, false, nil
	}
	r.record(log, j, results, c.host)
	// send counts a message once the server answered its data, whatever
	// the answer.
	return c, c.count > sent, nil
}

func allFail(j *job, err error) []outcome {
	out := make([]outcome, len(j.entries))
	for i, e := range j.entries {
		out[i] = outcome{entry: e, err: err, perm: isPermanent(err)}
	}
	return out
}

// record stores the outcome of an attempt: delivered entries go, failed
// ones are bounced (unless the sender is null), deferred ones wait for
// their next try (or bounce if too old).
func (r *Runner) record(log *slog.Logger, j *job, results []outcome, host string) {
	ctx := context.Background() // an outcome is recorded even during shutdown
	now := r.opts.Now()
	var delivered []int64
	var failed, deferred []outcome
	for _, o := range results {
		switch {
		case o.err == nil:
			delivered = append(delivered, o.entry.ID)
		case o.perm || now.Sub(j.created) >= r.opts.QueueLifetime:
			failed = append(failed, o)
		default:
			deferred = append(deferred, o)
		}
	}
	if len(delivered) > 0 {
		if err := r.st.Delivered(ctx, delivered); err != nil {
			// The remote server has the message; if this does not commit
			// it will be sent again after a restart (at least once).
			log.Error("record delivery", "err", err)
		} else {
			log.Info("delivered", "rcpts", len(delivered), "host", host, "sender", j.sender)
		}
	}
	if len(failed) > 0 {
		ids := idsOf(failed)
		var notice *store.Notice
		if j.sender != "" {
			notice = &store.Notice{To: j.sender, Data: r.dsn(ctx, j, failed, host, true)}
		}
		if err := r.st.Fail(ctx, ids, notice); err != nil {
			log.Error("record failure", "err", err)
		} else if notice == nil {
			log.Info("failed, null sender: no bounce", "rcpts", len(ids), "err", failed[0].err)
		} else {
			log.Info("bounced", "rcpts", len(ids), "to", j.sender, "err", failed[0].err)
		}
	}
	if len(deferred) > 0 {
		attempts := deferred[0].entry.Attempts + 1
		wait := r.backoff(attempts)
		next := now.Add(wait)
		if end := j.created.Add(r.opts.QueueLifetime); next.After(end) {
			next = end // the last try comes at expiry, then it bounces
		}
		var notice *store.Notice
		if !j.warned && j.sender != "" && r.opts.DelayWarning > 0 && now.Sub(j.created) >= r.opts.DelayWarning {
			notice = &store.Notice{To: j.sender, Data: r.dsn(ctx, j, deferred, host, false)}
		}
		if err := r.st.Defer(ctx, idsOf(deferred), next, errText(deferred[0].err), notice); err != nil {
			log.Error("record deferral", "err", err)
		} else {
			log.Info("deferred", "rcpts", len(deferred), "attempts", attempts, "retry", wait.Round(time.Millisecond),
				"err", deferred[0].err, "warned", notice != nil)
		}
	}
}

// backoff is the wait after the n-th failed attempt: RetryMin doubled
// for each earlier failure, at most RetryMax, with ±10% jitter so that
// entries deferred together do not come back together.
func (r *Runner) backoff(n int) time.Duration {
	d := r.opts.RetryMin
	for i := 1; i < n && d < r.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.opts.RetryMax)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

func idsOf(os []outcome) []int64 {
	ids := make([]int64, len(os))
	for i, o := range os {
		ids[i] = o.entry.ID
	}
	return ids
}

// errText is how an error is kept in the queue and shown in bounces: the
// remote reply as the server wrote it, or what went wrong locally.
func errText(err error) string {
	var re *remoteError
	if errors.As(err, &re) {
		return re.reply()
	}
	s := err.Error()
	s = strings.ReplaceAll(s, "\n", " ")
	return s
}
