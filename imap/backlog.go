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
		select {
		case s.wake <- struct{}{}:
		default:
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
// updates.
func (sess *session) polling() {
	sess.backlog.Store(0)
	sess.lastPoll.Store(time.Now().UnixNano())
}

// idleUpdates writes the session's updates as they are queued until stop
// is closed (the client sent DONE or went away). It replaces
// SessionTracker.Idle so that every read of the queue resets the
// backlog.
func (sess *session) idleUpdates(t *imapserver.SessionTracker, w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	for {
		sess.polling()
		if err := t.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-sess.wake:
		case <-stop:
			return nil
		}
	}
}
