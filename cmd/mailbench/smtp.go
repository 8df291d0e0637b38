package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Defaults of the smtp subcommand.
const (
	defaultSMTPAddr     = "127.0.0.1:2525"
	defaultConns        = 8
	defaultCount        = 2000
	defaultSize         = 4096 // bytes per message, CRLF line ends
	defaultRcpt         = "bench@bench.test"
	defaultFrom         = "mailbench@mailbench.invalid"
	defaultRunTimeout   = 10 * time.Minute // whole run, sending and verifying
	defaultCmdTimeout   = 60 * time.Second // one command or reply
	defaultPollInterval = 50 * time.Millisecond
	redialPause         = 200 * time.Millisecond // after a failed connect
)

// smtpConfig is the parsed command line of the smtp subcommand.
type smtpConfig struct {
	Addr       string
	Conns      int
	Count      int
	Size       int
	Rcpts      []string
	From       string
	Helo       string
	TLS        bool
	StartTLS   bool
	Insecure   bool
	Auth       string // "user:pass", "" for none
	Timeout    time.Duration
	CmdTimeout time.Duration
	MaxErrors  int
	Label      string
	RareWord   string
	RareEvery  int
	PID        pidList
	PIDTree    bool

	VerifyPOP3 string // POP3 address; "" skips the end-to-end check
	POP3User   string
	POP3Pass   string
	POP3TLS    bool
	Poll       time.Duration
	Cleanup    bool // delete every message of POP3User after the run
}

func runSMTP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg smtpConfig
	var rcpts string
	fs := newFlagSet("smtp", stderr)
	fs.StringVar(&cfg.Addr, "addr", defaultSMTPAddr, "SMTP server `host:port`")
	fs.IntVar(&cfg.Conns, "conns", defaultConns, "concurrent persistent connections")
	fs.IntVar(&cfg.Count, "count", defaultCount, "messages to send in total")
	fs.IntVar(&cfg.Size, "size", defaultSize, "exact message size in `bytes` (CRLF line ends)")
	fs.StringVar(&rcpts, "rcpt", defaultRcpt, "comma-separated recipients of every message")
	fs.StringVar(&cfg.From, "from", defaultFrom, "envelope and header sender")
	fs.StringVar(&cfg.Helo, "helo", "mailbench.invalid", "EHLO name")
	fs.BoolVar(&cfg.TLS, "tls", false, "implicit TLS (submissions, port 465)")
	fs.BoolVar(&cfg.StartTLS, "starttls", false, "STARTTLS after EHLO")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "do not verify the server certificate")
	fs.StringVar(&cfg.Auth, "auth", "", "AUTH PLAIN as `user:pass`")
	fs.DurationVar(&cfg.Timeout, "timeout", defaultRunTimeout, "bound on the whole run (sending and -verify-pop3)")
	fs.DurationVar(&cfg.CmdTimeout, "cmd-timeout", defaultCmdTimeout, "bound on each SMTP command or POP3 reply")
	fs.IntVar(&cfg.MaxErrors, "max-errors", 0, "exit non-zero when more messages than this fail")
	fs.StringVar(&cfg.Label, "label", "", "free text copied into the summary line (e.g. the server's name)")
	fs.StringVar(&cfg.RareWord, "rare-word", defaultRareWord, "word that opens the body of every -rare-every-th message (\"\": none)")
	fs.IntVar(&cfg.RareEvery, "rare-every", defaultRareEvery, "messages 0, N, 2N, ... of the run carry -rare-word")
	fs.Var(&cfg.PID, "pid", "server `PID`s (comma-separated): print its CPU time used during the run and its resident memory before and after")
	fs.BoolVar(&cfg.PIDTree, "pid-tree", false, "with -pid: sum the proportional set size (Pss) of the process and all its descendants")
	fs.StringVar(&cfg.VerifyPOP3, "verify-pop3", "", "POP3 `host:port`: poll STAT until every accepted message is visible")
	fs.StringVar(&cfg.POP3User, "pop3-user", "", "POP3 login for -verify-pop3 (default: the first -rcpt)")
	fs.StringVar(&cfg.POP3Pass, "pop3-pass", "", "POP3 password for -verify-pop3")
	fs.BoolVar(&cfg.POP3TLS, "pop3-tls", false, "implicit TLS for -verify-pop3")
	fs.DurationVar(&cfg.Poll, "poll", defaultPollInterval, "interval between -verify-pop3 STAT polls (each is a login)")
	fs.BoolVar(&cfg.Cleanup, "cleanup", false, "with -verify-pop3: afterwards DELE every message of -pop3-user (all of them, not only this run's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for r := range strings.SplitSeq(rcpts, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.Rcpts = append(cfg.Rcpts, r)
		}
	}
	if cfg.POP3User == "" && len(cfg.Rcpts) > 0 {
		cfg.POP3User = cfg.Rcpts[0]
	}
	switch {
	case cfg.Conns < 1 || cfg.Count < 1 || cfg.Size < 1:
		fmt.Fprintln(stderr, "smtp: -conns, -count and -size must be positive")
		return errUsage
	case len(cfg.Rcpts) == 0:
		fmt.Fprintln(stderr, "smtp: -rcpt needs at least one address")
		return errUsage
	case cfg.TLS && cfg.StartTLS:
		fmt.Fprintln(stderr, "smtp: -tls and -starttls exclude each other")
		return errUsage
	case cfg.Auth != "" && !strings.Contains(cfg.Auth, ":"):
		fmt.Fprintln(stderr, "smtp: -auth wants user:pass")
		return errUsage
	case cfg.Timeout <= 0 || cfg.CmdTimeout <= 0 || cfg.Poll <= 0:
		fmt.Fprintln(stderr, "smtp: -timeout, -cmd-timeout and -poll must be positive")
		return errUsage
	}
	return benchSMTP(ctx, cfg, stdout, stderr)
}

