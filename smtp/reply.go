package smtp

import (
	"errors"
	"fmt"

	gosmtp "github.com/emersion/go-smtp"

	"mailbox/store"
)

// Replies users see: short fixed phrases with the right codes (RFC 5321
// §4.2, RFC 3463 enhanced codes). Details go to the log, never here.
// go-smtp writes whatever *SMTPError a session method returns.
var (
	replyBadSequence   = reply(503, 5, 5, 1, "bad sequence of commands")
	replyNestedMail    = reply(503, 5, 5, 1, "sender already given")
	replyBadSender     = reply(501, 5, 1, 7, "bad sender address syntax")
	replyBadRecipient  = reply(501, 5, 1, 3, "bad recipient address syntax")
	replyNonASCII      = reply(553, 5, 6, 7, "non-ASCII address not permitted")
	replyUnknownUser   = reply(550, 5, 1, 1, "user unknown")
	replyRelayDenied   = reply(554, 5, 7, 1, "relay access denied")
	replyLiteral       = reply(550, 5, 1, 2, "address literals are not accepted")
	replyNotYourSender = reply(553, 5, 7, 1, "sender address not owned by you")
	replyNullSender    = reply(553, 5, 7, 1, "null sender not allowed in submission")
	replySendLimit     = reply(450, 4, 7, 1, "sending limit reached, try again later")
	replyTooManyRcpts  = reply(452, 4, 5, 3, "too many recipients")
	replyDMARCReject   = reply(550, 5, 7, 1, "rejected by the sender domain's DMARC policy")
	replyBadHeader     = reply(554, 5, 6, 0, "message header cannot be parsed")
	replyBadFrom       = reply(553, 5, 7, 1, "message needs a valid From: header")
	replyRcptOverQuota = reply(452, 4, 2, 2, "mailbox full")
	replyDataOverQuota = reply(552, 5, 2, 2, "mailbox full")
	replyTooBig        = reply(552, 5, 3, 4, "message too big")
	replyLineTooLong   = reply(552, 5, 6, 0, "line too long")
	replyDataTimeout   = reply(421, 4, 4, 2, "timeout while receiving data")
	replyConnError     = reply(421, 4, 4, 0, "connection error")
	replyTooManyErrors = reply(421, 4, 7, 0, "too many errors")
	replyTooManyCmds   = reply(421, 4, 7, 0, "too many commands")

	replyAuthRequired  = reply(530, 5, 7, 0, "Authentication required")
	replyStartTLSFirst = reply(530, 5, 7, 0, "Must issue a STARTTLS command first")
	replyAuthDisabled  = reply(503, 5, 5, 1, "authentication not enabled")
	replyAuthFailed    = reply(535, 5, 7, 8, "authentication failed")
	replyAuthMalformed = reply(501, 5, 5, 2, "malformed authentication data")
	replyAuthMechanism = reply(504, 5, 5, 4, "unrecognized authentication mechanism")
	replyAuthInMailTxn = reply(503, 5, 5, 1, "AUTH not allowed during a mail transaction")
)

func reply(code, class, subject, detail int, msg string) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{class, subject, detail}, Message: msg}
}

// tryLater is the "our fault, retry" reply, carrying the connection id so a
// bounce can be matched to the log line.
func tryLater(ref string) *gosmtp.SMTPError {
	return reply(451, 4, 3, 0, fmt.Sprintf("try again later (ref %s)", ref))
}

// accepted is the 250 for a delivered message. go-smtp's own success reply
// has no id, and it writes any *SMTPError that Data returns as the reply,
// so success is returned as one with code 250.
func accepted(msgid string) *gosmtp.SMTPError {
	return reply(250, 2, 0, 0, "OK delivered as "+msgid)
}

// replyFor maps a store error to a reply: the one place store kinds become
// codes. A kind this does not know, or ErrTemporary, is "our fault": 451
// with the connection id as reference, never a 5xx, logged at Error once,
// here.
func (sess *session) replyFor(cmd string, err error) *gosmtp.SMTPError {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return replyUnknownUser
	case errors.Is(err, store.ErrNotLocal):
		return sess.remoteReply()
	case errors.Is(err, store.ErrOverQuota):
		if cmd == "RCPT" {
			return replyRcptOverQuota
		}
		return replyDataOverQuota
	case errors.Is(err, store.ErrTooBig):
		return replyTooBig
	case errors.Is(err, store.ErrAuthFailed):
		return replyAuthFailed
	case errors.Is(err, store.ErrLimit):
		return replySendLimit
	}
	sess.log.Error("store failed", "cmd", cmd, "err", err)
	if cmd == "AUTH" {
		// RFC 4954 §6: 454 4.7.0 temporary authentication failure.
		return reply(454, 4, 7, 0, fmt.Sprintf("temporary authentication failure (ref %s)", sess.conn.id))
	}
	return tryLater(sess.conn.id)
}

// remoteReply refuses a recipient that is not ours on the MX: that would
// be relaying, never allowed. (Submission queues remote recipients; see
// Rcpt.) An address literal is refused in both modes.
func (sess *session) remoteReply() *gosmtp.SMTPError {
	if sess.srv.opts.Mode == ModeMX {
		return replyRelayDenied
	}
	return replyLiteral
}
