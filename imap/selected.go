package imap

import (
	"reflect"
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

// selected is a session's selected mailbox.
type selected struct {
	mb       *mailboxState
	tracker  *imapserver.SessionTracker
	id       int64
	readOnly bool
}

// systemFlags are the flags every mailbox accepts.
var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// Select opens a mailbox (SELECT and EXAMINE). Its message count is the
// shared state's, so it matches the tracker the session starts from.
func (sess *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	defer sess.enter("SELECT")()
	sess.unselect()
	sess.searchRes = nil
	mb, err := sess.acct.Mailbox(sess.ctx, cleanName(name))
	if err != nil {
		return nil, sess.replyFor(err)
	}
	state, tracker, n, err := sess.as.open(sess.ctx, sess.acct, mb, sess)
	if err != nil {
		return nil, sess.replyFor(err)
	}
	sess.sel = &selected{mb: state, tracker: tracker, id: mb.ID, readOnly: options.ReadOnly}
	sess.polling() // a new tracker: nothing is queued for the session yet

	// FLAGS, UIDNEXT and the first unseen message come from the shared
	// state, which holds every message's flags: no query per SELECT.
	flags := slices.Clone(systemFlags)
	for _, k := range state.keywordsInUse() {
		flags = append(flags, imap.Flag(k))
	}
	data := &imap.SelectData{
		Flags:       flags,
		NumMessages: n,
		UIDNext:     imap.UID(mb.UIDNext),
		UIDValidity: mb.UIDValidity,
	}
	if !options.ReadOnly {
		data.PermanentFlags = append(slices.Clone(flags), imap.FlagWildcard)
	} else {
		data.PermanentFlags = []imap.Flag{}
	}
	state.mu.RLock()
	// UIDNEXT must stay above every UID the client can see, even one
	// delivered between reading the mailbox and loading its UIDs.
	if k := len(state.uids); k > 0 && state.uids[k-1] >= uint32(data.UIDNext) {
		data.UIDNext = imap.UID(state.uids[k-1] + 1)
	}
	if !sess.conn.EnabledCaps().Has(imap.CapIMAP4rev2) {
		// IMAP4rev1 clients get the first unseen message (RFC 3501 §6.3.1).
		if k := state.firstUnseenLocked(); k != 0 {
			data.FirstUnseenSeqNum = tracker.EncodeSeqNum(k)
		}
	}
	state.mu.RUnlock()
	return data, nil
}

// Unselect leaves the selected mailbox (UNSELECT, and CLOSE after its
// silent expunge).
func (sess *session) Unselect() error {
	defer sess.enter("UNSELECT")()
	sess.unselect()
	return nil
}

func (sess *session) unselect() {
	if sess.sel == nil {
		return
	}
	sess.as.close(sess.sel.mb, sess, sess.sel.tracker)
	sess.sel = nil
}

// Poll writes the updates waiting for this session (after each command).
func (sess *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	sess.mu.Lock()
	sess.lastActive = time.Now()
	sess.mu.Unlock()
	if sess.sel == nil {
		return nil
	}
	if allowExpunge { // otherwise the queue may keep its expunges
		sess.polling()
	}
	return sess.sel.tracker.Poll(w, allowExpunge)
}

// Idle writes updates as they come until the client sends DONE.
//
// The library may end the connection (and call Close) without waiting for
// Idle to return, so Idle registers itself and Close waits for it.
func (sess *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	sess.log.Debug("imap command", "cmd", "IDLE")
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		<-stop
		return nil
	}
	sess.lastActive = time.Now()
	sel := sess.sel
	done := make(chan struct{})
	sess.idleDone = done
	sess.mu.Unlock()
	defer close(done)
	if sel == nil {
		<-stop
		return nil
	}
	return sess.idleUpdates(sel.tracker, w, stop)
}

// Numbering. The server's view of a mailbox is mailboxState.uids; the
// client's differs by the updates still queued in its SessionTracker.
// Sets are resolved to UIDs under the state's read lock, and responses
// number messages by encoding the server's position again when written,
// so a message expunged meanwhile is skipped, never misnumbered.

// knownLastLocked returns the client's sequence number of the last
// message it knows that the server still has: the "*" of a sequence set.
// Messages after it in the client's view are pending expunges, which
// match nothing. mb.mu is held.
func (sel *selected) knownLastLocked() (seq uint32, serverSeq uint32) {
	k := uint32(len(sel.mb.uids))
	for k > 0 {
		if c := sel.tracker.EncodeSeqNum(k); c != 0 {
			return c, k
		}
		k--
	}
	return 0, 0
}

