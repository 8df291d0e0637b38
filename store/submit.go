package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrLimit is a refusal by a sending limit (SendLimits): retry later.
var ErrLimit = errors.New("sending limit reached")

// SendLimits bound what one account may submit. Zero fields mean no limit.
type SendLimits struct {
	// MessagesPerHour and MessagesPerDay count submissions in the last
	// 60 minutes and 24 hours (each submission counts once, whatever its
	// number of recipients).
	MessagesPerHour int
	MessagesPerDay  int
	// RecipientsPerMessage bounds the envelope recipients of one
	// submission.
	RecipientsPerMessage int
}

// Submission is a message an account sends: the webmail's Send button and
// SMTP submission (587/465) both come here.
type Submission struct {
	// From is the envelope sender (bounces go there); "" means the
	// account's own address. The caller checks that the account may use
	// it (Account.MaySendAs).
	From string
	// Recipients are the envelope recipients (To, Cc and Bcc together).
	Recipients []string
	// Data is the message as recipients get it (no Bcc header). Bare CR
	// and LF become CRLF.
	Data []byte
	// SentCopy, if not nil, is what goes into the sender's Sent mailbox
	// instead of Data (the same message with its Bcc header kept).
	SentCopy []byte
	// NoSentCopy skips the Sent copy: SMTP clients save their own over
	// IMAP.
	NoSentCopy bool
}

// Submitted says where a submission went.
type Submitted struct {
	// Delivered lists the local recipients' copies.
	Delivered []Delivered
	// Queued lists the remote recipients, queued for the outbound runner.
	Queued []string
	// Sent is the sender's copy in its Sent mailbox (zero with NoSentCopy).
	Sent Delivered
}

// RecipientError names the recipient a submission failed on. Its Err is
// ErrNotFound (no such local address), ErrInvalid (bad syntax) or
// ErrOverQuota.
type RecipientError struct {
	Address string
	Err     error
}

func (e *RecipientError) Error() string { return fmt.Sprintf("recipient %s: %v", e.Address, e.Err) }
func (e *RecipientError) Unwrap() error { return e.Err }

// SendLimits returns the limits Submit enforces (Options.SendLimits).
func (st *Store) SendLimits() SendLimits { return st.sendLimits }

// MaySendAs reports whether the account may use addr as its sender (the
// envelope sender or a From: address): its own address, or one that
// delivers to it (an alias, a +tag, its domain's catch-all).
func (a *Account) MaySendAs(ctx context.Context, addr string) (bool, error) {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return false, nil
	}
	if addr == a.Address {
		return true, nil
	}
	targets, err := a.st.Resolve(ctx, addr)
	if errors.Is(err, ErrNotLocal) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return slices.Contains(targets, a.Address), nil
}

// CheckSendLimit returns ErrLimit if the account has used up its hourly or
// daily number of submissions (SMTP checks this at MAIL; Submit checks it
// again in its transaction).
func (a *Account) CheckSendLimit(ctx context.Context) error {
	lim := a.st.sendLimits
	if lim.MessagesPerHour <= 0 && lim.MessagesPerDay <= 0 {
		return nil
	}
	now := a.st.now().Unix()
	var hour, day int
	err := a.st.reader.QueryRowContext(ctx, `SELECT coalesce(sum(at > ?), 0), count(*) FROM sent_log
		WHERE account_id = ? AND at > ?`, now-3600, a.ID, now-86400).Scan(&hour, &day)
	if err != nil {
		return fmt.Errorf("send limit: %w: %w", ErrTemporary, err)
	}
	return lim.check(hour, day)
}

func (lim SendLimits) check(hour, day int) error {
	if lim.MessagesPerHour > 0 && hour >= lim.MessagesPerHour {
		return fmt.Errorf("%w: %d messages in the last hour", ErrLimit, hour)
	}
	if lim.MessagesPerDay > 0 && day >= lim.MessagesPerDay {
		return fmt.Errorf("%w: %d messages in the last day", ErrLimit, day)
	}
	return nil
}

