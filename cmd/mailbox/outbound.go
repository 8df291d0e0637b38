package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"mailbox/smtp"
	"mailbox/store"
)

// DNSConfig is the [dns] section: where every DNS lookup goes.
type DNSConfig struct {
	// Resolver is "host:port" of a DNS server to ask instead of the
	// system's (e.g. a local validating unbound); "" uses /etc/resolv.conf.
	Resolver string   `toml:"resolver"`
	Timeout  Duration `toml:"timeout"`
}

// OutboundConfig is the [outbound] section: sending mail to other servers
// and what each account may send.
type OutboundConfig struct {
	Smarthost             string   `toml:"smarthost"`
	SmarthostTLS          string   `toml:"smarthost_tls"`
	SmarthostUser         string   `toml:"smarthost_user"`
	SmarthostPasswordFile string   `toml:"smarthost_password_file"`
	MXPort                int      `toml:"mx_port"`
	RequireTLS            bool     `toml:"require_tls"`
	MTASTS                bool     `toml:"mta_sts"`
	MTASTSPort            int      `toml:"mta_sts_port"`
	MTASTSCAFile          string   `toml:"mta_sts_ca_file"`
	DKIMSelector          string   `toml:"dkim_selector"`
	QueueLifetime         Duration `toml:"queue_lifetime"`
	DelayWarning          Duration `toml:"delay_warning"`
	RetryMin              Duration `toml:"retry_min"`
	RetryMax              Duration `toml:"retry_max"`
	MaxConnections        int      `toml:"max_connections"`
	MaxConnectionsPerHost int      `toml:"max_connections_per_domain"`
	MessagesPerHour       int      `toml:"messages_per_hour"`
	MessagesPerDay        int      `toml:"messages_per_day"`
	RecipientsPerMessage  int      `toml:"recipients_per_message"`
}

// InboundConfig is the [inbound] section: the checks port 25 makes on
// mail from other servers.
type InboundConfig struct {
	// Checks turns SPF, DKIM and DMARC evaluation (and the
	// Authentication-Results header) on.
	Checks bool `toml:"checks"`
	// DMARCReject refuses mail failing DMARC of a p=reject domain with
	// 550 5.7.1; off, such mail goes to Junk.
	DMARCReject bool `toml:"dmarc_reject"`
	// DMARCQuarantine files mail failing DMARC of a p=quarantine domain in
	// Junk; off, it goes to the INBOX.
	DMARCQuarantine bool `toml:"dmarc_quarantine"`
}

// Sending limits per account; generous for people, tight enough to stop
// a stolen password from sending a spam run.
const (
	defaultMessagesPerHour      = 200
	defaultMessagesPerDay       = 1000
	defaultRecipientsPerMessage = 100
)

func defaultDNSConfig() DNSConfig {
	return DNSConfig{Timeout: Duration(smtp.DefaultDNSTimeout)}
}

func defaultOutboundConfig() OutboundConfig {
	return OutboundConfig{
		SmarthostTLS:          "starttls",
		MXPort:                smtp.DefaultMXPort,
		MTASTS:                true,
		MTASTSPort:            smtp.DefaultMTASTSPort,
		DKIMSelector:          smtp.DefaultDKIMSelector,
		QueueLifetime:         Duration(smtp.DefaultQueueLifetime),
		DelayWarning:          Duration(smtp.DefaultDelayWarning),
		RetryMin:              Duration(smtp.DefaultRetryMin),
		RetryMax:              Duration(smtp.DefaultRetryMax),
		MaxConnections:        smtp.DefaultMaxOutboundConns,
		MaxConnectionsPerHost: smtp.DefaultMaxConnsPerDomain,
		MessagesPerHour:       defaultMessagesPerHour,
		MessagesPerDay:        defaultMessagesPerDay,
		RecipientsPerMessage:  defaultRecipientsPerMessage,
	}
}

