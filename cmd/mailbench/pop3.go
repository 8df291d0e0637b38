package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Defaults of the pop3 and pop3-idle subcommands.
const (
	defaultPOP3Addr      = "127.0.0.1:1100"
	defaultIdleConns     = 1000
	defaultIdleUser      = "user%d@bench.test"
	defaultIdleHold      = 30 * time.Second
	defaultIdleParallel  = 50              // logins in flight at once
	defaultIdleSettle    = 2 * time.Second // pause before reading memory
	defaultIdleRunBudget = 5 * time.Minute // on top of -hold
)

// pop3Flags registers the connection flags both POP3 subcommands share.
func pop3Flags(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
	DurationVar(*time.Duration, string, time.Duration, string)
}, o *pop3Options) {
	fs.StringVar(&o.Addr, "addr", defaultPOP3Addr, "POP3 server `host:port`")
	fs.BoolVar(&o.TLS, "tls", false, "implicit TLS (POP3S)")
	fs.BoolVar(&o.STLS, "stls", false, "STLS after the greeting")
	fs.BoolVar(&o.Insecure, "insecure", false, "do not verify the server certificate")
	fs.BoolVar(&o.SASLPlain, "sasl", false, "log in with AUTH PLAIN instead of USER/PASS")
	fs.DurationVar(&o.Timeout, "cmd-timeout", defaultCmdTimeout, "bound on each command and reply")
}

// countingDiscard counts what a RETR delivers and throws it away.
type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func runPOP3(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o pop3Options
	fs := newFlagSet("pop3", stderr)
	pop3Flags(fs, &o)
	user := fs.String("user", "", "login (required)")
	pass := fs.String("pass", "", "password")
	count := fs.Int("count", 0, "messages to download, 1..N (0: all that STAT reports)")
	repeat := fs.Int("repeat", 1, "sessions to run one after the other, one summary line each")
	timeout := fs.Duration("timeout", defaultRunTimeout, "bound on each session")
	maxErrors := fs.Int("max-errors", 0, "exit non-zero when more RETRs than this fail")
	label := fs.String("label", "", "free text copied into the summary line")
	var pid pidList
	fs.Var(&pid, "pid", "server `PID`s (comma-separated): print their CPU time used during the run and their resident memory before and after")
	pidTree := fs.Bool("pid-tree", false, "with -pid: sum the proportional set size (Pss) of the process and all its descendants")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *user == "" || *count < 0 || *repeat < 1 || *timeout <= 0 || o.Timeout <= 0 {
		fmt.Fprintln(stderr, "pop3: -user is required; -count >= 0, -repeat >= 1, timeouts > 0")
		return errUsage
	}
	for range *repeat {
		if err := benchPOP3(ctx, o, *user, *pass, *count, *timeout, *maxErrors, *label, pid, *pidTree, stdout, stderr); err != nil {
			return err
		}
	}
	return nil
}

