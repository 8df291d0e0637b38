package smtp

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailbox/store"
)

// session is one go-smtp session: from EHLO (or HELO) until the next
// STARTTLS or the end of the connection. It holds the login and the mail
// transaction being built; what lasts for the whole connection is on conn.
//
// Invariants:
//   - Nothing is written to the client here. Each method returns nil or
//     an *SMTPError, and go-smtp writes exactly one reply for it.
//   - go-smtp calls the methods one at a time, except that with BDAT,
//     Data runs in its own goroutine and Reset or Logout may come while
//     it reads. So the transaction lives under mu, Data works on a copy,
//     and no store call runs under mu.
//   - DATA is answered 250 only after store.Deliver returned, that is
//     after the commit is synced; every error before that is a refusal
//     and nothing is stored.
//   - Every refusal counts against MaxErrors and every MAIL, RCPT,
//     DATA/BDAT and AUTH against MaxCommands; past either the reply is a
//     421 and the connection closes right after writing it.
type session struct {
	srv  *Server
	lib  *gosmtp.Conn
	conn *conn

	mu   sync.Mutex
	log  *slog.Logger
	user string         // the authenticated account, "" before AUTH
	acct *store.Account // the same account, nil before AUTH
	tx   transaction
}

// transaction is one message's envelope, from MAIL to the end of DATA.
type transaction struct {
	active  bool
	from    string
	size    int64    // SIZE= from MAIL, 0 if not given
	rcpts   []string // envelope recipients as accepted
	targets []string // local accounts they resolve to, each once
	remote  int      // recipients for other servers (submission only)
}

var (
	_ gosmtp.Session     = (*session)(nil)
	_ gosmtp.AuthSession = (*session)(nil)
)

// newSession is go-smtp's Backend: it runs at the first EHLO/HELO and at
// the first one after STARTTLS.
func (srv *Server) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	cn := connOf(c.Conn())
	if cn == nil {
		// Every connection comes through our listener; this is a bug.
		srv.log.Error("connection without state", "remote", c.Conn().RemoteAddr().String())
		return nil, replyConnError
	}
	return &session{srv: srv, lib: c, conn: cn, log: cn.log}, nil
}

// begin starts a MAIL, RCPT, DATA or AUTH command: it logs the verb,
// refuses everything once the connection is closing, and spends one unit
// of the command budget. A spent budget is enforced only where a
// transaction starts (MAIL, AUTH): a message already under way is finished,
// so a bulk sender on a long connection never has one cut short.
func (sess *session) begin(cmd string) *gosmtp.SMTPError {
	sess.logger().Debug("command", "cmd", cmd)
	if sess.conn.hangup.Load() {
		return replyTooManyErrors
	}
	if !sess.conn.spend() && (cmd == "MAIL" || cmd == "AUTH") {
		sess.conn.hangup.Store(true)
		sess.logger().Warn("command budget spent", "cmd", cmd, "max", sess.srv.opts.MaxCommands)
		return replyTooManyCmds
	}
	return nil
}

// refuse logs a refusal at Info and counts it; the last one allowed by
// MaxErrors becomes a 421 that ends the connection.
func (sess *session) refuse(cmd string, r *gosmtp.SMTPError, attrs ...any) *gosmtp.SMTPError {
	sess.logger().Info("rejected", append([]any{"cmd", cmd, "code", r.Code, "why", r.Message}, attrs...)...)
	if !sess.conn.fail() {
		sess.conn.hangup.Store(true)
		sess.logger().Warn("too many errors, closing", "max", sess.srv.opts.MaxErrors)
		return replyTooManyErrors
	}
	return r
}

func (sess *session) logger() *slog.Logger {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.log
}

func (sess *session) isTLS() bool {
	_, ok := sess.lib.TLSConnectionState()
	return ok
}