// newRunID returns a short random token that makes this run's Message-IDs
// and subjects unique.
func newRunID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// smtpResult is what one smtp run measured.
type smtpResult struct {
	sent, accepted int
	dur            time.Duration // first MAIL to last DATA reply
	e2eDur         time.Duration // first MAIL to all accepted visible over POP3
	visible        int           // new messages seen by the last poll
	verified       bool          // every accepted message was seen
}

func benchSMTP(ctx context.Context, cfg smtpConfig, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	spec := messageSpec{From: cfg.From, To: cfg.Rcpts, Size: cfg.Size, RunID: newRunID(), RareWord: cfg.RareWord, RareEvery: cfg.RareEvery}
	seed := binary.LittleEndian.Uint64([]byte(spec.RunID + "\x00\x00\x00\x00"))
	body := newCorpus(seed)
	if minSize := newGenerator(spec, body).minSize(cfg.Count - 1); cfg.Size < minSize {
		return fmt.Errorf("smtp: -size %d is below the %d bytes these headers need", cfg.Size, minSize)
	}

	pop3 := pop3Options{Addr: cfg.VerifyPOP3, TLS: cfg.POP3TLS, Insecure: cfg.Insecure, Timeout: cfg.CmdTimeout}
	base := 0
	if cfg.VerifyPOP3 != "" {
		n, err := pop3Count(ctx, pop3, cfg.POP3User, cfg.POP3Pass)
		if err != nil {
			return fmt.Errorf("smtp: -verify-pop3 before sending: %w", err)
		}
		base = n
	}
	rssBefore := rssField(cfg.PID, cfg.PIDTree)
	cpu := startCPU(cfg.PID, cfg.PIDTree)

	rec := newRecorder(cfg.Count)
	var next atomic.Int64 // next message sequence number to send
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(cfg.Conns)
	done.Add(cfg.Conns)
	for range cfg.Conns {
		w := &smtpWorker{cfg: cfg, gen: newGenerator(spec, body), rec: rec}
		go func() {
			defer done.Done()
			w.connect(ctx) // a failure here is retried and counted per message
			ready.Done()
			<-start
			w.run(ctx, &next)
		}()
	}
	ready.Wait()

	t0 := time.Now()
	var res smtpResult
	var poll sync.WaitGroup
	sendingDone := make(chan struct{})
	if cfg.VerifyPOP3 != "" {
		poll.Add(1)
		go func() {
			defer poll.Done()
			res.visible, res.e2eDur, res.verified = pollVisible(ctx, cfg, pop3, base, t0, sendingDone, rec, stderr)
		}()
	}
	close(start)
	done.Wait()
	res.dur = time.Since(t0)
	close(sendingDone)
	poll.Wait()

	res.accepted, _ = rec.counts()
	res.sent = min(int(next.Load()), cfg.Count)
	_, errs := rec.counts()

	e2e, e2eDur, visible := "-", "-", "-"
	if cfg.VerifyPOP3 != "" {
		visible = fmt.Sprintf("%d/%d", res.visible, res.accepted)
		if res.verified {
			e2e, e2eDur = rate(res.accepted, res.e2eDur), secs(res.e2eDur)
		}
	}
	fmt.Fprintf(stdout, "smtp label=%s addr=%s conns=%d size=%d count=%d sent=%d accepted=%d errors=%d dur=%s rate=%s e2e=%s e2e_dur=%s visible=%s %s%s%s%s\n",
		field(cfg.Label), cfg.Addr, cfg.Conns, cfg.Size, cfg.Count, res.sent, res.accepted, errs,
		secs(res.dur), rate(res.accepted, res.dur), e2e, e2eDur, visible, rec.latencyFields(),
		cpu.field(), rssBefore.prefixed(" rss_before="), rssField(cfg.PID, cfg.PIDTree).prefixed(" rss_after="))
	rec.printErrors(stderr, "smtp")
	if cfg.Cleanup && cfg.VerifyPOP3 != "" {
		if err := pop3DeleteAll(ctx, pop3, cfg.POP3User, cfg.POP3Pass); err != nil {
			return fmt.Errorf("smtp: -cleanup: %w", err)
		}
	}

	switch {
	case errs > cfg.MaxErrors:
		return fmt.Errorf("smtp: %d errors (allowed %d)", errs, cfg.MaxErrors)
	case res.sent < cfg.Count:
		return fmt.Errorf("smtp: sent %d of %d messages before the %s timeout", res.sent, cfg.Count, cfg.Timeout)
	case cfg.VerifyPOP3 != "" && !res.verified:
		return fmt.Errorf("smtp: only %d of %d accepted messages became visible over POP3 within %s", res.visible, res.accepted, cfg.Timeout)
	}
	return nil
}

