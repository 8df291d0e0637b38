// Package pop3 is mailbox's POP3 server: RFC 1939 (with LAST from RFC 1460),
// CAPA and response codes (RFC 2449, RFC 3206), STLS (RFC 2595) and SASL
// PLAIN (RFC 5034, RFC 4616) over the INBOX of a store account. It owns the
// wire protocol, sessions, limits and timeouts; accounts, passwords, locks
// and message bytes are the store's, certificates come from the caller.
//
// A session works on a snapshot of INBOX taken at login, under the store's
// per-account maildrop lock. Messages marked with DELE are removed only when
// the client sends QUIT (the UPDATE state), in one store call, before the
// reply; a dropped connection, a timeout or a shutdown removes nothing.
// What a deletion does is the account's choice (store.POP3Delete):
// store.POP3Expunge removes the message, store.POP3Trash moves it to the
// Trash mailbox so IMAP or the webmail can still recover it. Messages
// retrieved with RETR are flagged \Seen at QUIT, as Dovecot does.
//
// UIDL values follow Dovecot's default pop3_uidl_format (see UIDL), so a
// user moving from Dovecot keeps their UIDLs and IMAP shows the same
// identity.
package pop3

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"mailbox/internal/throttle"
	"mailbox/store"
)

// Defaults for zero Options fields.
const (
	// DefaultHostname is the name in the greeting.
	DefaultHostname = "localhost"
	// DefaultIdleTimeout is how long a logged-in client may stay silent
	// (RFC 1939 §3: an autologout timer of at least 10 minutes).
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultAuthTimeout is how long a connection may take, in all, from
	// connect to a successful login, like Dovecot's login timeout.
	DefaultAuthTimeout = 60 * time.Second
	// DefaultMaxLineBytes bounds one command line, CRLF included. Lenient:
	// RFC 2449 §4 says 255, but AUTH PLAIN with a long password needs more.
	DefaultMaxLineBytes = 1000
	// DefaultMaxConns bounds simultaneous connections to one Server.
	DefaultMaxConns = 5000
	// DefaultMaxConnsPerIP bounds simultaneous connections from one client
	// address (IPv6: one /64).
	DefaultMaxConnsPerIP = 100
	// DefaultMaxErrors is how many -ERR replies in a row, or failed
	// logins in one connection, end a session.
	DefaultMaxErrors = 3
)

// Options configures a Server. Zero values mean the documented defaults.
type Options struct {
	// Store holds accounts and mail. Required.
	Store *store.Store
	// TLS enables STLS on plain connections. Nil: STLS is not offered.
	// For POP3S, pass a listener from tls.NewListener to Serve: a
	// connection that is already a *tls.Conn counts as secure.
	TLS *tls.Config
	// Logger receives connection and mail events. Nil discards them.
	Logger *slog.Logger
	// Limiter slows down repeated failed logins. Share one with the other
	// protocols so a client cannot switch protocols to escape it. Nil: a
	// private Limiter with throttle's defaults.
	Limiter *throttle.Limiter
	// Hostname is the server name in the greeting (default DefaultHostname).
	Hostname string
	// AllowPlaintext allows USER/PASS and AUTH PLAIN on unencrypted
	// connections from non-loopback addresses (Dovecot's
	// disable_plaintext_auth = no). Loopback and TLS connections may always
	// use them.
	AllowPlaintext bool
	// IdleTimeout is the autologout timer after login (default
	// DefaultIdleTimeout). It restarts with every command and every write
	// that makes progress.
	IdleTimeout time.Duration
	// AuthTimeout is the time a connection has from connect to a
	// successful login (default DefaultAuthTimeout).
	AuthTimeout time.Duration
	// MaxLineBytes bounds a command line, CRLF included (default
	// DefaultMaxLineBytes). A longer line gets one -ERR and the connection
	// is closed.
	MaxLineBytes int
	// MaxConns and MaxConnsPerIP bound simultaneous connections (defaults
	// DefaultMaxConns and DefaultMaxConnsPerIP; negative: no limit). A
	// connection beyond them gets "-ERR [SYS/TEMP]" and is closed.
	MaxConns      int
	MaxConnsPerIP int
	// MaxErrors is how many -ERR replies in a row, or failed logins in
	// all, close the session after the last reply (default
	// DefaultMaxErrors).
	MaxErrors int
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Limiter == nil {
		o.Limiter = throttle.New(throttle.Options{})
	}
	if o.Hostname == "" {
		o.Hostname = DefaultHostname
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = DefaultAuthTimeout
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConnsPerIP == 0 {
		o.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if o.MaxErrors <= 0 {
		o.MaxErrors = DefaultMaxErrors
	}
	return o
}

// UIDL returns the unique-id listing of a message (RFC 1939 §7) in
// Dovecot's default pop3_uidl_format "%08Xu%08Xv": the message's UID, then
// its INBOX UIDVALIDITY, each as 8 upper-case hex digits. For UID 1 in a
// mailbox with UIDVALIDITY 0x5f3e2a10 it is "000000015F3E2A10".
func UIDL(uidvalidity, uid uint32) string {
	return fmt.Sprintf("%08X%08X", uid, uidvalidity)
}
