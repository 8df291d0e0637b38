package imap

import (
	"context"
	"log/slog"
	"slices"
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
//   - One mailboxState per mailbox selected by at least one session; it
//     holds the mailbox's UIDs in the server's view and the one
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
				mb.uids = append(mb.uids, ev.UID)
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
			mb.mu.Unlock()
		}
	}
}

// open returns the live state of a mailbox for a session that selects
// it, loading its UIDs on first use, and the session's tracker. The
// tracker is created under the lock, so the count returned is exactly
// the view the tracker starts from.
func (as *accountState) open(ctx context.Context, acct *store.Account, mailboxID int64, sess *session) (*mailboxState, *imapserver.SessionTracker, uint32, error) {
	as.mu.Lock()
	defer as.mu.Unlock()
	mb := as.mailboxes[mailboxID]
	if mb != nil {
		mb.mu.RLock()
		deleted := mb.deleted
		mb.mu.RUnlock()
		if deleted { // a new mailbox that reuses the ID of a deleted one
			mb = nil
		}
	}
	if mb == nil {
		// Events before the snapshot are for other mailboxes or already
		// in it; those after it are recognised by UID when applied.
		as.applyLocked(nil)
		uids, err := acct.UIDs(ctx, mailboxID)
		if err != nil {
			return nil, nil, 0, err
		}
		mb = &mailboxState{
			id:       mailboxID,
			uids:     uids,
			tracker:  imapserver.NewMailboxTracker(uint32(len(uids))),
			sessions: map[*session]struct{}{},
		}
		as.mailboxes[mailboxID] = mb
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.sessions[sess] = struct{}{}
	return mb, mb.tracker.NewSession(), uint32(len(mb.uids)), nil
}

// close drops a session's hold on a mailbox state.
func (as *accountState) close(mb *mailboxState, sess *session, t *imapserver.SessionTracker) {
	as.mu.Lock()
	defer as.mu.Unlock()
	t.Close()
	mb.mu.Lock()
	delete(mb.sessions, sess)
	empty := len(mb.sessions) == 0
	mb.mu.Unlock()
	if empty && as.mailboxes[mb.id] == mb {
		delete(as.mailboxes, mb.id)
	}
}

// mailboxState is one selected mailbox in the server's view.
type mailboxState struct {
	id      int64
	tracker *imapserver.MailboxTracker

	mu       sync.RWMutex
	uids     []uint32 // ascending; index+1 is the server's sequence number
	deleted  bool
	sessions map[*session]struct{}
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
	// Compact in place: keep every index not in idx.
	out := mb.uids[:idx[0]]
	next := 0
	for k := idx[0]; k < len(mb.uids); k++ {
		if next < len(idx) && idx[next] == k {
			next++
			continue
		}
		out = append(out, mb.uids[k])
	}
	mb.uids = out
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
