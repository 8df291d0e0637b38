package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Defaults of the imap and imap-idle subcommands.
const (
	defaultIMAPAddr     = "127.0.0.1:1430"
	defaultIMAPUser     = "dl@bench.test"
	defaultIMAPRepeat   = 5
	defaultIMAPOps      = "select,fetch-flags,fetch-envelope,search,store,fetch-body"
	defaultIdleIMAPUser = "user999@bench.test"
	defaultPushes       = 5
	defaultPushWait     = 10 * time.Second // for one pushed message to reach every session
)

// imapOp is one measured IMAP workload on the selected INBOX.
type imapOp struct {
	name string
	cmd  func(word string) string // the command; "" for SELECT itself
	// check returns an error when the responses do not fit msgs messages.
	check func(res imapResult, msgs int) error
	undo  string // sent untimed after each run (resets STORE)
}

func wantFetches(res imapResult, msgs int) error {
	if res.Fetches != msgs {
		return fmt.Errorf("%d FETCH responses for %d messages", res.Fetches, msgs)
	}
	return nil
}

var imapOps = []imapOp{
	{name: "select", cmd: func(string) string { return "SELECT INBOX" },
		check: func(res imapResult, msgs int) error {
			if res.Exists != msgs {
				return fmt.Errorf("EXISTS %d, want %d", res.Exists, msgs)
			}
			return nil
		}},
	{name: "fetch-flags", cmd: func(string) string { return "UID FETCH 1:* (UID FLAGS)" }, check: wantFetches},
	{name: "fetch-envelope", cmd: func(string) string { return "FETCH 1:* (ENVELOPE)" }, check: wantFetches},
	{name: "search", cmd: func(w string) string { return "UID SEARCH BODY " + imapQuote(w) },
		check: func(res imapResult, _ int) error {
			if len(res.Search) == 0 {
				return errors.New("SEARCH found nothing")
			}
			return nil
		}},
	{name: "store", cmd: func(string) string { return `UID STORE 1:* +FLAGS (\Flagged)` }, check: wantFetches,
		undo: `UID STORE 1:* -FLAGS.SILENT (\Flagged)`},
	{name: "fetch-body", cmd: func(string) string { return "FETCH 1:* BODY.PEEK[]" }, check: wantFetches},
}

