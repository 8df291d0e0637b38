package imap

import (
	"errors"
	"io"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

// setFlags changes flags in the selected mailbox. It holds the account's
// event lock across the write, so the FlagsChanged events of this write
// are recognised as the session's own: other sessions get FETCH FLAGS,
// this one reports the change itself (or stays silent for .SILENT).
func (sess *session) setFlags(uids []uint32, op store.FlagOp, flags []string) ([]store.Message, error) {
	res, err := sess.updateFlags(uids, op, flags)
	if err != nil {
		return nil, err
	}
	changed := res.Messages[:0]
	for _, m := range res.Messages {
		if m.ModSeq == res.ModSeq {
			changed = append(changed, m)
		}
	}
	return changed, nil
}

// updateFlags is setFlags reporting every message of the set.
func (sess *session) updateFlags(uids []uint32, op store.FlagOp, flags []string) (store.FlagUpdate, error) {
	as := sess.as
	as.mu.Lock()
	defer as.mu.Unlock()
	as.applyLocked(nil)
	res, err := sess.acct.UpdateFlags(sess.ctx, sess.sel.id, uids, op, flags)
	sess.storing.Store(true) // its own FETCH FLAGS are not queued for it
	as.applyLocked(&own{mailboxID: sess.sel.id, modseq: res.ModSeq, tracker: sess.sel.tracker})
	sess.storing.Store(false)
	return res, err
}

// Store answers STORE and UID STORE (RFC 9051 §6.4.6).
func (sess *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	defer sess.enter("STORE")()
	if sess.sel.readOnly {
		return errReadOnly
	}
	uids := sess.resolve(numSet)
	if len(uids) == 0 {
		return nil
	}
	var op store.FlagOp
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op = store.FlagsAdd
	case imap.StoreFlagsDel:
		op = store.FlagsRemove
	default:
		op = store.FlagsReplace
	}
	res, err := sess.updateFlags(uids, op, storeFlags(flags.Flags))
	if err != nil {
		return sess.replyFor(err)
	}
	if flags.Silent {
		return nil
	}
	// Every message of the set gets its FETCH FLAGS, changed or not, with
	// the flags the write left (read in the same transaction).
	_, isUID := numSet.(imap.UIDSet)
	msgs := res.Messages
	mu := make([]uint32, len(msgs))
	for i := range msgs {
		mu[i] = msgs[i].UID
	}
	seqs := sess.seqNums(mu)
	var last []string
	var lastIMAP []imap.Flag
	for i, m := range msgs {
		if seqs[i] == 0 {
			continue
		}
		if len(m.Flags) == 0 || len(last) == 0 || &m.Flags[0] != &last[0] || len(m.Flags) != len(last) {
			last, lastIMAP = m.Flags, imapFlags(m.Flags)
		}
		rw := w.CreateMessage(seqs[i])
		if isUID {
			rw.WriteUID(imap.UID(m.UID))
		}
		rw.WriteFlags(lastIMAP)
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Expunge removes the \Deleted messages (EXPUNGE, CLOSE) or those of them
// in uids (UID EXPUNGE, RFC 4315). The EXPUNGE responses come from the
// tracker, written by the Poll that follows, like every other session's.
func (sess *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	defer sess.enter("EXPUNGE")()
	if sess.sel.readOnly {
		if isSilentExpunge(w) {
			return nil // CLOSE of an EXAMINEd mailbox expunges nothing
		}
		return errReadOnly
	}
	var ranges []store.UIDRange
	if uids != nil {
		ranges = toRanges(sess.resolve(*uids))
	} else {
		ranges = []store.UIDRange{{Start: 1, Stop: 1<<32 - 1}}
	}
	if len(ranges) == 0 {
		return nil
	}
	msgs, err := sess.acct.MessagesIn(sess.ctx, sess.sel.id, ranges)
	if err != nil {
		return sess.replyFor(err)
	}
	var del []uint32
	for _, m := range msgs {
		if slices.Contains(m.Flags, store.FlagDeleted) {
			del = append(del, m.UID)
		}
	}
	if len(del) == 0 {
		return nil
	}
	if _, err := sess.acct.Expunge(sess.ctx, sess.sel.id, del); err != nil {
		return sess.replyFor(err)
	}
	sess.as.sync()
	return nil
}

var errTryCreate = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}

// destination looks up the target of COPY, MOVE and APPEND.
func (sess *session) destination(name string) (store.Mailbox, error) {
	mb, err := sess.acct.Mailbox(sess.ctx, cleanName(name))
	if errors.Is(err, store.ErrNotFound) {
		return mb, errTryCreate
	} else if err != nil {
		return mb, sess.replyFor(err)
	}
	return mb, nil
}

// Copy answers COPY and UID COPY with COPYUID (RFC 4315).
func (sess *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	defer sess.enter("COPY")()
	mb, err := sess.destination(dest)
	if err != nil {
		return nil, err
	}
	uids := sess.resolve(numSet)
	if len(uids) == 0 {
		return nil, nil
	}
	res, err := sess.acct.Copy(sess.ctx, sess.sel.id, mb.ID, uids)
	if err != nil {
		return nil, sess.replyFor(err)
	}
	sess.as.sync()
	if len(res.Source) == 0 {
		return nil, nil
	}
	return &imap.CopyData{UIDValidity: res.UIDValidity, SourceUIDs: uidSet(res.Source), DestUIDs: uidSet(res.Dest)}, nil
}

// Move answers MOVE and UID MOVE (RFC 6851): COPYUID first, then the
// EXPUNGEs, which the tracker delivers in the Poll that follows.
func (sess *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	defer sess.enter("MOVE")()
	if sess.sel.readOnly {
		return errReadOnly
	}
	mb, err := sess.destination(dest)
	if err != nil {
		return err
	}
	uids := sess.resolve(numSet)
	if len(uids) == 0 {
		return nil
	}
	res, err := sess.acct.Move(sess.ctx, sess.sel.id, mb.ID, uids)
	if err != nil {
		return sess.replyFor(err)
	}
	if len(res.Source) > 0 {
		if err := w.WriteCopyData(&imap.CopyData{UIDValidity: res.UIDValidity, SourceUIDs: uidSet(res.Source), DestUIDs: uidSet(res.Dest)}); err != nil {
			return err
		}
	}
	sess.as.sync()
	return nil
}

// Append stores a message with APPENDUID (RFC 4315). The library has
// already refused a literal over AppendLimit with NO [TOOBIG] before the
// client sent it; a non-synchronizing one (LITERAL+) over the limit is
// refused as well, and the connection then ends without reading it
// (literalGuard, guard.go). The bytes held at once by all APPENDs are
// bounded by Options.AppendMemory.
func (sess *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	defer sess.enter("APPEND")()
	mb, err := sess.destination(name)
	if err != nil {
		return nil, err
	}
	size := r.Size()
	if size > int64(sess.AppendLimit()) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	}
	if err := sess.srv.appends.acquire(sess.ctx, size); err != nil {
		return nil, errUnavailable
	}
	defer sess.srv.appends.release(size)
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, err
	}
	date := options.Time
	if date.IsZero() {
		date = time.Now()
	}
	d, err := sess.acct.Append(sess.ctx, mb.ID, data, storeFlags(options.Flags), date)
	if err != nil {
		return nil, sess.replyFor(err)
	}
	sess.as.sync()
	return &imap.AppendData{UIDValidity: d.UIDValidity, UID: imap.UID(d.UID)}, nil
}