// Submit sends a message from this account. Every recipient is resolved
// first: a bad or unknown local one fails the whole submission (a
// *RecipientError) and nothing is stored. Then, in one transaction, the
// local recipients' INBOX copies are delivered, the remote recipients are
// queued for the outbound runner, the \Seen copy goes to the sender's Sent
// mailbox (unless NoSentCopy), and the recipients are remembered for
// address completion. When Submit returns nil all of it is durable.
// ErrLimit: the account reached a SendLimits bound.
func (a *Account) Submit(ctx context.Context, s Submission) (Submitted, error) {
	var out Submitted
	var targets, rcpts, remote []string
	sender := a.Address
	if s.From != "" {
		addr, err := NormalizeAddress(s.From)
		if err != nil {
			return out, fmt.Errorf("submit: sender %q: %w", s.From, ErrInvalid)
		}
		sender = addr
	}
	for _, r := range s.Recipients {
		addr, err := NormalizeAddress(r)
		if err != nil {
			return out, &RecipientError{Address: r, Err: ErrInvalid}
		}
		if slices.Contains(rcpts, addr) {
			continue
		}
		rcpts = append(rcpts, addr)
		accts, err := a.st.Resolve(ctx, addr)
		if errors.Is(err, ErrNotLocal) {
			remote = append(remote, addr)
			continue
		}
		if err != nil {
			if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
				return out, &RecipientError{Address: addr, Err: err}
			}
			return out, fmt.Errorf("submit: %w", err)
		}
		for _, t := range accts {
			if !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
	}
	if len(rcpts) == 0 {
		return out, fmt.Errorf("submit: %w: no recipients", ErrInvalid)
	}
	lim := a.st.sendLimits
	if lim.RecipientsPerMessage > 0 && len(rcpts) > lim.RecipientsPerMessage {
		return out, fmt.Errorf("submit: %w: %d recipients, at most %d", ErrLimit, len(rcpts), lim.RecipientsPerMessage)
	}
	p, err := a.st.prepare(s.Data)
	if err != nil {
		return out, fmt.Errorf("submit: %w", err)
	}
	sent := p
	if s.SentCopy != nil && !s.NoSentCopy {
		if sent, err = a.st.prepare(s.SentCopy); err != nil {
			return out, fmt.Errorf("submit: %w", err)
		}
	}
	names := map[string]string{}
	env := sent.m.Envelope
	for _, ad := range slices.Concat(env.To, env.Cc, env.Bcc) {
		names[strings.ToLower(ad.Mailbox+"@"+ad.Host)] = ad.Name
	}
	now := a.st.now()
	err = a.st.write(ctx, func(tx *txn) error {
		out = Submitted{}
		if lim.MessagesPerHour > 0 || lim.MessagesPerDay > 0 {
			var hour, day int
			if err := tx.QueryRow(`SELECT coalesce(sum(at > ?), 0), count(*) FROM sent_log
				WHERE account_id = ? AND at > ?`, now.Unix()-3600, a.ID, now.Unix()-86400).Scan(&hour, &day); err != nil {
				return err
			}
			if err := lim.check(hour, day); err != nil {
				return err
			}
		}
		if _, err := tx.Exec("DELETE FROM sent_log WHERE account_id = ? AND at <= ?", a.ID, now.Unix()-86400); err != nil {
			return err
		}
		if _, err := tx.Exec("INSERT INTO sent_log(account_id, at, rcpts) VALUES (?, ?, ?)", a.ID, now.Unix(), len(rcpts)); err != nil {
			return err
		}
		blobID, err := a.st.insertBlob(tx, p)
		if err != nil {
			return err
		}
		if len(remote) > 0 {
			oid, err := insertOutbound(tx, a.ID, sender, blobID, now)
			if err != nil {
				return err
			}
			for _, r := range remote {
				_, domain := splitAddress(r)
				if err := insertQueueRow(tx, oid, r, domain, now); err != nil {
					return err
				}
			}
			out.Queued = remote
		}
		for _, rcpt := range targets {
			var acctID, mbID, quota, used int64
			err := tx.QueryRow(`SELECT a.id, b.id, a.quota_bytes, a.used_bytes
				FROM accounts a JOIN mailboxes b ON b.account_id = a.id
				WHERE a.address = ? AND b.role = ?`, rcpt, RoleInbox).Scan(&acctID, &mbID, &quota, &used)
			if err != nil {
				return fmt.Errorf("deliver to %s: %w", rcpt, err)
			}
			if quota > 0 && used+p.size > quota {
				return &RecipientError{Address: rcpt, Err: ErrOverQuota}
			}
			uv, uid, err := insertMessage(tx, acctID, mbID, blobID, p.size, now, 0, "")
			if err != nil {
				return err
			}
			out.Delivered = append(out.Delivered, Delivered{Account: rcpt, MailboxID: mbID, UIDValidity: uv, UID: uid})
		}
		if s.NoSentCopy {
			return a.rememberContacts(tx, rcpts, names, now)
		}
		sentBlob := blobID
		if sent != p {
			if sentBlob, err = a.st.insertBlob(tx, sent); err != nil {
				return err
			}
		}
		var sentID int64
		if err := tx.QueryRow("SELECT id FROM mailboxes WHERE account_id = ? AND role = ?", a.ID, RoleSent).Scan(&sentID); err != nil {
			return fmt.Errorf("sent mailbox: %w", err)
		}
		if err := a.checkQuotaTx(tx, sent.size); err != nil {
			return err
		}
		bits, _ := packFlags([]string{FlagSeen})
		uv, uid, err := insertMessage(tx, a.ID, sentID, sentBlob, sent.size, now, bits, "")
		if err != nil {
			return err
		}
		out.Sent = Delivered{Account: a.Address, MailboxID: sentID, UIDValidity: uv, UID: uid}
		return a.rememberContacts(tx, rcpts, names, now)
	})
	if err != nil {
		var re *RecipientError
		if errors.As(err, &re) || errors.Is(err, ErrOverQuota) || errors.Is(err, ErrTemporary) || errors.Is(err, ErrLimit) {
			return out, fmt.Errorf("submit: %w", err)
		}
		return out, fmt.Errorf("submit: %w: %w", ErrTemporary, err)
	}
	if len(out.Queued) > 0 {
		a.st.signalQueue()
	}
	return out, nil
}

// rememberContacts counts the recipients for address completion.
func (a *Account) rememberContacts(tx *txn, rcpts []string, names map[string]string, now time.Time) error {
	for _, r := range rcpts {
		if _, err := tx.Exec(`INSERT INTO contacts(account_id, address, name, uses, last_used) VALUES (?, ?, ?, 1, ?)
			ON CONFLICT DO UPDATE SET uses = uses + 1, last_used = excluded.last_used,
			   name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END`,
			a.ID, r, names[r], now.Unix()); err != nil {
			return err
		}
	}
	return nil
}