// pollVisible waits until sending is done, then logs in to POP3 every
// cfg.Poll until base+accepted messages are visible or ctx ends. It returns
// the new messages seen by the last poll, the time from t0 to the poll that
// saw them all, and whether it did.
//
// Nothing is polled while sending: every accepted message must be visible,
// so the goal cannot be reached earlier, and each poll is a login, which
// costs the server a password hash (mailbox: argon2id) that would otherwise
// be taken from the ingest being measured.
func pollVisible(ctx context.Context, cfg smtpConfig, o pop3Options, base int, t0 time.Time,
	sendingDone <-chan struct{}, rec *recorder, stderr io.Writer) (int, time.Duration, bool) {
	select {
	case <-ctx.Done():
		return 0, 0, false
	case <-sendingDone:
	}
	accepted, _ := rec.counts()
	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	visible := 0
	var lastErr error
	for {
		n, err := pop3Count(ctx, o, cfg.POP3User, cfg.POP3Pass)
		if err != nil {
			// A poll that fails (e.g. the maildrop is briefly locked) is
			// retried; only the last failure is reported.
			lastErr = err
		} else {
			visible = n - base
			if visible >= accepted {
				return visible, time.Since(t0), true
			}
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				fmt.Fprintf(stderr, "smtp: last -verify-pop3 poll failed: %v\n", lastErr)
			}
			return visible, 0, false
		case <-tick.C:
		}
	}
}

