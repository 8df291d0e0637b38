package main

import (
	"net"
	"strconv"
	"time"

	"mailbox/imap"
	"mailbox/pop3"
	"mailbox/smtp"
	"mailbox/web"
)

// services lists every [listen] key in the order they are reported, with
// how each server is built. A protocol package joins in four steps:
//  1. fill in build for its listeners below (implicit-TLS ones keep alpn);
//  2. add a [section] struct of its limits and timeouts to Config, with
//     defaults from the package's Default* constants in defaultConfig;
//  3. map that section to the package's Options in a func like smtpOptions;
//  4. list the new keys, with their defaults, in the README's configuration
//     reference (TestREADMEListsEveryKey fails until they are).
func services() []service {
	return []service{
		{key: "smtp", what: "SMTP, inbound mail (MX), STARTTLS",
			build: func(d *deps) (server, error) { return smtp.New(smtpOptions(d, smtp.ModeMX)), nil }},
		{key: "submission", what: "SMTP submission, STARTTLS + AUTH",
			build: func(d *deps) (server, error) { return smtp.New(smtpOptions(d, smtp.ModeSubmission)), nil }},
		{key: "submissions", what: "SMTP submission, implicit TLS + AUTH", alpn: "smtp",
			build: func(d *deps) (server, error) { return smtp.New(smtpOptions(d, smtp.ModeSubmissions)), nil }},
		{key: "pop3", what: "POP3, STLS",
			build: func(d *deps) (server, error) { return d.pop3(), nil }},
		{key: "pop3s", what: "POP3, implicit TLS", alpn: "pop3",
			build: func(d *deps) (server, error) { return d.pop3(), nil }},
		{key: "imap", what: "IMAP, STARTTLS",
			build: func(d *deps) (server, error) { return d.imap(), nil }},
		{key: "imaps", what: "IMAP, implicit TLS", alpn: "imap",
			build: func(d *deps) (server, error) { return d.imap(), nil }},
		{key: "http", what: "HTTP: redirect to HTTPS, ACME HTTP-01",
			build: func(d *deps) (server, error) { return d.web(), nil }},
		{key: "https", what: "HTTPS: webmail, autoconfig, ACME TLS-ALPN-01", serveTLS: true,
			build: func(d *deps) (server, error) { return d.web(), nil }},
	}
}

func defaultSMTPConfig() SMTPConfig {
	return SMTPConfig{
		MaxMessageSize:      smtp.DefaultMaxMessageBytes,
		MaxRecipients:       smtp.DefaultMaxRecipients,
		MaxLineLength:       smtp.DefaultMaxLineBytes,
		ReadTimeout:         Duration(smtp.DefaultReadTimeout),
		WriteTimeout:        Duration(smtp.DefaultWriteTimeout),
		DataTimeout:         Duration(smtp.DefaultDataTimeout),
		MaxConnections:      smtp.DefaultMaxConns,
		MaxConnectionsPerIP: smtp.DefaultMaxConnsPerIP,
		MaxCommands:         smtp.DefaultMaxCommands,
		MaxErrors:           smtp.DefaultMaxErrors,
	}
}

// smtpOptions builds one SMTP service's Options from [smtp] and [auth].
func smtpOptions(d *deps, mode smtp.Mode) smtp.Options {
	c := d.cfg.SMTP
	var inbound *smtp.InboundPolicy
	if in := d.cfg.Inbound; mode == smtp.ModeMX && in.Checks {
		inbound = &smtp.InboundPolicy{Resolver: d.resolver(), RejectDMARC: in.DMARCReject, QuarantineDMARC: in.DMARCQuarantine}
	}
	return smtp.Options{
		Inbound:         inbound,
		Store:           d.store,
		TLS:             d.tls.Config("smtp"),
		Logger:          d.log,
		Limiter:         d.limiter,
		Hostname:        d.cfg.Hostname,
		Mode:            mode,
		MaxMessageBytes: int64(c.MaxMessageSize),
		MaxRecipients:   c.MaxRecipients,
		MaxLineBytes:    int(c.MaxLineLength),
		ReadTimeout:     time.Duration(c.ReadTimeout),
		WriteTimeout:    time.Duration(c.WriteTimeout),
		DataTimeout:     time.Duration(c.DataTimeout),
		MaxConns:        c.MaxConnections,
		MaxConnsPerIP:   c.MaxConnectionsPerIP,
		MaxCommands:     c.MaxCommands,
		MaxErrors:       c.MaxErrors,
		AllowPlaintext:  d.cfg.Auth.AllowPlaintext,
	}
}

func defaultPOP3Config() POP3Config {
	return POP3Config{
		IdleTimeout:         Duration(pop3.DefaultIdleTimeout),
		AuthTimeout:         Duration(pop3.DefaultAuthTimeout),
		MaxLineLength:       pop3.DefaultMaxLineBytes,
		MaxConnections:      pop3.DefaultMaxConns,
		MaxConnectionsPerIP: pop3.DefaultMaxConnsPerIP,
		MaxErrors:           pop3.DefaultMaxErrors,
	}
}

