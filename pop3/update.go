package pop3

import (
	"errors"
	"fmt"

	"mailbox/store"
)

// trashName is the mailbox created for trash mode when an account has no
// mailbox with the Trash role any more.
const trashName = "Trash"

// quit ends the session. In TRANSACTION it first enters UPDATE (RFC 1939
// §6): retrieved messages are flagged \Seen, then the messages marked with
// DELE are removed (or moved to Trash) in one store call, and only then is
// the reply sent. If that fails nothing is deleted and the client gets
// [SYS/TEMP]; either way the session ends.
func (sess *session) quit(arg string) error {
	if !noArg(arg) {
		return errSyntax
	}
	sess.hangup = true
	if sess.state == authorization {
		sess.writeLine("+OK bye")
		return nil
	}
	sess.state = update
	deleted, err := sess.commit()
	if err != nil {
		return err
	}
	// The changes are committed: free the maildrop before the reply, so a
	// client that reconnects at once finds it unlocked.
	sess.releaseLock()
	sess.writeLine(fmt.Sprintf("+OK bye (%d deleted)", deleted))
	return nil
}

// commit applies the session's changes to the store.
func (sess *session) commit() (int, error) {
	mode, err := sess.acct.POP3Delete(sess.ctx)
	if err != nil {
		return 0, fmt.Errorf("pop3 delete mode: %w", err)
	}
	var seen, gone []uint32
	for i := range sess.msgs {
		m := &sess.msgs[i]
		if m.deleted {
			gone = append(gone, m.UID)
		}
		// Seen flags matter for messages that stay, or that Trash keeps.
		if m.retrieved && !hasFlag(m.Flags, store.FlagSeen) && (!m.deleted || mode == store.POP3Trash) {
			seen = append(seen, m.UID)
		}
	}
	if len(seen) > 0 {
		if _, err := sess.acct.SetFlags(sess.ctx, sess.inbox.ID, seen, store.FlagsAdd, []string{store.FlagSeen}); err != nil {
			return 0, fmt.Errorf("flag retrieved messages seen: %w", err)
		}
	}
	if len(gone) == 0 {
		return 0, nil
	}
	if mode == store.POP3Trash {
		trash, err := sess.trash()
		if err != nil {
			return 0, err
		}
		res, err := sess.acct.Move(sess.ctx, sess.inbox.ID, trash.ID, gone)
		if err != nil {
			return 0, fmt.Errorf("move %d messages to trash: %w", len(gone), err)
		}
		sess.log.Info("deleted", "count", len(res.Source), "mode", mode)
		return len(res.Source), nil
	}
	removed, err := sess.acct.Expunge(sess.ctx, sess.inbox.ID, gone)
	if err != nil {
		return 0, fmt.Errorf("expunge %d messages: %w", len(gone), err)
	}
	sess.log.Info("deleted", "count", len(removed), "mode", mode)
	return len(removed), nil
}

// trash finds the account's Trash mailbox, creating one if the user
// removed it, so trash mode never falls back to destroying mail.
func (sess *session) trash() (store.Mailbox, error) {
	mb, err := sess.acct.MailboxByRole(sess.ctx, store.RoleTrash)
	if !errors.Is(err, store.ErrNotFound) {
		return mb, wrapTrash(err)
	}
	mb, err = sess.acct.CreateMailbox(sess.ctx, trashName, store.RoleTrash)
	if errors.Is(err, store.ErrExists) {
		mb, err = sess.acct.Mailbox(sess.ctx, trashName)
	}
	return mb, wrapTrash(err)
}

func wrapTrash(err error) error {
	if err != nil {
		return fmt.Errorf("find trash: %w", err)
	}
	return nil
}
