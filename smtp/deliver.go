package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailbox/store"
)

// remoteError is a reply from the other server that refused something.
type remoteError struct {
	host string
	cmd  string // the command it answered: MAIL, RCPT, DATA, EHLO, greeting
	err  *gosmtp.SMTPError
}

func (e *remoteError) Error() string {
	return fmt.Sprintf("%s said after %s: %s", e.host, e.cmd, e.reply())
}

// reply renders the remote reply as the server sent it.
func (e *remoteError) reply() string {
	s := strconv.Itoa(e.err.Code)
	if e.err.EnhancedCode != gosmtp.NoEnhancedCode && e.err.EnhancedCode != (gosmtp.EnhancedCode{}) {
		c := e.err.EnhancedCode
		s += fmt.Sprintf(" %d.%d.%d", c[0], c[1], c[2])
	}
	return s + " " + e.err.Message
}

// permanentError is a local finding that retrying cannot change (the
// domain does not exist, or says it takes no mail).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// isPermanent says whether err should bounce now rather than be retried:
// a 5xx reply, or a permanentError.
func isPermanent(err error) bool {
	var re *remoteError
	if errors.As(err, &re) {
		return re.err.Code >= 500
	}
	var pe *permanentError
	return errors.As(err, &pe)
}

// remote wraps an error from the go-smtp client: a reply becomes a
// remoteError, anything else (network, timeout) stays as it is and is
// temporary.
func remote(host, cmd string, err error) error {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return &remoteError{host: host, cmd: cmd, err: se}
	}
	return fmt.Errorf("%s: %s: %w", host, cmd, err)
}

// outConn is one client connection to a destination.
type outConn struct {
	c     *gosmtp.Client
	nc    net.Conn // the TCP connection under c
	host  string   // the MX host name (or smarthost) for logs and bounces
	stop  func() bool
	tls   bool
	count int // messages sent on it
}

func (c *outConn) close() {
	c.stop()
	c.c.Close()
}

func (c *outConn) quit() {
	c.stop()
	c.c.Quit() // sends QUIT and closes; the reply does not matter
}

// reset prepares a reused connection for the next message.
func (c *outConn) reset() bool {
	return c.c.Reset() == nil
}

// connect opens a connection for domain: to the smarthost if one is set,
// else to the first MX host that answers, in preference order.
func (r *Runner) connect(ctx context.Context, domain string) (*outConn, error) {
	if sh := r.opts.Smarthost; sh.Addr != "" {
		return r.connectSmarthost(ctx, sh)
	}
	hosts, err := r.mxHosts(ctx, domain)
	if err != nil {
		return nil, err
	}
	var last error
	for _, host := range hosts {
		ips, err := r.opts.Resolver.LookupIPAddr(ctx, host)
		if err != nil {
			last = fmt.Errorf("look up MX host %s: %w", host, err)
			continue
		}
		for _, ip := range ips {
			addr := net.JoinHostPort(ip.IP.String(), strconv.Itoa(r.opts.MXPort))
			c, err := r.dialMX(ctx, host, addr, true)
			if err != nil {
				last = err
				continue
			}
			return c, nil
		}
	}
	if last == nil {
		last = fmt.Errorf("no address for the MX hosts of %s", domain)
	}
	return nil, last
}