// pop3 returns the one POP3 server that serves both the pop3 and the pop3s
// listener, so its connection limits cover both.
func (d *deps) pop3() *pop3.Server {
	if d.pop3Server == nil {
		c := d.cfg.POP3
		d.pop3Server = pop3.New(pop3.Options{
			Store:          d.store,
			TLS:            d.tls.Config("pop3"),
			Logger:         d.log,
			Limiter:        d.limiter,
			Hostname:       d.cfg.Hostname,
			AllowPlaintext: d.cfg.Auth.AllowPlaintext,
			IdleTimeout:    time.Duration(c.IdleTimeout),
			AuthTimeout:    time.Duration(c.AuthTimeout),
			MaxLineBytes:   int(c.MaxLineLength),
			MaxConns:       c.MaxConnections,
			MaxConnsPerIP:  c.MaxConnectionsPerIP,
			MaxErrors:      c.MaxErrors,
		})
	}
	return d.pop3Server
}

func defaultIMAPConfig() IMAPConfig {
	return IMAPConfig{
		IdleTimeout:         Duration(imap.DefaultIdleTimeout),
		AuthTimeout:         Duration(imap.DefaultAuthTimeout),
		WriteTimeout:        Duration(imap.DefaultWriteTimeout),
		MaxConnections:      imap.DefaultMaxConns,
		MaxConnectionsPerIP: imap.DefaultMaxConnsPerIP,
		MaxPendingUpdates:   imap.DefaultMaxPendingUpdates,
	}
}

// imap returns the one IMAP server that serves both the imap and the imaps
// listener, so its connection limits cover both.
func (d *deps) imap() *imap.Server {
	if d.imapServer == nil {
		c := d.cfg.IMAP
		appendLimit := int64(c.AppendLimit)
		if appendLimit == 0 {
			appendLimit = int64(d.cfg.SMTP.MaxMessageSize) // 0 there too: imap's default
		}
		d.imapServer = imap.New(imap.Options{
			Store:          d.store,
			TLS:            d.tls.Config("imap"),
			Logger:         d.log,
			Limiter:        d.limiter,
			Hostname:       d.cfg.Hostname,
			AllowPlaintext: d.cfg.Auth.AllowPlaintext,
			IdleTimeout:    time.Duration(c.IdleTimeout),
			AuthTimeout:    time.Duration(c.AuthTimeout),
			WriteTimeout:   time.Duration(c.WriteTimeout),
			MaxConns:       c.MaxConnections,
			MaxConnsPerIP:  c.MaxConnectionsPerIP,
			AppendLimit:    appendLimit,

			MaxPendingUpdates: c.MaxPendingUpdates,
		})
	}
	return d.imapServer
}

func defaultWebConfig() WebConfig {
	return WebConfig{
		SessionIdle:       Duration(web.DefaultSessionIdle),
		PageSize:          web.DefaultPageSize,
		MaxMessageSize:    web.DefaultMaxMessageBytes,
		ReadHeaderTimeout: Duration(web.DefaultReadHeaderTimeout),
		IdleTimeout:       Duration(web.DefaultIdleTimeout),
		EventsKeepAlive:   Duration(web.DefaultEventsKeepAlive),
	}
}

// web returns the one web server behind both the http and the https
// listener: sessions, event streams and metrics are shared.
func (d *deps) web() *web.Server {
	if d.webServer == nil {
		c := d.cfg.Web
		d.webServer = web.New(web.Options{
			Store:             d.store,
			TLS:               d.tls,
			Logger:            d.log,
			Limiter:           d.limiter,
			Hostname:          d.cfg.Hostname,
			SessionIdle:       time.Duration(c.SessionIdle),
			PageSize:          c.PageSize,
			MaxMessageBytes:   int64(c.MaxMessageSize),
			ReadHeaderTimeout: time.Duration(c.ReadHeaderTimeout),
			IdleTimeout:       time.Duration(c.IdleTimeout),
			EventsKeepAlive:   time.Duration(c.EventsKeepAlive),
			Ports: web.Ports{
				HTTPS:         d.port("https"),
				IMAP:          d.port("imap"),
				IMAPS:         d.port("imaps"),
				POP3:          d.port("pop3"),
				POP3S:         d.port("pop3s"),
				Submission:    d.port("submission"),
				SubmissionTLS: d.port("submissions"),
			},
		})
	}
	return d.webServer
}

// port is the port a listener is bound to, for the webmail's settings page
// and its HTTP to HTTPS redirect; -1 when the listener is off.
func (d *deps) port(key string) int {
	addr, ok := d.bound[key]
	if !ok {
		return -1
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 {
		return -1
	}
	return n
}
