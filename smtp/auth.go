package smtp

import (
	"errors"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"mailbox/store"
)

// SASL mechanisms offered on submission (RFC 4954). LOGIN is not in any
// RFC (draft-murchison-sasl-login) but many clients still use it.
const (
	mechPlain = sasl.Plain
	mechLogin = "LOGIN"
)

// maxCredentialBytes bounds a user name or password; longer ones fail
// without reaching the password hash.
const maxCredentialBytes = 1024

// authAllowed reports whether AUTH may run on this connection now: over
// TLS, or in plaintext only when Options.AllowPlaintext says so.
func (sess *session) authAllowed() bool {
	return sess.isTLS() || sess.srv.opts.AllowPlaintext
}

// AuthMechanisms lists what EHLO advertises: nothing on the MX, and on
// submission nothing until STARTTLS (RFC 3207 §4: a client must not be
// tempted to send credentials in clear).
func (sess *session) AuthMechanisms() []string {
	if sess.srv.opts.Mode == ModeMX || !sess.authAllowed() {
		return nil
	}
	return []string{mechPlain, mechLogin}
}

// Auth starts an AUTH exchange.
func (sess *session) Auth(mech string) (sasl.Server, error) {
	if r := sess.begin("AUTH"); r != nil {
		return nil, r
	}
	sess.mu.Lock()
	inTx := sess.tx.active
	sess.mu.Unlock()
	switch {
	case sess.srv.opts.Mode == ModeMX:
		return nil, sess.refuse("AUTH", replyAuthDisabled)
	case !sess.authAllowed():
		return nil, sess.refuse("AUTH", replyStartTLSFirst)
	case inTx:
		return nil, sess.refuse("AUTH", replyAuthInMailTxn)
	}
	switch mech {
	case mechPlain:
		return saslReplies{sess, sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				// Acting as another user (RFC 4616 authzid) is not
				// supported: a failed login like any other.
				user, pass = "", ""
			}
			return sess.login(user, pass)
		})}, nil
	case mechLogin:
		return saslReplies{sess, &loginServer{login: sess.login}}, nil
	}
	return nil, sess.refuse("AUTH", replyAuthMechanism, "mech", mech)
}

// login checks a password for AUTH. A failure is answered only after the
// throttle's delay for this client and account name, and so is a success
// when a delay is due, so an early answer never tells a guesser anything;
// both cost the same whether or not the account exists.
func (sess *session) login(user, pass string) error {
	lim := sess.srv.opts.Limiter
	remote := sess.conn.ip.String()
	delay := lim.Delay(remote, user)
	start := time.Now()
	var acct *store.Account
	err := store.ErrAuthFailed
	if user != "" && len(user) <= maxCredentialBytes && len(pass) <= maxCredentialBytes {
		acct, err = sess.srv.opts.Store.Login(sess.srv.ctx, user, pass)
	}
	if errors.Is(err, store.ErrAuthFailed) {
		lim.Failure(remote, user)
	}
	if wait := delay - time.Since(start); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-sess.srv.ctx.Done():
			t.Stop()
		}
	}
	if err != nil {
		return sess.refuse("AUTH", sess.replyFor("AUTH", err), "user", user)
	}
	lim.Success(remote, user)
	sess.mu.Lock()
	sess.user = acct.Address
	sess.acct = acct
	sess.log = sess.log.With("user", acct.Address)
	log := sess.log
	sess.mu.Unlock()
	log.Info("authenticated")
	return nil
}

// saslReplies turns a mechanism's own errors (a malformed response) into a
// fixed reply, so go-smtp never sends a library's error text.
type saslReplies struct {
	sess *session
	sasl.Server
}

func (s saslReplies) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	if err != nil {
		var r *gosmtp.SMTPError
		if !errors.As(err, &r) {
			r = s.sess.refuse("AUTH", replyAuthMalformed)
		}
		return nil, false, r
	}
	return challenge, done, nil
}

// loginServer is the server side of AUTH LOGIN: the user name (possibly as
// the initial response), then the password, each after its prompt.
type loginServer struct {
	login func(user, pass string) error
	step  int
	user  string
}

var errLoginSequence = errors.New("sasl: unexpected LOGIN response")

func (s *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		s.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		s.user, s.step = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		s.user, s.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.login(s.user, string(response))
	}
	return nil, false, errLoginSequence
}
