package imap

import (
	"time"

	"github.com/emersion/go-imap/v2/imapserver"
)

// Update backlog. go-imap's SessionTracker queues every update (EXISTS,
// EXPUNGE, FETCH FLAGS) for a selected session until the session polls:
// after a command, or at once while it IDLEs. A client that selects a
// mailbox and then stays silent, neither IDLE nor commands, would have
// every change of that mailbox kept in memory for it until it logs out
// (30 minutes of silence). Each session therefore counts what was queued
// for it since it last read its updates; past Options.MaxPendingUpdates,
// once it has not read for Options.PendingGrace and is not in the middle
// of a command, it is told "* BYE" and disconnected, as Dovecot ends a
// session that has fallen too far behind. Its client reconnects and
// resynchronises from the store (UIDs, flags), which costs less than
// replaying the backlog.

// noteQueued records n updates queued to mb's tracker for every session
// selecting it, except the session whose own flag change they report
// (source != nil; that session has storing set while it applies them).
// mb.mu is held.
func (mb *mailboxState) noteQueued(n int, source *imapserver.SessionTracker) {
	for s := range mb.sessions {
		if source != nil && s.storing.Load() {
			continue
		}
		b := s.backlog.Add(int64(n))
		if s.idling.Load() && s.idlePoll.CompareAndSwap(false, true) {
			go s.pollIdle()
		}
		limit := int64(s.srv.opts.MaxPendingUpdates)
		// Checked when the backlog crosses the limit and every 1,024
		// updates past it: the check takes the session's lock.
		if b > limit && (b-int64(n) <= limit || b/1024 != (b-int64(n))/1024) {
			s.checkBacklog(b)
		}
	}
}

// checkBacklog disconnects the session if it is over its backlog, idle
// (no command running) and has not read updates for PendingGrace.
func (sess *session) checkBacklog(backlog int64) {
	sess.mu.Lock()
	busy, closed := sess.busy, sess.closed
	sess.mu.Unlock()
	last := time.Unix(0, sess.lastPoll.Load())
	if busy || closed || time.Since(last) < sess.srv.opts.PendingGrace {
		return
	}
	if !sess.kicked.CompareAndSwap(false, true) {
		return
	}
	sess.log.Warn("imap session too far behind", "pending", backlog, "limit", sess.srv.opts.MaxPendingUpdates,
		"silent", time.Since(last).Round(time.Millisecond))
	go sess.bye("Too many changes while you were away; please reconnect")
}

// polling marks that the session is about to read all its queued
// updates in a command's Poll; IDLE, if it was on, is over.
func (sess *session) polling() {
	sess.endIdle()
	sess.resetBacklog()
}

func (sess *session) resetBacklog() {
	sess.backlog.Store(0)
	sess.lastPoll.Store(time.Now().UnixNano())
}

// IDLE (RFC 2177). The library runs the session's Idle in a goroutine of
// its own and reads the client's DONE meanwhile. Instead of keeping that
// goroutine (and its stack) for every idling client, idleUpdates writes
// what is queued, registers the session as idling and returns; each
// later update starts a short-lived goroutine (pollIdle) that writes it.
// IDLE ends with the Poll the library runs after DONE, with the next
// command (session.enter) or with the connection (Close); endIdle waits
// for a write in progress, so no update is written once a command runs.

// idleUpdates starts IDLE on the session's tracker t.
func (sess *session) idleUpdates(t *imapserver.SessionTracker, w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	sess.idleMu.Lock()
	defer sess.idleMu.Unlock()
	sess.idleW, sess.idleT = w, t
	sess.idling.Store(true)
	sess.resetBacklog()
	return t.Poll(w, true)
}

// pollIdle writes the updates queued for an idling session.
func (sess *session) pollIdle() {
	sess.idleMu.Lock()
	defer sess.idleMu.Unlock()
	// Cleared first: an update queued while this one writes starts
	// another.
	sess.idlePoll.Store(false)
	if sess.idleW == nil {
		return
	}
	sess.resetBacklog()
	if err := sess.idleT.Poll(sess.idleW, true); err != nil {
		// The connection is failing; the library's read ends it.
		sess.log.Debug("imap idle write", "err", err)
		sess.idleW, sess.idleT = nil, nil
		sess.idling.Store(false)
	}
}

// endIdle ends IDLE, waiting for a write in progress.
func (sess *session) endIdle() {
	if !sess.idling.Load() {
		return
	}
	sess.idleMu.Lock()
	sess.idling.Store(false)
	sess.idleW, sess.idleT = nil, nil
	sess.idleMu.Unlock()
}
