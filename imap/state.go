package imap

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

// Live mailbox state, shared by every session of the process.
//
// Invariants:
//   - One accountState per account with a logged-in session; it holds the
//     account's one store subscription and applies its events in order.
//   - One mailboxState per mailbox selected by at least one session, and
//     up to maxIdleMailboxes more per account that no session selects
//     now (so SELECT again, or in another connection, does not read the
//     mailbox again). It holds the mailbox's UIDs and flags in the
//     server's view, kept current by the account's events, and the one
//     imapserver.MailboxTracker of that mailbox.
//   - uids and the tracker's message count change together, only under
//     accountState.mu and mailboxState.mu (write), so every expunge is
//     queued with a sequence number the tracker accepts.
//   - Nothing blocks on a client while holding either lock: the tracker
//     only queues, and sessions write to the network after unlocking.

// registry holds the accounts with logged-in sessions.
type registry struct {
	st  *store.Store
	log *slog.Logger

	mu       sync.Mutex
	accounts map[int64]*accountState
}

func newRegistry(st *store.Store, log *slog.Logger) *registry {
	return &registry{st: st, log: log, accounts: map[int64]*accountState{}}
}

// acquire returns the live state of an account, subscribing to its
// events on first use. Each acquire needs one release.
func (r *registry) acquire(id int64) *accountState {
	r.mu.Lock()
	defer r.mu.Unlock()
	as := r.accounts[id]
	if as == nil {
		as = &accountState{
			reg:       r,
			id:        id,
			sub:       r.st.Hub().Subscribe(id),
			done:      make(chan struct{}),
			mailboxes: map[int64]*mailboxState{},
		}
		r.accounts[id] = as
		go as.loop()
	}
	as.refs++
	return as
}

func (r *registry) release(as *accountState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if as.refs--; as.refs > 0 {
		return
	}
	delete(r.accounts, as.id)
	close(as.done)
	as.sub.Close()
}

// closeAll stops every account loop (server shutdown).
func (r *registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, as := range r.accounts {
		delete(r.accounts, id)
		close(as.done)
		as.sub.Close()
	}
}

// accountState applies one account's store events to its live mailboxes.
type accountState struct {
	reg  *registry
	id   int64
	refs int // guarded by reg.mu
	sub  *store.Subscription
	done chan struct{}

	// mu serialises event application. A session that must tell its
	// own changes from others' (STORE) holds it across its store write.
	mu        sync.Mutex
	mailboxes map[int64]*mailboxState
	clock     uint64 // counts closes, to find the mailbox left longest ago
}

func (as *accountState) loop() {
	for {
		select {
		case <-as.sub.Ready():
			as.mu.Lock()
			as.applyLocked(nil)
			as.mu.Unlock()
		case <-as.done:
			return
		}
	}
}

// sync applies every event published so far. A session calls it after
// its own store write, so its EXISTS/EXPUNGE are queued before it replies.
func (as *accountState) sync() {
	as.mu.Lock()
	as.applyLocked(nil)
	as.mu.Unlock()
}

// own marks the FlagsChanged events of one write (a mailbox and modseq)
// as coming from a session, which reports them itself.
type own struct {
	mailboxID int64
	modseq    int64
	tracker   *imapserver.SessionTracker
}

