package imap

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

// A session is one IMAP connection's backend. The library calls its
// methods one at a time from the connection's goroutine (Idle runs in a
// goroutine of its own while that goroutine waits for DONE; no other
// method runs meanwhile), so the fields below mu need no lock.
//
// Invariants:
//   - No lock is held while writing to the client.
//   - busy is set while a command other than IDLE runs; the watchdog
//     (auth and idle timeouts) and Shutdown never interrupt a busy
//     session, except Shutdown once its grace period is over.
//   - Store writes that change a selected mailbox are followed by
//     accountState.sync before the method returns, so the session's own
//     EXISTS/EXPUNGE are written by the Poll that precedes its tagged OK.
type session struct {
	srv    *Server
	conn   *imapserver.Conn
	id     string
	ipKey  string
	remote string
	log    *slog.Logger
	start  time.Time
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	busy       bool
	closed     bool
	lastActive time.Time
	timer      *time.Timer
	byeOnce    sync.Once
	idleDone   chan struct{} // closed when the last Idle call returned

	// Update backlog (backlog.go), touched by the account's event
	// goroutine as well as the session's.
	backlog  atomic.Int64 // updates queued since the session last read them all
	lastPoll atomic.Int64 // unix nanoseconds of that read
	storing  atomic.Bool  // applying its own flag change (under accountState.mu)
	kicked   atomic.Bool  // told BYE for its backlog

	// IDLE without a goroutine per session (backlog.go).
	idling   atomic.Bool // idleW is set
	idlePoll atomic.Bool // a pollIdle goroutine is on its way
	idleMu   sync.Mutex  // held while writing IDLE updates
	idleW    *imapserver.UpdateWriter
	idleT    *imapserver.SessionTracker

	acct        *store.Account
	as          *accountState
	appendLimit uint32
	sel         *selected
	// searchRes is the result saved by SEARCH RETURN (SAVE) (RFC 5182),
	// as UIDs; it is kept across commands, cleared by SELECT.
	searchRes []uint32
}

var (
	_ imapserver.Session               = (*session)(nil)
	_ imapserver.SessionIMAP4rev2      = (*session)(nil)
	_ imapserver.SessionUnauthenticate = (*session)(nil)
	_ imapserver.SessionAppendLimit    = (*session)(nil)
)

func newSession(srv *Server, c *imapserver.Conn, id, ipKey string) *session {
	remote := c.NetConn().RemoteAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{
		srv:        srv,
		conn:       c,
		id:         id,
		ipKey:      ipKey,
		remote:     remote,
		log:        srv.log.With("proto", "imap", "conn", id, "remote", remote),
		start:      time.Now(),
		ctx:        ctx,
		cancel:     cancel,
		lastActive: time.Now(),
	}
	sess.lastPoll.Store(time.Now().UnixNano())
	if bc, ok := c.NetConn().(*bufConn); ok {
		// The guard reads the limit from the library's goroutine, as
		// Login writes it.
		bc.setAppendLimit(func() int64 { return int64(sess.AppendLimit()) })
		bc.setCanStartTLS(func() bool { return sess.acct == nil })
	}
	sess.timer = time.AfterFunc(srv.opts.AuthTimeout, sess.watchdog)
	return sess
}

// enter marks the start of a command; the returned func marks its end.
func (sess *session) enter(cmd string) func() {
	sess.log.Debug("imap command", "cmd", cmd)
	sess.endIdle() // normally ended by the Poll after DONE already
	sess.mu.Lock()
	sess.busy = true
	sess.lastActive = time.Now()
	sess.mu.Unlock()
	return func() {
		sess.mu.Lock()
		sess.busy = false
		sess.lastActive = time.Now()
		sess.mu.Unlock()
	}
}

// watchdog logs out a session that stayed silent too long: AuthTimeout
// from connection to login, IdleTimeout between commands (IDLE included,
// as RFC 2177 asks clients to restart it every 29 minutes).
func (sess *session) watchdog() {
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		return
	}
	var wait time.Duration
	switch {
	case sess.busy:
		wait = time.Second
	case sess.acct == nil:
		wait = sess.srv.opts.AuthTimeout - time.Since(sess.start)
	default:
		wait = sess.srv.opts.IdleTimeout - time.Since(sess.lastActive)
	}
	if wait > 0 {
		sess.timer.Reset(wait)
		sess.mu.Unlock()
		return
	}
	loggedIn := sess.acct != nil
	sess.mu.Unlock()
	sess.log.Info("imap autologout", "authenticated", loggedIn)
	sess.bye("Autologout; idle for too long")
}