// resolve turns a sequence or UID set into the UIDs it names, ascending,
// among the messages the client knows. "$" is the saved search result.
func (sess *session) resolve(numSet imap.NumSet) []uint32 {
	sel := sess.sel
	if imap.IsSearchRes(numSet) {
		return sess.knownUIDs(sess.searchRes)
	}
	sel.mb.mu.RLock()
	defer sel.mb.mu.RUnlock()
	uids := sel.mb.uids
	var out []uint32
	switch set := numSet.(type) {
	case imap.SeqSet:
		last, _ := sel.knownLastLocked()
		for _, r := range set {
			start, stop := r.Start, r.Stop
			if start == 0 {
				start = last
			}
			if stop == 0 {
				stop = last
			}
			if start > stop {
				start, stop = stop, start
			}
			if (r.Start == 0 || r.Stop == 0) && start > last {
				continue // "n:*" beyond the last known message
			}
			for c := start; c >= start && c <= stop && c <= last; c++ {
				s := sel.tracker.DecodeSeqNum(c)
				if s == 0 || int(s) > len(uids) {
					continue
				}
				out = append(out, uids[s-1])
			}
		}
		slices.Sort(out)
		out = slices.Compact(out)
	case imap.UIDSet:
		_, lastServer := sel.knownLastLocked()
		var maxUID uint32
		if lastServer > 0 {
			maxUID = uids[lastServer-1]
		}
		for _, r := range set {
			start, stop := uint32(r.Start), uint32(r.Stop)
			if start == 0 {
				start = maxUID
			}
			if stop == 0 {
				stop = maxUID
			}
			if start > stop {
				start, stop = stop, start
			}
			i, _ := slices.BinarySearch(uids, start)
			for ; i < len(uids) && uids[i] <= stop; i++ {
				if uint32(i) >= lastServer {
					break // new to the client: announced by the next EXISTS first
				}
				out = append(out, uids[i])
			}
		}
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}

// knownUIDs keeps the UIDs (ascending) that the client still sees.
func (sess *session) knownUIDs(in []uint32) []uint32 {
	sel := sess.sel
	sel.mb.mu.RLock()
	defer sel.mb.mu.RUnlock()
	_, lastServer := sel.knownLastLocked()
	var out []uint32
	for _, uid := range in {
		if i, ok := slices.BinarySearch(sel.mb.uids, uid); ok && uint32(i) < lastServer {
			out = append(out, uid)
		}
	}
	return out
}

// seqNums returns the client's sequence number of each UID (0 if the
// client cannot be told about it now).
func (sess *session) seqNums(uids []uint32) []uint32 {
	sel := sess.sel
	out := make([]uint32, len(uids))
	sel.mb.mu.RLock()
	defer sel.mb.mu.RUnlock()
	for i, uid := range uids {
		if k, ok := slices.BinarySearch(sel.mb.uids, uid); ok {
			out[i] = sel.tracker.EncodeSeqNum(uint32(k + 1))
		}
	}
	return out
}

// toRanges compresses ascending UIDs into ranges.
func toRanges(uids []uint32) []store.UIDRange {
	var out []store.UIDRange
	for _, u := range uids {
		if n := len(out); n > 0 && out[n-1].Stop+1 == u {
			out[n-1].Stop = u
			continue
		}
		out = append(out, store.UIDRange{Start: u, Stop: u})
	}
	return out
}

// uidSet builds an imap.UIDSet from ascending UIDs.
func uidSet(uids []uint32) imap.UIDSet {
	var s imap.UIDSet
	for _, r := range toRanges(uids) {
		s = append(s, imap.UIDRange{Start: imap.UID(r.Start), Stop: imap.UID(r.Stop)})
	}
	return s
}

// isSilentExpunge reports whether the library called Expunge for CLOSE,
// which must expunge without responses and must do nothing in a
// read-only mailbox. The library passes an ExpungeWriter without a
// connection then, and has no other way to tell (go-imap issue #672).
func isSilentExpunge(w *imapserver.ExpungeWriter) bool {
	if w == nil {
		return true
	}
	f := reflect.ValueOf(w).Elem().FieldByName("conn")
	return f.IsValid() && f.IsNil()
}

var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Mailbox is read-only"}
