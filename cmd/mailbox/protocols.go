package main

import (
	"time"

	"mailbox/pop3"
	"mailbox/smtp"
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
		{key: "imap", what: "IMAP, STARTTLS"},
		{key: "imaps", what: "IMAP, implicit TLS", alpn: "imap"},
		{key: "http", what: "HTTP: ACME HTTP-01 challenges", off: acmeOnly,
			build: func(d *deps) (server, error) { return buildACMEHTTP(d, false) }},
		{key: "https", what: "HTTPS: ACME TLS-ALPN-01 challenges", off: acmeOnly,
			build: func(d *deps) (server, error) { return buildACMEHTTP(d, true) }},
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