// benchPOP3 runs one download session: login, STAT, LIST, RETR 1..count one
// command at a time (no pipelining), QUIT without DELE.
func benchPOP3(ctx context.Context, o pop3Options, user, pass string, count int, timeout time.Duration,
	maxErrors int, label string, pid pidList, pidTree bool, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rssBefore := rssField(pid, pidTree)
	cpu := startCPU(pid, pidTree)

	c, err := dialPOP3(ctx, o)
	if err != nil {
		return fmt.Errorf("pop3: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.login(user, pass, o.SASLPlain); err != nil {
		return fmt.Errorf("pop3: %w", err)
	}
	total, _, err := c.stat()
	if err != nil {
		return fmt.Errorf("pop3: %w", err)
	}
	if count == 0 || count > total {
		count = total
	}
	sizes, err := c.list(total)
	if err != nil {
		return fmt.Errorf("pop3: %w", err)
	}

	rec := newRecorder(count)
	var got countingDiscard
	t0 := time.Now()
download:
	for num := 1; num <= count && ctx.Err() == nil; num++ {
		t := time.Now()
		n, err := c.retr(num, &got)
		var perr *pop3Error
		switch {
		case errors.As(err, &perr):
			rec.fail(err) // the session goes on after -ERR
			continue
		case err != nil:
			rec.fail(err)
			break download // the connection is unusable
		case sizes[num] >= 0 && n != sizes[num]:
			// RFC 1939 §11: the octet count of LIST must be exact.
			rec.fail(fmt.Errorf("RETR %d size differs from LIST (got %d, LIST said %d)", num, n, sizes[num]))
			continue
		}
		rec.ok(time.Since(t))
	}
	dur := time.Since(t0)
	if ctx.Err() == nil {
		c.quit()
	}

	ok, errs := rec.counts()
	mbs := 0.0
	if dur > 0 {
		mbs = float64(got.n) / 1e6 / dur.Seconds()
	}
	fmt.Fprintf(stdout, "pop3 label=%s addr=%s msgs=%d retrieved=%d errors=%d bytes=%d dur=%s rate=%s throughput=%.1fMB/s %s%s%s%s\n",
		field(label), o.Addr, count, ok, errs, got.n, secs(dur), rate(ok, dur), mbs, rec.latencyFields(),
		cpu.field(), rssBefore.prefixed(" rss_before="), rssField(pid, pidTree).prefixed(" rss_after="))
	rec.printErrors(stderr, "pop3")
	switch {
	case errs > maxErrors:
		return fmt.Errorf("pop3: %d errors (allowed %d)", errs, maxErrors)
	case ok+errs < count:
		return fmt.Errorf("pop3: downloaded %d of %d messages (timeout %s)", ok, count, timeout)
	}
	return nil
}

func runPOP3Idle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o pop3Options
	fs := newFlagSet("pop3-idle", stderr)
	pop3Flags(fs, &o)
	user := fs.String("user", defaultIdleUser, "login; %d is replaced by the session number (distinct users for servers that lock the maildrop)")
	first := fs.Int("first", 0, "number of the first session, for %d in -user")
	pass := fs.String("pass", "", "password of every login")
	conns := fs.Int("conns", defaultIdleConns, "sessions to open and hold")
	hold := fs.Duration("hold", defaultIdleHold, "how long to hold the sessions idle")
	parallel := fs.Int("parallel", defaultIdleParallel, "logins in flight at once")
	settle := fs.Duration("settle", defaultIdleSettle, "pause before each memory reading")
	timeout := fs.Duration("timeout", 0, "bound on the whole run (default: -hold + 5m)")
	maxErrors := fs.Int("max-errors", 0, "exit non-zero when more sessions than this fail")
	label := fs.String("label", "", "free text copied into the summary line")
	var pid pidList
	fs.Var(&pid, "pid", "server `PID`s (comma-separated) whose resident memory is read before, while and after holding")
	pidTree := fs.Bool("pid-tree", false, "with -pid: sum the proportional set size (Pss) of the process and all its descendants")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *timeout == 0 {
		*timeout = *hold + defaultIdleRunBudget
	}
	if *conns < 1 || *parallel < 1 || *hold < 0 || *timeout <= *hold || o.Timeout <= 0 {
		fmt.Fprintln(stderr, "pop3-idle: -conns and -parallel must be positive and -timeout longer than -hold")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	memory := func() rssValue {
		if len(pid) == 0 {
			return ""
		}
		sleepCtx(ctx, *settle)
		return rssField(pid, *pidTree)
	}
	var beforeBytes int64
	rssBefore := memory()
	if len(pid) > 0 {
		beforeBytes, _ = readRSS(pid, *pidTree)
	}

	rec := newRecorder(*conns)
	clients := make([]*pop3Client, *conns)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range *conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			login := *user
			if strings.Contains(login, "%d") {
				login = strings.ReplaceAll(login, "%d", fmt.Sprint(*first+i))
			}
			t := time.Now()
			c, err := dialPOP3(ctx, o)
			if err != nil {
				rec.fail(err)
				return
			}
			if err := c.login(login, *pass, o.SASLPlain); err != nil {
				c.Close()
				rec.fail(err)
				return
			}
			rec.ok(time.Since(t))
			clients[i] = c
		}()
	}
	wg.Wait()
	openDur := time.Since(t0)
	held, _ := rec.counts()

	rssHeld := memory()
	var heldBytes int64
	if len(pid) > 0 {
		heldBytes, _ = readRSS(pid, *pidTree)
	}
	sleepCtx(ctx, *hold-min(*hold, *settle))

	// The sessions stayed idle; a NOOP shows which ones the server dropped.
	dropped := 0
	var mu sync.Mutex
	for _, c := range clients {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := c.cmd("NOOP")
			if err == nil {
				err = c.quit()
			}
			c.Close()
			if err != nil {
				mu.Lock()
				dropped++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rssAfter := memory()

	_, errs := rec.counts()
	delta := ""
	if len(pid) > 0 && heldBytes > 0 && beforeBytes > 0 {
		delta = " rss_delta=" + mib(heldBytes-beforeBytes)
	}
	fmt.Fprintf(stdout, "pop3-idle label=%s addr=%s conns=%d held=%d errors=%d dropped=%d open_dur=%s hold=%s login_%s%s%s%s%s\n",
		field(*label), o.Addr, *conns, held, errs, dropped, secs(openDur), *hold,
		strings.Replace(rec.latencyFields(), " ", " login_", -1),
		rssBefore.prefixed(" rss_before="), rssHeld.prefixed(" rss_held="), rssAfter.prefixed(" rss_after="), delta)
	rec.printErrors(stderr, "pop3-idle")
	if errs+dropped > *maxErrors {
		return fmt.Errorf("pop3-idle: %d failed logins and %d dropped sessions (allowed %d)", errs, dropped, *maxErrors)
	}
	return ctx.Err()
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
