package smtp

import (
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"mailbox/store"
)

// Submission (587, 465): after AUTH the session takes mail for anyone.
// Local recipients get it at once and remote ones are queued, both by
// Account.Submit in one transaction before the 250. What the account may
// send is checked here: the envelope sender and every From: address must
// be its own (its address or an alias that delivers to it), and the
// store's SendLimits bound how much it sends.

// checkSubmitter checks MAIL FROM of an authenticated session.
func (sess *session) checkSubmitter(acct *store.Account, from string) *gosmtp.SMTPError {
	if from == "" {
		// A bounce is the server's to send, not a user's.
		return replyNullSender
	}
	ok, err := acct.MaySendAs(sess.srv.ctx, from)
	if err != nil {
		return sess.replyFor("MAIL", err)
	}
	if !ok {
		return replyNotYourSender
	}
	if err := acct.CheckSendLimit(sess.srv.ctx); err != nil {
		if errors.Is(err, store.ErrLimit) {
			sess.logger().Warn("sending limit reached", "err", err)
		}
		return sess.replyFor("MAIL", err)
	}
	return nil
}

// rcptSubmission adds a recipient of a submission: a local one must
// exist, a remote one is queued at DATA.
func (sess *session) rcptSubmission(to string, tx transaction) error {
	if lim := sess.srv.opts.Store.SendLimits().RecipientsPerMessage; lim > 0 && len(tx.rcpts) >= lim {
		sess.logger().Warn("recipients per message limit", "max", lim)
		return sess.refuse("RCPT", replyTooManyRcpts, "rcpt", to)
	}
	local, domain, err := splitRecipient(to)
	switch {
	case errors.Is(err, errNonASCII):
		return sess.refuse("RCPT", replyNonASCII, "rcpt", to)
	case errors.Is(err, errRouted):
		return sess.refuse("RCPT", replyRelayDenied, "rcpt", to)
	case errors.Is(err, errLiteral):
		return sess.refuse("RCPT", replyLiteral, "rcpt", to)
	case err != nil:
		return sess.refuse("RCPT", replyBadRecipient, "rcpt", to)
	}
	targets, err := sess.srv.opts.Store.Resolve(sess.srv.ctx, local+"@"+domain)
	remote := false
	switch {
	case errors.Is(err, store.ErrNotLocal):
		if !validDomain(domain) {
			return sess.refuse("RCPT", replyBadRecipient, "rcpt", to)
		}
		remote = true
	case errors.Is(err, store.ErrInvalid):
		return sess.refuse("RCPT", replyBadRecipient, "rcpt", to)
	case err != nil:
		return sess.refuse("RCPT", sess.replyFor("RCPT", err), "rcpt", to)
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.tx.rcpts = append(sess.tx.rcpts, to)
	if remote {
		sess.tx.remote++
	}
	for _, t := range targets {
		if !slices.Contains(sess.tx.targets, t) {
			sess.tx.targets = append(sess.tx.targets, t)
		}
	}
	return nil
}

// validDomain accepts a DNS name we could look up an MX for.
func validDomain(d string) bool {
	_, err := store.NormalizeDomain(d)
	return err == nil && strings.Contains(strings.TrimSuffix(d, "."), ".")
}

// submit finishes DATA of a submission: the From: check, the Date: and
// Message-ID: a client left out, then Account.Submit. head is the length
// of our trace header at the start of data.
func (sess *session) submit(tx transaction, msgid string, head int, data []byte, start time.Time) error {
	sess.mu.Lock()
	acct := sess.acct
	sess.mu.Unlock()
	data = store.NormalizeCRLF(data)
	hdr, err := readHeader(data[head:])
	if err != nil {
		return sess.refuse("DATA", replyBadHeader, "msgid", msgid)
	}
	froms, err := mail.ParseAddressList(hdr.Get("From"))
	if err != nil || len(froms) == 0 {
		return sess.refuse("DATA", replyBadFrom, "msgid", msgid)
	}
	for _, f := range froms {
		ok, err := acct.MaySendAs(sess.srv.ctx, f.Address)
		if err != nil {
			return sess.refuse("DATA", sess.replyFor("DATA", err), "msgid", msgid)
		}
		if !ok {
			return sess.refuse("DATA", replyNotYourSender, "msgid", msgid, "from", f.Address)
		}
	}
	var add bytes.Buffer
	if hdr.Get("Date") == "" {
		fmt.Fprintf(&add, "Date: %s\r\n", start.Format(time.RFC1123Z))
	}
	if hdr.Get("Message-Id") == "" {
		fmt.Fprintf(&add, "Message-ID: <%s.%s@%s>\r\n", msgid, randomToken()[:8], sess.srv.opts.Hostname)
	}
	if add.Len() > 0 {
		data = slices.Concat(data[:head], add.Bytes(), data[head:])
	}
	res, err := acct.Submit(sess.srv.ctx, store.Submission{
		From:       tx.from,
		Recipients: tx.rcpts,
		Data:       data,
		NoSentCopy: true, // mail clients keep their own copy over IMAP
	})
	var re *store.RecipientError
	switch {
	case errors.As(err, &re) && errors.Is(err, store.ErrNotFound):
		sess.logger().Warn("recipient vanished after RCPT", "msgid", msgid, "err", err)
		return sess.refuse("DATA", tryLater(sess.conn.id), "msgid", msgid)
	case errors.As(err, &re) && errors.Is(err, store.ErrOverQuota):
		return sess.refuse("DATA", replyDataOverQuota, "msgid", msgid)
	case err != nil:
		return sess.refuse("DATA", sess.replyFor("DATA", err), "msgid", msgid, "size", len(data))
	}
	sess.conn.messages.Add(1)
	sess.logger().Info("submitted", "msgid", msgid, "size", len(data), "from", tx.from,
		"local", len(res.Delivered), "queued", len(res.Queued), "dur", time.Since(start).Round(time.Millisecond))
	return reply(250, 2, 0, 0, "OK queued as "+msgid)
}

// readHeader parses the header of a message.
func readHeader(data []byte) (textproto.MIMEHeader, error) {
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return textproto.MIMEHeader(m.Header), nil
}
