package store

import "sync"

// EventKind says what changed.
type EventKind int

const (
	// MessageAdded: a message was appended to MailboxID with UID.
	MessageAdded EventKind = iota + 1
	// FlagsChanged: the flags of UID in MailboxID are now Flags.
	FlagsChanged
	// MessageExpunged: UID was removed from MailboxID.
	MessageExpunged
	// MailboxCreated, MailboxRenamed, MailboxDeleted: MailboxID changed;
	// Name is the new name (empty for a deletion).
	MailboxCreated
	MailboxRenamed
	MailboxDeleted
)

// Event is one committed change. Events of one commit are published in
// the order they happened; ModSeq is the mailbox's modseq after the change.
type Event struct {
	Kind      EventKind
	AccountID int64
	MailboxID int64
	UID       uint32
	ModSeq    int64
	Flags     []string // FlagsChanged (and MessageAdded): the full flag set
	Name      string   // mailbox events
}

// Hub carries events from the store to everything that wants to hear of
// changes (IMAP IDLE, POP3, webmail). It is an interface so a multi-node
// backend can fan events out later.
type Hub interface {
	// Publish delivers events to every subscriber of their account.
	// It never blocks on a slow subscriber.
	Publish(events ...Event)
	// Subscribe returns a subscription to one account's events. The
	// caller must Close it.
	Subscribe(accountID int64) *Subscription
}

// Subscription receives one account's events. Ready has a value whenever
// events are waiting; Next takes them all. Events are never dropped.
type Subscription struct {
	account int64
	ready   chan struct{}
	onClose func()

	mu      sync.Mutex
	pending []Event
}

// Ready returns a channel that can be received from when Next has events.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Next returns the waiting events, oldest first, and clears them.
func (s *Subscription) Next() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	evs := s.pending
	s.pending = nil
	return evs
}

// Close stops the subscription.
func (s *Subscription) Close() {
	if s.onClose != nil {
		s.onClose()
	}
}

func (s *Subscription) push(evs []Event) {
	s.mu.Lock()
	s.pending = append(s.pending, evs...)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// memHub is the in-process Hub.
type memHub struct {
	mu   sync.RWMutex
	subs map[int64]map[*Subscription]struct{}
}

// NewHub returns an in-process event hub.
func NewHub() Hub {
	return &memHub{subs: map[int64]map[*Subscription]struct{}{}}
}

func (h *memHub) Publish(events ...Event) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	// Group by account, keeping order within each account.
	for i := 0; i < len(events); {
		j := i + 1
		for j < len(events) && events[j].AccountID == events[i].AccountID {
			j++
		}
		for s := range h.subs[events[i].AccountID] {
			s.push(events[i:j:j])
		}
		i = j
	}
}

func (h *memHub) Subscribe(accountID int64) *Subscription {
	s := &Subscription{account: accountID, ready: make(chan struct{}, 1)}
	s.onClose = func() { h.unsubscribe(s) }
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[accountID]
	if m == nil {
		m = map[*Subscription]struct{}{}
		h.subs[accountID] = m
	}
	m[s] = struct{}{}
	return s
}

func (h *memHub) unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[s.account], s)
	if len(h.subs[s.account]) == 0 {
		delete(h.subs, s.account)
	}
}