// bye sends an untagged BYE and closes the connection, once.
func (sess *session) bye(text string) {
	sess.byeOnce.Do(func() {
		sess.conn.Bye(text)
	})
}

// shutdown ends the session for Server.Shutdown: after its command in
// progress, or when ctx is done.
func (sess *session) shutdown(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		sess.mu.Lock()
		busy := sess.busy && !sess.closed
		if !busy {
			sess.closed = true
		}
		sess.mu.Unlock()
		if !busy {
			break
		}
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	sess.bye("Server shutting down")
}

// Close is called by the library when the connection ends.
func (sess *session) Close() error {
	sess.mu.Lock()
	sess.closed = true
	sess.timer.Stop()
	idle := sess.idleDone
	sess.mu.Unlock()
	if idle != nil {
		<-idle // the library has closed Idle's stop channel by now
	}
	sess.endIdle()
	sess.unselect()
	sess.logout()
	sess.cancel()
	sess.srv.forget(sess)
	sess.log.Info("imap disconnect", "dur", time.Since(sess.start).Round(time.Millisecond))
	return nil
}

func (sess *session) logout() {
	if sess.as != nil {
		sess.srv.reg.release(sess.as)
	}
	sess.mu.Lock()
	sess.acct, sess.as = nil, nil
	sess.mu.Unlock()
}

// Login checks a password (LOGIN, and AUTHENTICATE PLAIN through the
// library), slowed down by the shared limiter after failures.
func (sess *session) Login(username, password string) error {
	defer sess.enter("LOGIN")()
	lim := sess.srv.limiter
	if err := lim.Wait(sess.ctx, sess.remote, username); err != nil {
		return errUnavailable
	}
	acct, err := sess.srv.opts.Store.Login(sess.ctx, username, password)
	if errors.Is(err, store.ErrAuthFailed) {
		lim.Failure(sess.remote, username)
		sess.log.Info("imap login failed", "user", username)
		return imapserver.ErrAuthFailed
	} else if err != nil {
		return sess.replyFor(err)
	}
	lim.Success(sess.remote, username)
	limit := sess.srv.opts.AppendLimit
	if info, err := acct.Info(sess.ctx); err == nil && info.QuotaBytes > 0 {
		limit = min(limit, info.QuotaBytes)
	}
	as := sess.srv.reg.acquire(acct.ID)
	sess.mu.Lock()
	sess.acct, sess.as = acct, as
	sess.appendLimit = uint32(limit)
	sess.lastActive = time.Now()
	sess.mu.Unlock()
	sess.log = sess.log.With("user", acct.Address)
	sess.log.Info("imap login")
	return nil
}

// Unauthenticate returns to the not-authenticated state (RFC 8437).
func (sess *session) Unauthenticate() error {
	defer sess.enter("UNAUTHENTICATE")()
	sess.unselect()
	sess.logout()
	sess.searchRes = nil
	sess.mu.Lock()
	sess.start = time.Now()
	sess.timer.Reset(sess.srv.opts.AuthTimeout)
	sess.mu.Unlock()
	return nil
}

// AppendLimit is the account's APPENDLIMIT (RFC 7889): the server's
// limit, lowered to the account's quota.
func (sess *session) AppendLimit() uint32 {
	if sess.appendLimit == 0 {
		return uint32(sess.srv.opts.AppendLimit)
	}
	return sess.appendLimit
}

// Namespace has one personal namespace with "/" as separator (RFC 2342).
func (sess *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{
		Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}},
	}, nil
}

var errUnavailable = &imap.Error{
	Type: imap.StatusResponseTypeNo,
	Code: imap.ResponseCodeUnavailable,
	Text: "Try again later",
}

// replyFor maps a store error kind to the reply the client sees. Unknown
// errors are our fault: logged once here with the connection id, which
// the reply carries as a reference.
func (sess *session) replyFor(err error) error {
	var imapErr *imap.Error
	switch {
	case errors.As(err, &imapErr):
		return err
	case errors.Is(err, store.ErrNotFound):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "No such mailbox or message"}
	case errors.Is(err, store.ErrExists):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Mailbox already exists"}
	case errors.Is(err, store.ErrOverQuota):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Over quota"}
	case errors.Is(err, store.ErrTooBig):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too big"}
	case errors.Is(err, store.ErrInvalid):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Not possible"}
	case errors.Is(err, store.ErrAuthFailed):
		return imapserver.ErrAuthFailed
	}
	sess.log.Error("imap command failed", "err", err)
	return &imap.Error{
		Type: imap.StatusResponseTypeNo,
		Code: imap.ResponseCodeUnavailable,
		Text: "Try again later (ref " + sess.id + ")",
	}
}
