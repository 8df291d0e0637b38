package pop3

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"mailbox/store"
)

// plaintextOK reports whether USER/PASS and AUTH PLAIN may be used now:
// on TLS, from loopback, or anywhere when the operator allows it (RFC 2595
// §2.1 lets a server refuse plaintext passwords on an unencrypted link).
func (sess *session) plaintextOK() bool {
	return sess.secure || sess.srv.opts.AllowPlaintext || isLoopback(sess.netConn.RemoteAddr())
}

// capa lists capabilities for the current state (RFC 2449 §5).
func (sess *session) capa(arg string) error {
	if !noArg(arg) {
		return errSyntax
	}
	auth := sess.state == authorization
	sess.writeLine("+OK capability list follows")
	sess.writeLine("TOP")
	if auth && sess.plaintextOK() {
		sess.writeLine("USER")
		sess.writeLine("SASL PLAIN")
	}
	sess.writeLine("RESP-CODES")
	sess.writeLine("AUTH-RESP-CODE")
	sess.writeLine("PIPELINING")
	sess.writeLine("UIDL")
	if auth && sess.srv.opts.TLS != nil && !sess.secure {
		sess.writeLine("STLS")
	}
	sess.writeLine("IMPLEMENTATION mailbox")
	sess.writeLine(".")
	return nil
}

// user remembers the name for PASS. Its reply never says whether the
// account exists.
func (sess *session) user(arg string) error {
	if !sess.plaintextOK() {
		return errPlaintext
	}
	if arg == "" || strings.ContainsAny(arg, " \t") {
		return errSyntax
	}
	sess.userName = arg
	sess.writeLine("+OK send PASS")
	return nil
}

// pass logs in with the name from USER. The password is the whole rest of
// the line, spaces included (RFC 1939 §7).
func (sess *session) pass(arg string) error {
	if sess.userName == "" {
		return errNotNow
	}
	name := sess.userName
	sess.userName = "" // whatever happens, the next attempt starts with USER
	if !sess.plaintextOK() {
		return errPlaintext
	}
	if arg == "" {
		return errSyntax
	}
	return sess.login(name, arg)
}

// auth runs SASL (RFC 5034). PLAIN is the one mechanism; "AUTH" alone lists
// the mechanisms, as RFC 1734 clients expect.
func (sess *session) auth(arg string) error {
	fields := strings.Fields(arg)
	if len(fields) == 0 {
		sess.writeLine("+OK")
		if sess.plaintextOK() {
			sess.writeLine("PLAIN")
		}
		sess.writeLine(".")
		return nil
	}
	if len(fields) > 2 {
		return errSyntax
	}
	if !strings.EqualFold(fields[0], "PLAIN") {
		return errMechanism
	}
	if !sess.plaintextOK() {
		return errPlaintext
	}
	var resp string
	if len(fields) == 2 {
		resp = fields[1]
		if resp == "=" { // RFC 5034 §4: an empty initial response
			resp = ""
		}
	} else {
		sess.writeLine("+ ")
		if err := sess.flush(); err != nil {
			return hangupError{err}
		}
		sess.netConn.SetReadDeadline(sess.deadline())
		line, err := sess.readLine()
		if errors.Is(err, errLineTooLong) {
			sess.hangup, sess.linger = true, true
			return err
		}
		if err != nil {
			return hangupError{err}
		}
		if line == "*" {
			return errCancelled
		}
		resp = line
	}
	data, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return errBadResponse
	}
	// RFC 4616 §2: authzid NUL authcid NUL passwd.
	parts := bytes.Split(data, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return errBadResponse
	}
	authz, authc, password := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && !strings.EqualFold(authz, authc) {
		// Acting for another user is not supported; it is a failed
		// login, delayed and counted like one.
		lim := sess.srv.opts.Limiter
		if err := sess.sleepUntil(time.Now().Add(lim.Delay(sess.remote, authc))); err != nil {
			return hangupError{err}
		}
		lim.Failure(sess.remote, authc)
		sess.failedLogins++
		sess.log.Info("login failed", "user", authc, "why", "authorization identity differs")
		return errAuthFailed
	}
	return sess.login(authc, password)
}