// mxHosts lists the hosts that take mail for domain, best first (RFC 5321
// §5.1): its MX records, hosts of equal preference in random order (Go's
// resolver shuffles them), or the domain itself if it has no MX. A null
// MX (RFC 7505) or a domain that does not exist fails for good.
func (r *Runner) mxHosts(ctx context.Context, domain string) ([]string, error) {
	mxs, err := r.opts.Resolver.LookupMX(ctx, domain)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("look up MX of %s: %w", domain, err)
	}
	if len(mxs) == 0 {
		// Implicit MX: the domain's own address records, if it has any.
		ips, aerr := r.opts.Resolver.LookupIPAddr(ctx, domain)
		if aerr != nil {
			if isNotFound(aerr) {
				return nil, &permanentError{fmt.Sprintf("domain %s has no MX and no address (it does not take mail)", domain)}
			}
			return nil, fmt.Errorf("look up address of %s: %w", domain, aerr)
		}
		if len(ips) == 0 {
			return nil, &permanentError{fmt.Sprintf("domain %s has no MX and no address", domain)}
		}
		return []string{domain}, nil
	}
	var hosts []string
	for _, mx := range mxs {
		h := strings.TrimSuffix(mx.Host, ".")
		if h == "" {
			if len(mxs) == 1 {
				return nil, &permanentError{fmt.Sprintf("domain %s accepts no mail (null MX)", domain)}
			}
			continue
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts, nil
}

// dialMX connects to one MX address, says EHLO and starts TLS if the
// server offers it. If the TLS handshake fails it tries once more in
// plain text (unless RequireTLS), as opportunistic TLS allows.
func (r *Runner) dialMX(ctx context.Context, host, addr string, tryTLS bool) (*outConn, error) {
	c, err := r.dial(ctx, host, addr, false)
	if err != nil {
		return nil, err
	}
	if ok, _ := c.c.Extension("STARTTLS"); ok && tryTLS {
		cfg := &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
		if err := r.startTLS(c, cfg); err != nil {
			c.close()
			if r.opts.RequireTLS {
				return nil, fmt.Errorf("%s: STARTTLS: %w", host, err)
			}
			r.log.Info("STARTTLS failed, trying without TLS", "host", host, "err", err)
			return r.dialMX(ctx, host, addr, false)
		}
		c.tls = true
		return c, nil
	}
	if r.opts.RequireTLS {
		c.close()
		return nil, fmt.Errorf("%s does not offer STARTTLS and TLS is required", host)
	}
	return c, nil
}

// dial makes the TCP (or TLS) connection, reads the greeting and says
// EHLO.
func (r *Runner) dial(ctx context.Context, host, addr string, implicitTLS bool) (*outConn, error) {
	dctx, cancel := context.WithTimeout(ctx, r.opts.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (%s): %w", host, addr, err)
	}
	if implicitTLS {
		cfg := r.smarthostTLS(host)
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("%s: TLS: %w", host, err)
		}
		nc = tc
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(r.opts.ConnectTimeout))
	c := gosmtp.NewClient(nc)
	c.CommandTimeout = r.opts.CommandTimeout
	c.SubmissionTimeout = r.opts.DataReplyTimeout
	if err := c.Hello(r.opts.Hostname); err != nil {
		stop()
		c.Close()
		return nil, remote(host, "EHLO", err)
	}
	nc.SetDeadline(time.Time{})
	return &outConn{c: c, nc: nc, host: host, stop: stop, tls: implicitTLS}, nil
}

// startTLS upgrades c with STARTTLS (RFC 3207) and says EHLO again.
// go-smtp's client can only do STARTTLS as its very first command, before
// we could choose our EHLO name, so the command is sent here on the
// connection under it and a new client is made over the TLS connection;
// it is fed a greeting because RFC 3207 §4.2 has the client continue with
// EHLO and no new greeting comes.
func (r *Runner) startTLS(c *outConn, cfg *tls.Config) error {
	nc := c.nc
	nc.SetDeadline(time.Now().Add(r.opts.CommandTimeout))
	if _, err := io.WriteString(nc, "STARTTLS\r\n"); err != nil {
		return err
	}
	br := bufio.NewReaderSize(nc, 1024)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 || !strings.HasPrefix(line, "220") {
			return fmt.Errorf("STARTTLS refused: %s", strings.TrimSpace(line))
		}
		if line[3] == ' ' {
			break
		}
	}
	if br.Buffered() > 0 {
		return errors.New("STARTTLS: data after the reply (command injection?)")
	}
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	nc.SetDeadline(time.Time{})
	cl := gosmtp.NewClient(&greetedConn{Conn: tc, greeting: strings.NewReader("220 TLS\r\n")})
	cl.CommandTimeout = r.opts.CommandTimeout
	cl.SubmissionTimeout = r.opts.DataReplyTimeout
	if err := cl.Hello(r.opts.Hostname); err != nil {
		return remote(c.host, "EHLO", err)
	}
	c.c, c.tls = cl, true
	return nil
}

// greetedConn returns greeting before the connection's own bytes.
type greetedConn struct {
	net.Conn
	greeting *strings.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if g.greeting.Len() > 0 {
		return g.greeting.Read(p)
	}
	return g.Conn.Read(p)
}

func (r *Runner) smarthostTLS(host string) *tls.Config {
	if cfg := r.opts.Smarthost.TLSConfig; cfg != nil {
		cfg = cfg.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		return cfg
	}
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}