// Mail starts a transaction (RFC 5321 §4.1.1.2).
func (sess *session) Mail(from string, opts *gosmtp.MailOptions) error {
	if r := sess.begin("MAIL"); r != nil {
		return r
	}
	sess.mu.Lock()
	active, user, acct := sess.tx.active, sess.user, sess.acct
	sess.mu.Unlock()
	switch {
	case active:
		return sess.refuse("MAIL", replyNestedMail)
	case sess.srv.opts.Mode != ModeMX && !sess.authAllowed():
		return sess.refuse("MAIL", replyStartTLSFirst)
	case sess.srv.opts.Mode != ModeMX && user == "":
		return sess.refuse("MAIL", replyAuthRequired)
	}
	if err := checkSender(from); err != nil {
		r := replyBadSender
		if errors.Is(err, errNonASCII) {
			r = replyNonASCII
		}
		return sess.refuse("MAIL", r, "from", from)
	}
	if acct != nil {
		if r := sess.checkSubmitter(acct, from); r != nil {
			return sess.refuse("MAIL", r, "from", from)
		}
	}
	sess.mu.Lock()
	sess.tx = transaction{active: true, from: from, size: opts.Size}
	sess.mu.Unlock()
	return nil
}

// Rcpt adds a recipient (RFC 5321 §4.1.1.3): it must be one of ours, and
// it must have room for the message (using SIZE= when the client gave it).
func (sess *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if r := sess.begin("RCPT"); r != nil {
		return r
	}
	sess.mu.Lock()
	tx := sess.tx
	sess.mu.Unlock()
	if !tx.active {
		return sess.refuse("RCPT", replyBadSequence)
	}
	if sess.srv.opts.Mode != ModeMX {
		return sess.rcptSubmission(to, tx)
	}
	targets, r := sess.route(to)
	if r != nil {
		return sess.refuse("RCPT", r, "rcpt", to)
	}
	for _, t := range targets {
		if err := sess.srv.opts.Store.CheckQuota(sess.srv.ctx, t, tx.size); err != nil {
			return sess.refuse("RCPT", sess.replyFor("RCPT", err), "rcpt", to)
		}
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.tx.rcpts = append(sess.tx.rcpts, to)
	for _, t := range targets {
		if !slices.Contains(sess.tx.targets, t) {
			sess.tx.targets = append(sess.tx.targets, t)
		}
	}
	return nil
}

// route finds the local accounts behind an envelope recipient, or the
// refusal (see splitRecipient for what is never accepted).
func (sess *session) route(to string) ([]string, *gosmtp.SMTPError) {
	local, domain, err := splitRecipient(to)
	switch {
	case errors.Is(err, errNonASCII):
		return nil, replyNonASCII
	case errors.Is(err, errRouted):
		return nil, replyRelayDenied
	case errors.Is(err, errLiteral):
		return nil, sess.remoteReply()
	case err != nil:
		return nil, replyBadRecipient
	}
	st := sess.srv.opts.Store
	targets, err := st.Resolve(sess.srv.ctx, local+"@"+domain)
	if errors.Is(err, store.ErrInvalid) {
		// A local part the store cannot hold (a quoted one with spaces,
		// say): nobody has it if the domain is ours.
		ok, lerr := st.IsLocalDomain(sess.srv.ctx, domain)
		switch {
		case lerr != nil:
			err = lerr
		case ok:
			err = store.ErrNotFound
		default:
			err = store.ErrNotLocal
		}
	}
	if err != nil {
		return nil, sess.replyFor("RCPT", err)
	}
	return targets, nil
}

// maxSizeHint caps the buffer allocated up front from MAIL's SIZE=.
const maxSizeHint = 1 << 20

// Data receives the message, prepends the trace headers and delivers it to
// every local recipient in one store transaction.
func (sess *session) Data(r io.Reader) error {
	if rp := sess.begin("DATA"); rp != nil {
		return rp
	}
	sess.mu.Lock()
	tx := sess.tx
	tx.rcpts, tx.targets = slices.Clone(tx.rcpts), slices.Clone(tx.targets)
	sess.mu.Unlock()
	if !tx.active || len(tx.targets)+tx.remote == 0 {
		return sess.refuse("DATA", replyBadSequence)
	}
	sess.conn.dataStarted()
	start := time.Now()
	msgid := sess.conn.nextMsgID()
	head := sess.traceHeaders(tx, msgid, start)

	max := sess.srv.opts.MaxMessageBytes
	// SIZE= sizes the buffer, but only up to maxSizeHint: a client's
	// claim alone must not make us allocate much.
	hint := int64(64 << 10)
	if tx.size > 0 {
		hint = min(tx.size+1, max+1, maxSizeHint)
	}
	buf := bytes.NewBuffer(make([]byte, 0, int64(len(head))+hint))
	buf.WriteString(head)
	// go-smtp stops DATA at MaxMessageBytes itself; BDAT chunks are
	// counted by the library too, but only per command, so limit here.
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return sess.dataError(msgid, err)
	}
	if n > max {
		return sess.refuse("DATA", replyTooBig, "msgid", msgid, "size", n)
	}
	if sess.srv.opts.Mode != ModeMX {
		return sess.submit(tx, msgid, len(head), buf.Bytes(), start)
	}
	data, role := buf.Bytes(), ""
	if sess.srv.opts.Inbound != nil {
		msg := stripOwnAuthResults(store.NormalizeCRLF(data[len(head):]), sess.srv.opts.Hostname)
		res := sess.srv.checkInbound(sess.conn.ip.AsSlice(), sess.lib.Hostname(), tx.from, msg)
		sess.logger().Debug("inbound checks", "msgid", msgid, "dmarc", res.dmarc)
		switch res.verdict {
		case refuseDMARC:
			return sess.refuse("DATA", replyDMARCReject, "msgid", msgid, "from", tx.from, "dmarc", res.dmarc)
		case deliverJunk:
			role = store.RoleJunk
			sess.logger().Info("quarantined", "msgid", msgid, "dmarc", res.dmarc)
		}
		data = slices.Concat(data[:len(head)], []byte(res.header), msg)
	}
	_, err = sess.srv.opts.Store.Deliver(sess.srv.ctx, store.Delivery{
		Recipients:   tx.targets,
		Data:         data,
		Role:         role,
		InternalDate: start,
	})
	if errors.Is(err, store.ErrNotFound) {
		// An account went away after its RCPT: the transaction is all or
		// nothing, so let the client retry; the next RCPT says 550.
		sess.logger().Warn("recipient vanished after RCPT", "msgid", msgid, "err", err)
		return sess.refuse("DATA", tryLater(sess.conn.id), "msgid", msgid)
	}
	if err != nil {
		return sess.refuse("DATA", sess.replyFor("DATA", err), "msgid", msgid, "size", n)
	}
	sess.conn.messages.Add(1)
	sess.logger().Info("accepted", "msgid", msgid, "size", n, "from", tx.from, "to", tx.rcpts,
		"dur", time.Since(start).Round(time.Millisecond))
	return accepted(msgid)
}

