package tls_test

import (
	"context"
	cryptotls "crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	mtls "mailbox/tls"
)

// How cmd/mailbox wires one Source into every listener.
func Example() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	src, err := mtls.New(context.Background(), mtls.Options{
		Hostname:  "mail.example.org", // mode defaults to acme for a public name
		Dir:       "/var/lib/mailbox/tls",
		ACMEEmail: "admin@example.org",
		Logger:    log,
	})
	if err != nil {
		log.Error("tls", "err", err)
		return
	}
	defer src.Close()

	// Web: port 80 answers HTTP-01 before anything else (redirects
	// included); port 443 offers h2 and http/1.1, and acme-tls/1 for
	// TLS-ALPN-01 in mode acme.
	site := http.NewServeMux()
	go (&http.Server{Addr: ":80", Handler: src.HTTPHandler(site)}).ListenAndServe()
	go (&http.Server{Addr: ":443", Handler: site, TLSConfig: src.Config("h2", "http/1.1")}).ListenAndServeTLS("", "")

	// Implicit TLS: one ALPN id per service.
	for addr, alpn := range map[string]string{":465": "smtp", ":993": "imap", ":995": "pop3"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("listen", "addr", addr, "err", err)
			return
		}
		_ = cryptotls.NewListener(ln, src.Config(alpn)) // hand to the smtp/imap/pop3 server
	}
	// STARTTLS (25, 587, 143, 110): the same configs, used after the
	// plaintext upgrade command: src.Config("smtp"), src.Config("imap"),
	// src.Config("pop3").

	// SIGHUP re-reads certificate files (mode files).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := src.Reload(); err != nil {
				log.Error("reload certificates", "err", err)
			}
		}
	}()
}