// connectSmarthost connects to the relay, with TLS as configured, and
// logs in.
func (r *Runner) connectSmarthost(ctx context.Context, sh Smarthost) (*outConn, error) {
	host, _, err := net.SplitHostPort(sh.Addr)
	if err != nil {
		return nil, &permanentError{fmt.Sprintf("smarthost %q: %v", sh.Addr, err)}
	}
	c, err := r.dial(ctx, host, sh.Addr, sh.TLS == "tls")
	if err != nil {
		return nil, err
	}
	if sh.TLS == "starttls" {
		if ok, _ := c.c.Extension("STARTTLS"); !ok {
			c.close()
			return nil, fmt.Errorf("smarthost %s does not offer STARTTLS", sh.Addr)
		}
		if err := r.startTLS(c, r.smarthostTLS(host)); err != nil {
			c.close()
			return nil, fmt.Errorf("smarthost %s: STARTTLS: %w", sh.Addr, err)
		}
		c.tls = true
	}
	if sh.Username != "" {
		if !c.tls {
			c.close()
			return nil, fmt.Errorf("smarthost %s: refusing to send the password without TLS", sh.Addr)
		}
		if err := c.c.Auth(sasl.NewPlainClient("", sh.Username, sh.Password)); err != nil {
			c.close()
			// A refused login is the operator's to fix; the mail waits
			// (temporary) rather than bouncing.
			var se *gosmtp.SMTPError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("smarthost %s: login refused: %d %s", sh.Addr, se.Code, se.Message)
			}
			return nil, fmt.Errorf("smarthost %s: login: %w", sh.Addr, err)
		}
	}
	return c, nil
}

// send runs one MAIL transaction for j on c and returns the outcome per
// recipient. A non-nil error means the connection broke; every recipient
// without a final answer then carries it.
func (r *Runner) send(ctx context.Context, c *outConn, j *job) ([]outcome, error) {
	data, err := r.message(ctx, j)
	if err != nil {
		return nil, err
	}
	results := make([]outcome, len(j.entries))
	for i, e := range j.entries {
		results[i].entry = e
	}
	setAll := func(err error, which func(o outcome) bool) {
		for i := range results {
			if which(results[i]) {
				results[i].err, results[i].perm = err, isPermanent(err)
			}
		}
	}
	everyone := func(outcome) bool { return true }
	opts := &gosmtp.MailOptions{Size: int64(len(data))}
	if ok, _ := c.c.Extension("8BITMIME"); ok && has8bit(data) {
		opts.Body = gosmtp.Body8BitMIME
	}
	if err := c.c.Mail(j.sender, opts); err != nil {
		err = remote(c.host, "MAIL", err)
		setAll(err, everyone)
		return results, brokenConn(err)
	}
	accepted := 0
	for i := range results {
		if err := c.c.Rcpt(results[i].entry.Recipient, nil); err != nil {
			err = remote(c.host, "RCPT", err)
			if broken := brokenConn(err); broken != nil {
				setAll(err, func(o outcome) bool { return o.err == nil })
				return results, broken
			}
			results[i].err, results[i].perm = err, isPermanent(err)
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return results, nil
	}
	pending := func(o outcome) bool { return o.err == nil }
	w, err := c.c.Data()
	if err != nil {
		err = remote(c.host, "DATA", err)
		setAll(err, pending)
		return results, brokenConn(err)
	}
	if _, err := w.Write(data); err != nil {
		err = remote(c.host, "DATA", err)
		setAll(err, pending)
		return results, err
	}
	if err := w.Close(); err != nil {
		err = remote(c.host, "end of data", err)
		setAll(err, pending)
		return results, brokenConn(err)
	}
	c.count++
	return results, nil
}

// brokenConn returns err if it means the connection is gone (anything but
// a reply from the server), nil if the server answered.
func brokenConn(err error) error {
	var re *remoteError
	if errors.As(err, &re) && re.err.Code != 421 {
		return nil
	}
	return err
}

// message reads the queued message and signs it.
func (r *Runner) message(ctx context.Context, j *job) ([]byte, error) {
	rc, err := r.st.OpenQueued(ctx, j.msgID)
	if err != nil {
		return nil, fmt.Errorf("read queued message: %w", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read queued message: %w", err)
	}
	data = store.NormalizeCRLF(data)
	if r.opts.NoDKIM {
		return data, nil
	}
	sig, err := r.dkim.sign(ctx, data)
	if err != nil {
		// Better unsigned than not at all: receivers judge it by SPF.
		r.log.Warn("DKIM signing failed, sending unsigned", "qid", j.msgID, "err", err)
		return data, nil
	}
	if len(sig) == 0 {
		return data, nil
	}
	return append(sig, data...), nil
}

func has8bit(data []byte) bool {
	return bytes.ContainsFunc(data, func(r rune) bool { return r >= 0x80 })
}