func runIMAP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("imap", stderr)
	addr := fs.String("addr", defaultIMAPAddr, "IMAP server `host:port` (plain, LOGIN)")
	user := fs.String("user", defaultIMAPUser, "login whose INBOX holds the messages")
	pass := fs.String("pass", "", "password")
	opsFlag := fs.String("ops", defaultIMAPOps, "comma-separated workloads, run in this order")
	repeat := fs.Int("repeat", defaultIMAPRepeat, "runs of each workload; the summary gives the median")
	word := fs.String("word", defaultRareWord, "word for the search workload (UID SEARCH BODY)")
	cmdTimeout := fs.Duration("cmd-timeout", defaultCmdTimeout, "bound on silence while reading a reply")
	timeout := fs.Duration("timeout", defaultRunTimeout, "bound on the whole run")
	label := fs.String("label", "", "free text copied into the summary lines")
	var pid pidList
	fs.Var(&pid, "pid", "server `PID`s (comma-separated): print their CPU time per workload")
	pidTree := fs.Bool("pid-tree", false, "with -pid: include the process's descendants")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var ops []imapOp
	for name := range strings.SplitSeq(*opsFlag, ",") {
		i := slices.IndexFunc(imapOps, func(op imapOp) bool { return op.name == strings.TrimSpace(name) })
		if i < 0 {
			fmt.Fprintf(stderr, "imap: unknown workload %q (have %s)\n", name, defaultIMAPOps)
			return errUsage
		}
		ops = append(ops, imapOps[i])
	}
	if *repeat < 1 || *timeout <= 0 || *cmdTimeout <= 0 || *word == "" {
		fmt.Fprintln(stderr, "imap: -repeat, -timeout and -cmd-timeout must be positive, -word not empty")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, err := dialIMAP(ctx, *addr, *cmdTimeout)
	if err != nil {
		return fmt.Errorf("imap: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.login(*user, *pass); err != nil {
		return fmt.Errorf("imap: %w", err)
	}
	msgs, err := c.selectInbox()
	if err != nil {
		return fmt.Errorf("imap: %w", err)
	}
	for _, op := range ops {
		if err := benchIMAPOp(c, op, msgs, *repeat, *word, *label, *addr, pid, *pidTree, stdout); err != nil {
			return fmt.Errorf("imap %s: %w", op.name, err)
		}
	}
	return c.logout()
}

// benchIMAPOp times repeat runs of op and prints one summary line.
func benchIMAPOp(c *imapClient, op imapOp, msgs, repeat int, word, label, addr string,
	pid pidList, pidTree bool, stdout io.Writer) error {
	durs := make([]time.Duration, 0, repeat)
	cpu := startCPU(pid, pidTree)
	var res imapResult
	for range repeat {
		t := time.Now()
		var err error
		res, err = c.cmd(op.cmd(word))
		d := time.Since(t)
		if err != nil {
			return err
		}
		if err := op.check(res, msgs); err != nil {
			return err
		}
		durs = append(durs, d)
		if op.undo != "" {
			if _, err := c.cmd(op.undo); err != nil {
				return err
			}
		}
	}
	cpuField := cpu.field()
	slices.Sort(durs)
	median := durs[len(durs)/2]
	if len(durs)%2 == 0 {
		median = (durs[len(durs)/2-1] + durs[len(durs)/2]) / 2
	}
	runs := make([]string, len(durs))
	for i, d := range durs {
		runs[i] = ms(d)
	}
	extra := ""
	switch op.name {
	case "search":
		extra = fmt.Sprintf(" word=%s found=%d", field(word), len(res.Search))
	case "fetch-body":
		extra = fmt.Sprintf(" rate=%s throughput=%.1fMB/s bytes=%d", rate(msgs, median), float64(res.Literals)/median.Seconds()/1e6, res.Literals)
	}
	fmt.Fprintf(stdout, "imap label=%s addr=%s op=%s msgs=%d repeat=%d median=%s min=%s max=%s runs=%s%s%s\n",
		field(label), addr, op.name, msgs, repeat, ms(median), ms(durs[0]), ms(durs[len(durs)-1]),
		strings.Join(runs, ","), extra, cpuField)
	return nil
}

// idleEvent is one EXISTS seen by an idle session.
type idleEvent struct {
	exists int
	at     time.Time
}

func runIMAPIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("imap-idle", stderr)
	addr := fs.String("addr", defaultIMAPAddr, "IMAP server `host:port` (plain, LOGIN)")
	user := fs.String("user", defaultIdleIMAPUser, "login of every session; %d is replaced by the session number")
	pass := fs.String("pass", "", "password of every login")
	conns := fs.Int("conns", defaultIdleConns, "sessions to open, select INBOX in and hold in IDLE")
	parallel := fs.Int("parallel", defaultIdleParallel, "logins in flight at once")
	hold := fs.Duration("hold", 10*time.Second, "how long to hold the sessions in IDLE before pushing")
	settle := fs.Duration("settle", defaultIdleSettle, "pause before each memory reading")
	pushSMTP := fs.String("push-smtp", "", "SMTP `host:port`: deliver -pushes messages to -push-rcpt and time each EXISTS from the 250")
	pushRcpt := fs.String("push-rcpt", "", "recipient of the pushed messages (default: -user)")
	pushes := fs.Int("pushes", defaultPushes, "messages to push, one at a time")
	pushWait := fs.Duration("push-wait", defaultPushWait, "bound on one push reaching every session")
	cmdTimeout := fs.Duration("cmd-timeout", defaultCmdTimeout, "bound on each command and reply")
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
	if *conns < 1 || *parallel < 1 || *hold < 0 || *timeout <= *hold || *cmdTimeout <= 0 || *pushes < 0 || *pushWait <= 0 {
		fmt.Fprintln(stderr, "imap-idle: -conns and -parallel must be positive, -timeout longer than -hold")
		return errUsage
	}
	if *pushRcpt == "" {
		*pushRcpt = *user
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var beforeBytes, heldBytes int64
	memory := func(b *int64) rssValue {
		if len(pid) == 0 {
			return ""
		}
		sleepCtx(ctx, *settle)
		*b, _ = readRSS(pid, *pidTree)
		return rssField(pid, *pidTree)
	}
	rssBefore := memory(&beforeBytes)

	type session struct {
		c      *imapClient
		tag    string
		exists int
		events chan idleEvent
		ended  chan error
	}
	sessions := make([]*session, *conns)
	rec := newRecorder(*conns)
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range *conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			login := strings.ReplaceAll(*user, "%d", strconv.Itoa(i))
			t := time.Now()
			c, err := dialIMAP(ctx, *addr, *cmdTimeout)
			if err != nil {
				rec.fail(err)
				return
			}
			n := 0
			var tag string
			err = c.login(login, *pass)
			if err == nil {
				n, err = c.selectInbox()
			}
			if err == nil {
				tag, err = c.idle()
			}
			if err != nil {
				c.Close()
				rec.fail(err)
				return
			}
			rec.ok(time.Since(t))
			sessions[i] = &session{c: c, tag: tag, exists: n,
				events: make(chan idleEvent, *pushes+4), ended: make(chan error, 1)}
		}()
	}
	wg.Wait()
	openDur := time.Since(t0)
	held, _ := rec.counts()

	// Each session reads its connection until IDLE ends, reporting EXISTS.
	for _, s := range sessions {
		if s == nil {
			continue
		}
		s.c.conn.SetDeadline(time.Time{})
		stop := context.AfterFunc(ctx, func() { s.c.Close() })
		go func() {
			defer stop()
			prefix := []byte(s.tag + " ")
			for {
				line, err := s.c.readLine()
				if err != nil {
					s.ended <- err
					return
				}
				if rest, ok := bytes.CutPrefix(line, prefix); ok {
					if !bytes.HasPrefix(rest, []byte("OK")) {
						err = &imapError{cmd: "IDLE", reply: string(rest)}
					}
					s.ended <- err
					return
				}
				var res imapResult
				res.Exists = -1
				untagged(line, &res)
				if res.Exists >= 0 {
					select {
					case s.events <- idleEvent{exists: res.Exists, at: time.Now()}:
					default:
					}
				}
			}
		}()
	}

	rssHeld := memory(&heldBytes)
	sleepCtx(ctx, *hold-min(*hold, *settle))

	// Push: one message at a time, each timed from its 250 to the EXISTS
	// in every session.
	push := newRecorder(held * *pushes)
	missed, early := 0, 0
	var pushErr error
	for p := range *pushes {
		if *pushSMTP == "" || ctx.Err() != nil {
			break
		}
		t250, err := pushOne(*pushSMTP, *pushRcpt, p, *cmdTimeout)
		if err != nil {
			pushErr = err
			break
		}
		deadline := time.NewTimer(*pushWait)
		expired := false
		for _, s := range sessions {
			if s == nil {
				continue
			}
			want := s.exists + 1
		wait:
			for {
				var ev idleEvent
				if expired {
					// Past the deadline: take only what has arrived.
					select {
					case ev = <-s.events:
					default:
						missed++
						push.fail(fmt.Errorf("push %d: no EXISTS %d within %s", p, want, *pushWait))
						s.exists = want
						break wait
					}
				} else {
					select {
					case ev = <-s.events:
					case <-deadline.C:
						expired = true
						continue
					case <-ctx.Done():
						missed++
						break wait
					}
				}
				if ev.exists < want {
					continue
				}
				s.exists = ev.exists
				// Signed: a server that announces the message before its
				// 250 has reached us gives a negative delay (counted in
				// push_early), kept as it is in the percentiles.
				d := ev.at.Sub(t250)
				if d < 0 {
					early++
				}
				push.ok(d)
				break wait
			}
		}
		deadline.Stop()
	}

	// End IDLE, log out; a session the server dropped counts in dropped.
	dropped := 0
	var mu sync.Mutex
	for _, s := range sessions {
		if s == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.c.conn.SetDeadline(time.Now().Add(*cmdTimeout))
			_, err := io.WriteString(s.c.conn, "DONE\r\n")
			if err == nil {
				select {
				case err = <-s.ended:
				case <-time.After(*cmdTimeout):
					err = errors.New("IDLE: no reply to DONE")
				}
			}
			if err == nil {
				err = s.c.logout()
			}
			s.c.Close()
			if err != nil {
				mu.Lock()
				dropped++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var afterBytes int64
	rssAfter := memory(&afterBytes)

	_, errs := rec.counts()
	delta := ""
	if len(pid) > 0 && heldBytes > 0 && beforeBytes > 0 {
		delta = " rss_delta=" + mib(heldBytes-beforeBytes)
	}
	pushFields := ""
	if *pushSMTP != "" {
		got, _ := push.counts()
		p50, p90, p99, pmax := push.percentiles()
		pushFields = fmt.Sprintf(" pushes=%d push_seen=%d push_missed=%d push_early=%d push_p50=%s push_p90=%s push_p99=%s push_max=%s",
			*pushes, got, missed, early, ms(p50), ms(p90), ms(p99), ms(pmax))
	}
	fmt.Fprintf(stdout, "imap-idle label=%s addr=%s conns=%d held=%d errors=%d dropped=%d open_dur=%s hold=%s login_%s%s%s%s%s%s\n",
		field(*label), *addr, *conns, held, errs, dropped, secs(openDur), *hold,
		strings.Replace(rec.latencyFields(), " ", " login_", -1),
		rssBefore.prefixed(" rss_before="), rssHeld.prefixed(" rss_held="), rssAfter.prefixed(" rss_after="), delta, pushFields)
	rec.printErrors(stderr, "imap-idle")
	push.printErrors(stderr, "imap-idle push")
	if pushErr != nil {
		return fmt.Errorf("imap-idle: %w", pushErr)
	}
	if errs+dropped+missed > *maxErrors {
		return fmt.Errorf("imap-idle: %d failed sessions, %d dropped, %d pushes not seen (allowed %d)", errs, dropped, missed, *maxErrors)
	}
	return ctx.Err()
}

// pushOne delivers one small message by SMTP and returns when the 250 to
// its DATA arrived.
func pushOne(addr, rcpt string, seq int, timeout time.Duration) (time.Time, error) {
	spec := messageSpec{From: defaultFrom, To: []string{rcpt}, Size: 1024, RunID: newRunID()}
	msg, err := newGenerator(spec, newCorpus(uint64(seq))).message(seq, time.Now())
	if err != nil {
		return time.Time{}, err
	}
	c, err := smtp.Dial(addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	defer c.Close()
	c.CommandTimeout = timeout
	c.SubmissionTimeout = timeout
	if err := c.Hello("mailbench.invalid"); err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	if err := c.Mail(defaultFrom, nil); err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	if err := w.Close(); err != nil {
		return time.Time{}, fmt.Errorf("push: %w", err)
	}
	t250 := time.Now()
	c.Quit()
	return t250, nil
}