// smtpWorker sends messages over one persistent connection, reconnecting
// after a connection-level failure.
type smtpWorker struct {
	cfg    smtpConfig
	gen    *generator
	rec    *recorder
	client *smtp.Client
	stop   func() bool // unregisters the context watcher of client
}

func (w *smtpWorker) run(ctx context.Context, next *atomic.Int64) {
	defer w.close(true)
	for ctx.Err() == nil {
		seq := int(next.Add(1) - 1)
		if seq >= w.cfg.Count {
			next.Add(-1) // keep next == messages attempted, for the summary
			return
		}
		if w.client == nil {
			if err := w.connect(ctx); err != nil {
				w.rec.fail(err)
				select {
				case <-ctx.Done():
				case <-time.After(redialPause):
				}
				continue
			}
		}
		msg, err := w.gen.message(seq, time.Now())
		if err != nil {
			w.rec.fail(err)
			continue
		}
		t := time.Now()
		if err := w.send(msg); err != nil {
			w.rec.fail(err)
			w.recover(err)
			continue
		}
		w.rec.ok(time.Since(t))
	}
}

// connect dials, greets and authenticates as configured.
func (w *smtpWorker) connect(ctx context.Context) error {
	tlsConf := &tls.Config{InsecureSkipVerify: w.cfg.Insecure} //nolint:gosec // opt-in for self-signed test servers
	if host, _, err := net.SplitHostPort(w.cfg.Addr); err == nil {
		tlsConf.ServerName = host
	}
	var c *smtp.Client
	var err error
	switch {
	case w.cfg.TLS:
		c, err = smtp.DialTLS(w.cfg.Addr, tlsConf)
	case w.cfg.StartTLS:
		c, err = smtp.DialStartTLS(w.cfg.Addr, tlsConf)
	default:
		c, err = smtp.Dial(w.cfg.Addr)
	}
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	c.CommandTimeout = w.cfg.CmdTimeout
	c.SubmissionTimeout = w.cfg.CmdTimeout
	w.client = c
	w.stop = context.AfterFunc(ctx, func() { c.Close() })
	if err := c.Hello(w.cfg.Helo); err != nil {
		w.close(false)
		return fmt.Errorf("hello: %w", err)
	}
	if w.cfg.Auth != "" {
		user, pass, _ := strings.Cut(w.cfg.Auth, ":")
		if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
			w.close(false)
			return fmt.Errorf("auth: %w", err)
		}
	}
	return nil
}

// send runs one transaction: MAIL, RCPT for each recipient, DATA. After a
// completed DATA the server is ready for the next MAIL (RFC 5321 §4.1.1.4),
// so no RSET is sent between messages; go-smtp's Reset would also force a
// new EHLO.
func (w *smtpWorker) send(msg []byte) error {
	c := w.client
	if err := c.Mail(w.cfg.From, &smtp.MailOptions{Size: int64(len(msg))}); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	for _, r := range w.cfg.Rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return fmt.Errorf("RCPT: %w", err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := wc.Write(msg); err != nil {
		return fmt.Errorf("DATA write: %w", err)
	}
	if err := wc.Close(); err != nil {
		return fmt.Errorf("DATA end: %w", err)
	}
	return nil
}

// recover puts the connection back into a usable state after a failed
// transaction: RSET after an error reply, a new connection after anything
// else (network error or timeout, including while writing DATA, or 421).
func (w *smtpWorker) recover(err error) {
	var smtpErr *smtp.SMTPError
	if errors.As(err, &smtpErr) && smtpErr.Code != 421 {
		if w.client.Reset() == nil {
			return
		}
	}
	w.close(false)
}

// close ends the connection, with QUIT when polite.
func (w *smtpWorker) close(polite bool) {
	if w.client == nil {
		return
	}
	if polite {
		if w.client.Quit() != nil {
			w.client.Close()
		}
	} else {
		w.client.Close()
	}
	w.stop()
	w.client = nil
}