// applyLocked takes the waiting events and applies them. as.mu is held.
func (as *accountState) applyLocked(mine *own) {
	evs := as.sub.Next()
	for i := 0; i < len(evs); i++ {
		ev := evs[i]
		mb := as.mailboxes[ev.MailboxID]
		if mb == nil {
			continue
		}
		switch ev.Kind {
		case store.MessageAdded:
			mb.mu.Lock()
			if n := len(mb.uids); n == 0 || ev.UID > mb.uids[n-1] {
				sys, kws := store.SplitFlags(ev.Flags)
				mb.uids = append(mb.uids, ev.UID)
				mb.system = append(mb.system, sys)
				mb.setKeywordsLocked(ev.UID, kws)
				// One EXISTS step per message: SessionTracker.EncodeSeqNum
				// only recognises increments of one.
				mb.tracker.QueueNumMessages(uint32(len(mb.uids)))
				mb.noteQueued(1, nil)
			}
			mb.mu.Unlock()
		case store.MessageExpunged:
			// A run of expunges in one mailbox is applied highest UID
			// first: each queued sequence number is then valid in the
			// tracker's view, and the slice is compacted once.
			j := i + 1
			for j < len(evs) && evs[j].Kind == store.MessageExpunged && evs[j].MailboxID == ev.MailboxID {
				j++
			}
			mb.expungeLocked(evs[i:j])
			i = j - 1
		case store.FlagsChanged:
			mb.mu.Lock()
			if k, ok := slices.BinarySearch(mb.uids, ev.UID); ok {
				if ev.ModSeq > mb.modseq { // older changes are in the view
					sys, kws := store.SplitFlags(ev.Flags)
					mb.system[k] = sys
					mb.setKeywordsLocked(ev.UID, kws)
				}
				var source *imapserver.SessionTracker
				if mine != nil && mine.mailboxID == ev.MailboxID && mine.modseq == ev.ModSeq {
					source = mine.tracker
				}
				mb.tracker.QueueMessageFlags(uint32(k+1), imap.UID(ev.UID), imapFlags(ev.Flags), source)
				mb.noteQueued(1, source)
			}
			mb.mu.Unlock()
		case store.MailboxDeleted:
			mb.mu.Lock()
			mb.deleted = true
			for s := range mb.sessions {
				go s.bye("Selected mailbox was deleted")
			}
			if len(mb.sessions) == 0 {
				delete(as.mailboxes, mb.id)
			}
			mb.mu.Unlock()
		}
	}
}

