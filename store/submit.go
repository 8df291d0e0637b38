package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Submission is a message an account sends (the webmail's Send button; SMTP
// submission can use it too).
type Submission struct {
	// Recipients are the envelope recipients (To, Cc and Bcc together).
	Recipients []string
	// Data is the message as recipients get it (no Bcc header).
	Data []byte
	// SentCopy, if not nil, is what goes into the sender's Sent mailbox
	// instead of Data (the same message with its Bcc header kept).
	SentCopy []byte
}

// Submitted says where a submission went.
type Submitted struct {
	// Delivered lists the local recipients' copies.
	Delivered []Delivered
	// Sent is the sender's copy in its Sent mailbox.
	Sent Delivered
}

// RecipientError names the recipient a submission failed on. Its Err is
// ErrNotLocal (another server's address: outbound delivery is not
// available yet), ErrNotFound (no such local address), ErrInvalid (bad
// syntax) or ErrOverQuota.
type RecipientError struct {
	Address string
	Err     error
}

func (e *RecipientError) Error() string { return fmt.Sprintf("recipient %s: %v", e.Address, e.Err) }
func (e *RecipientError) Unwrap() error { return e.Err }

// Submit sends a message from this account. Every recipient is resolved
// first; if any is not local, nothing is stored and the error (a
// *RecipientError wrapping ErrNotLocal) names it, since this store has no
// outbound queue yet. Otherwise the local recipients' INBOX copies and a
// \Seen copy in the sender's Sent mailbox are committed in one
// transaction, and the recipients are remembered for address completion.
func (a *Account) Submit(ctx context.Context, s Submission) (Submitted, error) {
	var out Submitted
	var targets, rcpts []string
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
		if err != nil {
			if errors.Is(err, ErrNotLocal) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
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
	p, err := a.st.prepare(s.Data)
	if err != nil {
		return out, fmt.Errorf("submit: %w", err)
	}
	sent := p
	if s.SentCopy != nil {
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
		blobID, err := a.st.insertBlob(tx, p)
		if err != nil {
			return err
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
		for _, r := range rcpts {
			if _, err := tx.Exec(`INSERT INTO contacts(account_id, address, name, uses, last_used) VALUES (?, ?, ?, 1, ?)
				ON CONFLICT DO UPDATE SET uses = uses + 1, last_used = excluded.last_used,
				   name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END`,
				a.ID, r, names[r], now.Unix()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		var re *RecipientError
		if errors.As(err, &re) || errors.Is(err, ErrOverQuota) || errors.Is(err, ErrTemporary) {
			return out, fmt.Errorf("submit: %w", err)
		}
		return out, fmt.Errorf("submit: %w: %w", ErrTemporary, err)
	}
	return out, nil
}