// dataError chooses the reply when reading the message failed.
func (sess *session) dataError(msgid string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, gosmtp.ErrDataTooLarge):
		return sess.refuse("DATA", replyTooBig, "msgid", msgid)
	case errors.Is(err, gosmtp.ErrTooLongLine):
		// go-smtp cannot find the end of the message after this, so it
		// closes the connection after our reply.
		sess.logger().Warn("line too long", "msgid", msgid, "max", sess.srv.opts.MaxLineBytes)
		return sess.refuse("DATA", replyLineTooLong, "msgid", msgid)
	case errors.Is(err, gosmtp.ErrDataReset):
		return err // BDAT aborted by RSET: go-smtp answers the RSET
	case errors.As(err, &ne) && ne.Timeout():
		// The rest of the message may still come; it must not be read as
		// commands, so the connection ends after the reply.
		sess.logger().Warn("data timeout", "msgid", msgid, "timeout", sess.srv.opts.DataTimeout)
		sess.conn.hangup.Store(true)
		return replyDataTimeout
	}
	sess.logger().Info("data aborted", "msgid", msgid, "err", err)
	return replyConnError
}

// Reset ends the transaction: RSET, a new EHLO, and after every DATA.
func (sess *session) Reset() {
	sess.mu.Lock()
	sess.tx = transaction{}
	sess.mu.Unlock()
	sess.conn.dataEnded()
}

// Logout ends the session (connection closed, or STARTTLS).
func (sess *session) Logout() error {
	sess.Reset()
	return nil
}