// open returns the live state of a mailbox for a session that selects
// it, reading its view on first use, and the session's tracker. The
// tracker is created under the lock, so the count returned is exactly
// the view the tracker starts from.
func (as *accountState) open(ctx context.Context, acct *store.Account, mb0 store.Mailbox, sess *session) (*mailboxState, *imapserver.SessionTracker, uint32, error) {
	as.mu.Lock()
	defer as.mu.Unlock()
	// Events before the snapshot are for other mailboxes or already in
	// it; those after it are recognised by UID (added, expunged) or
	// modseq (flags) when applied.
	as.applyLocked(nil)
	mb := as.mailboxes[mb0.ID]
	if mb != nil {
		mb.mu.RLock()
		// A new mailbox that reuses the ID of a deleted one (whose event
		// may not be here yet) has another UIDVALIDITY.
		stale := mb.deleted || mb.uidValidity != mb0.UIDValidity
		mb.mu.RUnlock()
		if stale {
			mb = nil
		}
	}
	if mb == nil {
		v, err := acct.View(ctx, mb0.ID)
		if err != nil {
			return nil, nil, 0, err
		}
		mb = &mailboxState{
			id:          mb0.ID,
			uidValidity: mb0.UIDValidity,
			tracker:     imapserver.NewMailboxTracker(uint32(len(v.UIDs))),
			uids:        v.UIDs,
			system:      v.System,
			keywords:    map[uint32]string{},
			inUse:       map[string]*keywordUse{},
			modseq:      v.ModSeq,
			sessions:    map[*session]struct{}{},
		}
		for uid, kws := range v.Keywords {
			mb.setKeywordsLocked(uid, kws)
		}
		as.mailboxes[mb0.ID] = mb
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.sessions[sess] = struct{}{}
	return mb, mb.tracker.NewSession(), uint32(len(mb.uids)), nil
}

// maxIdleMailboxes is how many mailboxes per account keep their state
// while no session selects them: a client that goes back and forth
// between a few folders, or reconnects, then reads none of them again.
// A mailbox of 100,000 messages holds about 0.5 MiB.
const maxIdleMailboxes = 4

// close drops a session's hold on a mailbox state. The state stays,
// kept current, unless more than maxIdleMailboxes of the account's
// mailboxes are unselected; then the one left longest ago goes.
func (as *accountState) close(mb *mailboxState, sess *session, t *imapserver.SessionTracker) {
	as.mu.Lock()
	defer as.mu.Unlock()
	t.Close()
	as.clock++
	mb.mu.Lock()
	delete(mb.sessions, sess)
	mb.left = as.clock
	gone := mb.deleted && len(mb.sessions) == 0
	mb.mu.Unlock()
	if gone && as.mailboxes[mb.id] == mb {
		delete(as.mailboxes, mb.id)
	}
	var idle []*mailboxState
	for _, m := range as.mailboxes {
		m.mu.RLock()
		if len(m.sessions) == 0 {
			idle = append(idle, m)
		}
		m.mu.RUnlock()
	}
	if len(idle) <= maxIdleMailboxes {
		return
	}
	oldest := idle[0]
	for _, m := range idle[1:] {
		if m.left < oldest.left {
			oldest = m
		}
	}
	delete(as.mailboxes, oldest.id)
}

// mailboxState is one selected mailbox in the server's view.
type mailboxState struct {
	id          int64
	uidValidity uint32
	tracker     *imapserver.MailboxTracker

	mu       sync.RWMutex
	uids     []uint32            // ascending; index+1 is the server's sequence number
	system   []store.SystemFlags // system flags of uids[i]
	keywords map[uint32]string   // keywords of the messages with any (store.SplitFlags form)
	inUse    map[string]*keywordUse
	// modseq is the view's modseq: flag changes up to it are in system
	// and keywords already.
	modseq   int64
	deleted  bool
	sessions map[*session]struct{}
	left     uint64 // accountState.clock when the last session left
}

// keywordUse counts the messages that carry a keyword (compared
// without case), for the FLAGS of SELECT.
type keywordUse struct {
	name string // as first seen
	n    int
}

// setKeywordsLocked records the keywords of a message (store.SplitFlags
// form, "" for none). mb.mu is held for writing.
func (mb *mailboxState) setKeywordsLocked(uid uint32, kws string) {
	old := mb.keywords[uid]
	if old == kws {
		return
	}
	for k := range strings.FieldsSeq(old) {
		lk := strings.ToLower(k)
		if u := mb.inUse[lk]; u != nil {
			if u.n--; u.n <= 0 {
				delete(mb.inUse, lk)
			}
		}
	}
	for k := range strings.FieldsSeq(kws) {
		lk := strings.ToLower(k)
		u := mb.inUse[lk]
		if u == nil {
			u = &keywordUse{name: k}
			mb.inUse[lk] = u
		}
		u.n++
	}
	if kws == "" {
		delete(mb.keywords, uid)
	} else {
		mb.keywords[uid] = kws
	}
}

// keywordsInUse returns the keywords that messages of the mailbox
// carry, sorted, each once.
func (mb *mailboxState) keywordsInUse() []string {
	mb.mu.RLock()
	defer mb.mu.RUnlock()
	out := make([]string, 0, len(mb.inUse))
	for _, u := range mb.inUse {
		out = append(out, u.name)
	}
	slices.Sort(out)
	return out
}

// firstUnseenLocked returns the server's sequence number of the first
// message without \Seen, 0 if none. mb.mu is held.
func (mb *mailboxState) firstUnseenLocked() uint32 {
	for i, f := range mb.system {
		if f&store.Seen == 0 {
			return uint32(i + 1)
		}
	}
	return 0
}

// expungeLocked removes the UIDs of a run of expunge events and queues
// their EXPUNGE updates. as.mu is held.
func (mb *mailboxState) expungeLocked(evs []store.Event) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	idx := make([]int, 0, len(evs))
	for _, ev := range evs {
		if k, ok := slices.BinarySearch(mb.uids, ev.UID); ok {
			idx = append(idx, k)
		}
	}
	if len(idx) == 0 {
		return
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for i := len(idx) - 1; i >= 0; i-- {
		mb.tracker.QueueExpunge(uint32(idx[i] + 1))
	}
	mb.noteQueued(len(idx), nil)
	for _, k := range idx {
		mb.setKeywordsLocked(mb.uids[k], "")
	}
	// Compact in place: keep every index not in idx.
	out, sys := mb.uids[:idx[0]], mb.system[:idx[0]]
	next := 0
	for k := idx[0]; k < len(mb.uids); k++ {
		if next < len(idx) && idx[next] == k {
			next++
			continue
		}
		out = append(out, mb.uids[k])
		sys = append(sys, mb.system[k])
	}
	mb.uids, mb.system = out, sys
}

func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}

func storeFlags(flags []imap.Flag) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		out = append(out, string(f))
	}
	return out
}