// validateOutbound checks [dns] and [outbound].
func (c *Config) validateOutbound() error {
	if r := c.DNS.Resolver; r != "" {
		if _, _, err := net.SplitHostPort(r); err != nil {
			return configErrorf("dns.resolver: %q: want host:port", r)
		}
	}
	o := c.Outbound
	if o.Smarthost != "" {
		if _, _, err := net.SplitHostPort(o.Smarthost); err != nil {
			return configErrorf("outbound.smarthost: %q: want host:port", o.Smarthost)
		}
	}
	switch o.SmarthostTLS {
	case "starttls", "tls", "none":
	default:
		return configErrorf(`outbound.smarthost_tls: %q: want "starttls", "tls" or "none"`, o.SmarthostTLS)
	}
	if o.SmarthostUser != "" && o.SmarthostPasswordFile == "" {
		return configErrorf(`outbound.smarthost_password_file: "": required with outbound.smarthost_user`)
	}
	if o.SmarthostUser != "" && o.SmarthostTLS == "none" {
		return configErrorf(`outbound.smarthost_tls: "none": a password is never sent without TLS`)
	}
	if o.MXPort > 65535 {
		return configErrorf("outbound.mx_port: %d: not a port", o.MXPort)
	}
	if o.MTASTSPort > 65535 {
		return configErrorf("outbound.mta_sts_port: %d: not a port", o.MTASTSPort)
	}
	if o.DKIMSelector != "" {
		if _, err := store.NormalizeDomain(o.DKIMSelector); err != nil || strings.Contains(o.DKIMSelector, ".") {
			return configErrorf("outbound.dkim_selector: %q: want one DNS label (letters, digits, -)", o.DKIMSelector)
		}
	}
	return nil
}

// sendLimits is [outbound]'s per-account limits for store.Options.
func sendLimits(cfg *Config) store.SendLimits {
	return store.SendLimits{
		MessagesPerHour:      cfg.Outbound.MessagesPerHour,
		MessagesPerDay:       cfg.Outbound.MessagesPerDay,
		RecipientsPerMessage: cfg.Outbound.RecipientsPerMessage,
	}
}

// resolver is the one DNS resolver of the process.
func (d *deps) resolver() smtp.Resolver {
	if d.dns == nil {
		d.dns = smtp.NewResolver(d.cfg.DNS.Resolver, time.Duration(d.cfg.DNS.Timeout))
	}
	return d.dns
}

// startRunner starts the outbound queue runner.
func startRunner(ctx context.Context, d *deps) (*smtp.Runner, error) {
	o := d.cfg.Outbound
	sh := smtp.Smarthost{Addr: o.Smarthost, TLS: o.SmarthostTLS, Username: o.SmarthostUser}
	if o.SmarthostPasswordFile != "" {
		pw, err := os.ReadFile(o.SmarthostPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("outbound.smarthost_password_file: %w", err)
		}
		sh.Password = strings.TrimRight(string(pw), "\r\n")
	}
	roots, err := mtaSTSRoots(o.MTASTSCAFile)
	if err != nil {
		return nil, err
	}
	r := smtp.NewRunner(smtp.RunnerOptions{
		Store:             d.store,
		Logger:            d.log,
		Hostname:          d.cfg.Hostname,
		Resolver:          d.resolver(),
		MXPort:            o.MXPort,
		Smarthost:         sh,
		RequireTLS:        o.RequireTLS,
		NoMTASTS:          !o.MTASTS,
		MTASTSRoots:       roots,
		MTASTSPort:        o.MTASTSPort,
		DKIMSelector:      o.DKIMSelector,
		MaxConns:          o.MaxConnections,
		MaxConnsPerDomain: o.MaxConnectionsPerHost,
		RetryMin:          time.Duration(o.RetryMin),
		RetryMax:          time.Duration(o.RetryMax),
		QueueLifetime:     time.Duration(o.QueueLifetime),
		DelayWarning:      time.Duration(o.DelayWarning),
	})
	if err := r.Start(ctx); err != nil {
		return nil, fmt.Errorf("outbound queue: %w", err)
	}
	return r, nil
}

