package main

// services lists every [listen] key in the order they are reported, with
// how each server is built. A protocol package joins by filling in build.
func services() []service {
	return []service{
		{key: "smtp", what: "SMTP, inbound mail (MX), STARTTLS"},
		{key: "submission", what: "SMTP submission, STARTTLS + AUTH"},
		{key: "submissions", what: "SMTP submission, implicit TLS + AUTH", alpn: "smtp"},
		{key: "pop3", what: "POP3, STLS"},
		{key: "pop3s", what: "POP3, implicit TLS", alpn: "pop3"},
		{key: "imap", what: "IMAP, STARTTLS"},
		{key: "imaps", what: "IMAP, implicit TLS", alpn: "imap"},
		{key: "http", what: "HTTP: ACME HTTP-01 challenges",
			build: func(d *deps) (server, string, error) { return buildACMEHTTP(d, false) }},
		{key: "https", what: "HTTPS: ACME TLS-ALPN-01 challenges",
			build: func(d *deps) (server, string, error) { return buildACMEHTTP(d, true) }},
	}
}

func defaultSMTPConfig() SMTPConfig { return SMTPConfig{} }

func defaultPOP3Config() POP3Config { return POP3Config{} }