// login checks a password, locks the maildrop and takes the INBOX snapshot.
// No reply leaves before the throttle's delay for this client and account,
// whether the password is right or not and whether the account exists or
// not, so neither timing nor text tells an attacker anything.
func (sess *session) login(name, password string) error {
	lim := sess.srv.opts.Limiter
	notBefore := time.Now().Add(lim.Delay(sess.remote, name))
	acct, err := sess.srv.opts.Store.Login(sess.ctx, name, password)
	if werr := sess.sleepUntil(notBefore); werr != nil {
		return hangupError{werr}
	}
	if errors.Is(err, store.ErrAuthFailed) {
		lim.Failure(sess.remote, name)
		sess.failedLogins++
		sess.log.Info("login failed", "user", name)
		return errAuthFailed
	}
	if err != nil {
		return fmt.Errorf("login %s: %w", name, err)
	}
	lim.Success(sess.remote, name)
	release, err := acct.LockMaildrop()
	if err != nil {
		sess.log.Info("maildrop in use", "user", acct.Address)
		return err
	}
	inbox, err := acct.MailboxByRole(sess.ctx, store.RoleInbox)
	if err != nil {
		release()
		return fmt.Errorf("open inbox of %s: %w", acct.Address, err)
	}
	list, err := acct.Messages(sess.ctx, inbox.ID)
	if err != nil {
		release()
		return fmt.Errorf("list inbox of %s: %w", acct.Address, err)
	}
	sess.acct, sess.release, sess.inbox = acct, release, inbox
	sess.msgs = make([]msg, len(list))
	var octets int64
	for i, m := range list {
		sess.msgs[i] = msg{Message: m}
		octets += m.Size
		// RFC 1460 LAST starts at the highest message already seen, as
		// Dovecot does, so it reflects earlier sessions.
		if hasFlag(m.Flags, store.FlagSeen) {
			sess.lastMsg = i + 1
		}
	}
	sess.state = transaction
	sess.log = sess.log.With("user", acct.Address)
	sess.log.Info("login", "messages", len(list), "size", octets, "tls", sess.secure)
	sess.writeLine(fmt.Sprintf("+OK %s (%d octets)", plural(len(list), "message"), octets))
	return nil
}

// sleepUntil waits until t, or until the server gives up on the session.
func (sess *session) sleepUntil(t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-sess.ctx.Done():
		return sess.ctx.Err()
	}
}

// stls starts TLS (RFC 2595 §4). Commands the client pipelined after STLS
// are discarded, never run over TLS: they came in the clear.
func (sess *session) stls(arg string) error {
	conf := sess.srv.opts.TLS
	switch {
	case conf == nil:
		return errUnknown
	case sess.secure:
		return errNotNow
	case !noArg(arg):
		return errSyntax
	}
	sess.writeLine("+OK begin TLS negotiation")
	if err := sess.flush(); err != nil {
		return hangupError{err}
	}
	if n := sess.r.Buffered(); n > 0 {
		sess.log.Warn("discarded input pipelined after STLS", "size", n)
	}
	tc := tls.Server(sess.conn, conf)
	sess.netConn.SetDeadline(sess.deadline())
	if err := tc.HandshakeContext(sess.ctx); err != nil {
		return hangupError{fmt.Errorf("tls handshake: %w", err)}
	}
	sess.conn = tc
	sess.r.Reset(connReader{sess})
	sess.secure = true
	sess.userName = ""
	sess.log.Debug("tls", "version", tls.VersionName(tc.ConnectionState().Version))
	return nil
}

func hasFlag(flags []string, f string) bool {
	for _, g := range flags {
		if strings.EqualFold(g, f) {
			return true
		}
	}
	return false
}

// plural writes "1 message", "2 messages".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