// mtaSTSRoots is the system's roots plus the CA certificates in file (PEM),
// or nil (the system's roots) when file is "".
func mtaSTSRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("outbound.mta_sts_ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("outbound.mta_sts_ca_file: %s: no PEM certificate", file)
	}
	return pool, nil
}

func queueListCommand() *command {
	var domain string
	var limit int
	return &command{
		path: "queue list", maxArgs: 0,
		summary: "list mail waiting for other servers",
		help: `queue list prints one line per queued recipient: id, age, attempts, next
attempt, sender, recipient and the last error. Ids go to 'queue retry' and
'queue delete'.`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&domain, "domain", "", "only recipients in this domain")
			fs.IntVar(&limit, "limit", 0, "at most this many lines (0: all)")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				q, err := st.Queue(ctx, store.QueueFilter{Domain: domain, Limit: limit})
				if err != nil {
					return err
				}
				now := time.Now()
				w := bufio.NewWriterSize(c.stdout, 64<<10)
				var line []byte // one line, built without fmt: 100,000 lines add up
				fmt.Fprintf(w, "%-8s %-6s %-3s %-8s %-30s %-30s %s\n", "ID", "AGE", "TRY", "NEXT", "SENDER", "RECIPIENT", "LAST ERROR")
				for _, e := range q {
					next := "now"
					if e.Sending {
						next = "sending"
					} else if d := e.NextAttempt.Sub(now); d > 0 {
						next = shortDuration(d)
					}
					sender := e.Sender
					if sender == "" {
						sender = "<>"
					}
					line = line[:0]
					line = pad(strconv.AppendInt(line, e.ID, 10), 9)
					line = pad(append(line, shortDuration(now.Sub(e.Created))...), 16)
					line = pad(strconv.AppendInt(line, int64(e.Attempts), 10), 20)
					line = pad(append(line, next...), 29)
					line = pad(append(line, sender...), 60)
					line = pad(append(line, e.Recipient...), 91)
					line = append(append(line, e.LastError...), '\n')
					w.Write(line)
				}
				fmt.Fprintf(w, "%d entries\n", len(q))
				return w.Flush()
			})
		},
	}
}

func queueRetryCommand() *command {
	return &command{
		path: "queue retry", args: "[ID...]", maxArgs: -1,
		summary: "try queued mail again now (all of it without ids)",
		help: `queue retry makes the given entries (or every entry) due now; a running
server picks them up within a minute.`,
		run: func(ctx context.Context, c *cli, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			return c.withStore(ctx, false, func(st *store.Store) error {
				n, err := st.RetryNow(ctx, ids)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "%d entries due now\n", n)
				return nil
			})
		},
	}
}

func queueDeleteCommand() *command {
	return &command{
		path: "queue delete", args: "ID...", minArgs: 1, maxArgs: -1,
		summary: "drop queued mail without delivering or bouncing it",
		run: func(ctx context.Context, c *cli, args []string) error {
			ids, err := parseIDs(args)
			if err != nil {
				return err
			}
			return c.withStore(ctx, false, func(st *store.Store) error {
				n, err := st.DeleteQueued(ctx, ids)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "deleted %d entries\n", n)
				return nil
			})
		},
	}
}

func domainDNSCommand() *command {
	return &command{
		path: "domain dns", args: "DOMAIN", minArgs: 1, maxArgs: 1,
		summary: "print the DNS records a domain needs, in zone-file form",
		help: `domain dns prints MX, SPF, DKIM (making the domain's keys if it has none
yet), DMARC and the SRV records mail clients use to find the server, for
pasting into the domain's zone. The server's name is 'hostname'.`,
		run: func(ctx context.Context, c *cli, args []string) error {
			st, cfg, err := c.openStore(ctx, false)
			if err != nil {
				return err
			}
			defer st.Close()
			domain, err := store.NormalizeDomain(args[0])
			if err != nil {
				return &usageError{msg: fmt.Sprintf("%q is not a valid domain name", args[0])}
			}
			if ok, err := st.IsLocalDomain(ctx, domain); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("domain %s is not a local domain (mailbox domain add %s)", domain, domain)
			}
			if _, err := smtp.EnsureDKIMKeys(ctx, st, domain, cfg.Outbound.DKIMSelector); err != nil {
				return err
			}
			keys, err := st.DKIMKeys(ctx, domain)
			if err != nil {
				return err
			}
			host := strings.TrimSuffix(cfg.Hostname, ".") + "."
			d := domain + "."
			w := bufio.NewWriterSize(c.stdout, 64<<10)
			fmt.Fprintf(w, "; DNS records for %s (mail server %s)\n", domain, host)
			fmt.Fprintf(w, "%s\t3600\tIN\tMX\t10 %s\n", d, host)
			fmt.Fprintf(w, "%s\t3600\tIN\tTXT\t\"v=spf1 mx ~all\"\n", d)
			for _, k := range keys {
				rec, err := smtp.DKIMRecord(k)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s._domainkey.%s\t3600\tIN\tTXT\t%s\n", k.Selector, d, zoneTXT(rec))
			}
			fmt.Fprintf(w, "_dmarc.%s\t3600\tIN\tTXT\t\"v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:postmaster@%s\"\n", d, domain)
			port := func(addr string, def int) int {
				if _, p, err := net.SplitHostPort(addr); err == nil {
					if n, err := strconv.Atoi(p); err == nil && n > 0 {
						return n
					}
				}
				return def
			}
			// RFC 6186 (and RFC 8314 for the implicit-TLS ones).
			fmt.Fprintf(w, "_submissions._tcp.%s\t3600\tIN\tSRV\t0 1 %d %s\n", d, port(cfg.Listen.Submissions, 465), host)
			fmt.Fprintf(w, "_submission._tcp.%s\t3600\tIN\tSRV\t0 1 %d %s\n", d, port(cfg.Listen.Submission, 587), host)
			fmt.Fprintf(w, "_imaps._tcp.%s\t3600\tIN\tSRV\t0 1 %d %s\n", d, port(cfg.Listen.IMAPS, 993), host)
			fmt.Fprintf(w, "_imap._tcp.%s\t3600\tIN\tSRV\t0 1 %d %s\n", d, port(cfg.Listen.IMAP, 143), host)
			fmt.Fprintf(w, "_pop3s._tcp.%s\t3600\tIN\tSRV\t0 1 %d %s\n", d, port(cfg.Listen.POP3S, 995), host)
			fmt.Fprintf(w, "_pop3._tcp.%s\t3600\tIN\tSRV\t0 1 %d %s\n", d, port(cfg.Listen.POP3, 110), host)
			return w.Flush()
		},
	}
}

// zoneTXT quotes a TXT value for a zone file, split into strings of at
// most 255 bytes (RFC 1035 §3.3.14).
func zoneTXT(v string) string {
	var parts []string
	for len(v) > 0 {
		n := min(len(v), 255)
		parts = append(parts, `"`+v[:n]+`"`)
		v = v[n:]
	}
	return "( " + strings.Join(parts, " ") + " )"
}

// pad appends spaces to b up to width n (at least one).
func pad(b []byte, n int) []byte {
	b = append(b, ' ')
	for len(b) < n {
		b = append(b, ' ')
	}
	return b
}

func parseIDs(args []string) ([]int64, error) {
	ids := make([]int64, 0, len(args))
	for _, a := range args {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n <= 0 {
			return nil, &usageError{msg: fmt.Sprintf("%q is not a queue id", a)}
		}
		ids = append(ids, n)
	}
	return ids, nil
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
