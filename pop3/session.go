package pop3

// A session is one connection, run by one goroutine (session.run) that owns
// the connection, the line-capped reader and the reply buffer. Invariants:
//
//   - Only run's goroutine reads or writes the connection. Shutdown touches
//     a session only through interrupt (under sess.mu: a read deadline in
//     the past when the session is waiting for a command) and, when its
//     context ends, by closing the transport (netConn, never the TLS layer,
//     whose Close may wait to send an alert).
//   - Nothing blocks while sess.mu or the server's mu is held: no network
//     I/O, no store call, no sleep.
//   - Every command gets exactly one reply. Handlers write positive replies
//     (several lines for LIST, RETR, ...); error replies are written only by
//     the loop, from replyFor. Replies are flushed when the client has no
//     further command waiting in the reader, so a pipelined batch goes out
//     in as few packets as possible, and always before STLS's handshake.
//   - Before login a read waits at most until the login budget
//     (AuthTimeout from connect) runs out; after login each read waits
//     IdleTimeout. Each write that makes progress restarts the write
//     deadline, so a large RETR to a slow client is not cut short while a
//     stalled one is.
//   - A timeout, a dropped connection, Shutdown and a recovered panic end
//     the session without entering UPDATE: nothing is deleted (RFC 1939 §6).
//     Only QUIT in TRANSACTION deletes, in one store call, before its reply.
//   - The maildrop lock is held from login until the session ends or QUIT
//     has committed, whichever comes first.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"mailbox/store"
)

const (
	// lingerTimeout bounds how long a session closed by the server keeps
	// reading (and discarding) input after its last reply, so the client
	// gets the reply instead of a reset.
	lingerTimeout = time.Second
	// lingerBytes bounds what is discarded then.
	lingerBytes = 64 << 10
	// readBufferBytes is the size of a session's line reader; longer lines
	// are assembled up to MaxLineBytes.
	readBufferBytes = 4096
)

// state is where a session is in RFC 1939's state machine; commands list
// the states they are allowed in.
type state uint8

const (
	authorization state = 1 << iota
	transaction
	update

	inAnyState = authorization | transaction
)

func (s state) String() string {
	switch s {
	case authorization:
		return "authorization"
	case transaction:
		return "transaction"
	case update:
		return "update"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// command is one verb: where it is allowed and what runs it. arg is the
// rest of the line after the verb and one space, exactly as sent.
type command struct {
	allowed state
	run     func(sess *session, arg string) error
}

// commands is the whole protocol. The loop checks allowed, so handlers
// never look at the state to refuse a command.
var commands = map[string]command{
	"CAPA": {allowed: inAnyState, run: (*session).capa},
	"QUIT": {allowed: inAnyState, run: (*session).quit},
	"USER": {allowed: authorization, run: (*session).user},
	"PASS": {allowed: authorization, run: (*session).pass},
	"AUTH": {allowed: authorization, run: (*session).auth},
	"STLS": {allowed: authorization, run: (*session).stls},
	"STAT": {allowed: transaction, run: (*session).stat},
	"LIST": {allowed: transaction, run: (*session).list},
	"UIDL": {allowed: transaction, run: (*session).uidl},
	"RETR": {allowed: transaction, run: (*session).retr},
	"TOP":  {allowed: transaction, run: (*session).top},
	"DELE": {allowed: transaction, run: (*session).dele},
	"RSET": {allowed: transaction, run: (*session).rset},
	"NOOP": {allowed: transaction, run: (*session).noop},
	"LAST": {allowed: transaction, run: (*session).last},
}

// httpVerbs are answered, before login, with one error and a close: a
// browser or an HTTP client pointed at this port (or a cross-protocol
// attack) gets nothing further.
var httpVerbs = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"OPTIONS": true, "CONNECT": true, "TRACE": true, "PATCH": true,
}

// replyError is an error whose reply the handler chose: the text after
// "-ERR ".
type replyError string

func (e replyError) Error() string { return string(e) }

// The fixed replies. Clients see these and nothing else of an error.
const (
	errUnknown     replyError = "unknown command"
	errSyntax      replyError = "syntax error"
	errNotNow      replyError = "not allowed now"
	errNoMessage   replyError = "no such message"
	errDeleted     replyError = "message is deleted"
	errLineTooLong replyError = "line too long"
	errAuthFailed  replyError = "[AUTH] invalid login"
	errInUse       replyError = "[IN-USE] mailbox locked"
	errPlaintext   replyError = "[AUTH] plaintext authentication disallowed on non-secure connections"
	errMechanism   replyError = "unsupported authentication mechanism"
	errCancelled   replyError = "authentication cancelled"
	errBadResponse replyError = "invalid authentication response"
)

// hangupError ends the session without a reply: the connection broke, or
// a multi-line reply was cut short and nothing sensible can follow.
type hangupError struct{ err error }

func (e hangupError) Error() string { return e.err.Error() }
func (e hangupError) Unwrap() error { return e.err }

// msg is one message of the login snapshot.
type msg struct {
	store.Message
	deleted   bool // DELE in this session
	retrieved bool // RETR in this session: flagged \Seen at QUIT
}

type session struct {
	srv *Server
	id  string
	// netConn is the TCP connection under any TLS: it carries deadlines
	// and is what Shutdown closes. conn is what the protocol reads and
	// writes: netConn, or TLS over it (POP3S from the start, or after
	// STLS).
	netConn net.Conn
	conn    net.Conn
	remote  string
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	start   time.Time

	r      *bufio.Reader
	w      *bufio.Writer // nil while nothing is waiting to be sent
	in     int64
	out    int64
	secure bool

	state        state
	errors       int    // -ERR replies in a row
	failedLogins int    // in this connection
	hangup       bool   // close after this reply
	linger       bool   // drain input before closing, so the last reply arrives
	reason       string // why the session ended, for the log
	userName     string // from USER, until PASS
	acct         *store.Account
	release      func() // maildrop lock; nil when not held
	inbox        store.Mailbox
	msgs         []msg
	lastMsg      int // RFC 1460 LAST

	mu      sync.Mutex // guards closing, busy
	closing bool       // Shutdown asked the session to end
	busy    bool       // running a command, not waiting for one
}

func newSession(srv *Server, c net.Conn) *session {
	ctx, cancel := context.WithCancel(srv.ctx)
	sess := &session{
		srv:     srv,
		id:      fmt.Sprintf("%08x", rand.Uint32()),
		netConn: c,
		conn:    c,
		remote:  c.RemoteAddr().String(),
		ctx:     ctx,
		cancel:  cancel,
		start:   time.Now(),
		state:   authorization,
		busy:    true,
	}
	if tc, ok := c.(*tls.Conn); ok {
		sess.netConn = tc.NetConn()
	}
	sess.log = srv.log.With("proto", "pop3", "conn", sess.id, "remote", sess.remote)
	sess.r = bufio.NewReaderSize(connReader{sess}, readBufferBytes)
	return sess
}

// connReader and connWriter reach the current connection (plain or TLS)
// and count bytes; connWriter also restarts the write deadline per write.
type connReader struct{ sess *session }

func (c connReader) Read(p []byte) (int, error) {
	n, err := c.sess.conn.Read(p)
	c.sess.in += int64(n)
	return n, err
}

type connWriter struct{ sess *session }

func (c connWriter) Write(p []byte) (int, error) {
	c.sess.netConn.SetWriteDeadline(c.sess.deadline())
	n, err := c.sess.conn.Write(p)
	c.sess.out += int64(n)
	return n, err
}

// deadline is when the current wait for the client ends: the login budget
// before login, IdleTimeout from now after.
func (sess *session) deadline() time.Time {
	if sess.state == authorization {
		return sess.start.Add(sess.srv.opts.AuthTimeout)
	}
	return time.Now().Add(sess.srv.opts.IdleTimeout)
}

// interrupt asks the session to end after its current command. A session
// waiting for a command is woken at once.
func (sess *session) interrupt() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.closing = true
	if !sess.busy {
		sess.netConn.SetReadDeadline(time.Unix(1, 0))
	}
}

// waitCommand prepares to read the next command; false means Shutdown
// asked the session to end.
func (sess *session) waitCommand() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.closing {
		return false
	}
	sess.busy = false
	sess.netConn.SetReadDeadline(sess.deadline())
	return true
}

func (sess *session) setBusy() {
	sess.mu.Lock()
	sess.busy = true
	sess.mu.Unlock()
}

func (sess *session) run() {
	defer sess.finish()
	defer func() {
		// A bug in a handler ends this session only: log it, give the
		// client the "our fault" reply, close.
		if v := recover(); v != nil {
			sess.log.Error("panic", "err", fmt.Sprint(v), "stack", string(debug.Stack()))
			sess.reason = "panic"
			sess.writeLine("-ERR [SYS/TEMP] try again later (ref " + sess.id + ")")
		}
	}()
	sess.log.Debug("connect")
	if tc, ok := sess.conn.(*tls.Conn); ok {
		sess.netConn.SetDeadline(sess.deadline())
		if err := tc.HandshakeContext(sess.ctx); err != nil {
			sess.log.Debug("tls handshake failed", "err", err)
			sess.reason = "tls handshake"
			return
		}
		sess.secure = true
	}
	sess.writeLine("+OK " + sess.srv.opts.Hostname + " POP3 server ready")
	if err := sess.flush(); err != nil {
		sess.reason = "write"
		return
	}
	for {
		if !sess.waitCommand() {
			sess.reason = "shutdown"
			return
		}
		line, err := sess.readLine()
		sess.setBusy()
		if errors.Is(err, errLineTooLong) {
			sess.log.Warn("line too long", "max", sess.srv.opts.MaxLineBytes)
			sess.writeLine("-ERR " + string(errLineTooLong))
			sess.reason, sess.linger = "line too long", true
			return
		}
		if err != nil {
			sess.reason = sess.readFailure(err)
			return
		}
		if !sess.execute(line) {
			return
		}
	}
}

// execute runs one command line and writes its reply; false ends the
// session.
func (sess *session) execute(line string) bool {
	begin := time.Now()
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	cmd, known := commands[verb]
	var err error
	switch {
	case !known:
		err = errUnknown
		if sess.state == authorization && httpVerbs[verb] {
			sess.hangup, sess.linger, sess.reason = true, true, "http request"
		}
	case cmd.allowed&sess.state == 0:
		err = errNotNow
	case hasControl(arg):
		err = errSyntax
	default:
		err = cmd.run(sess, arg)
	}
	if he := (hangupError{}); errors.As(err, &he) {
		sess.log.Debug("command", "cmd", logVerb(verb, known), "err", he.err, "dur", time.Since(begin))
		sess.reason = "hangup: " + he.err.Error()
		return false
	}
	code := "+OK"
	if err != nil {
		code = "-ERR"
		sess.errors++
		sess.writeLine("-ERR " + sess.replyFor(err))
	} else {
		sess.errors = 0
	}
	sess.log.Debug("command", "cmd", logVerb(verb, known), "code", code, "dur", time.Since(begin))
	if max := sess.srv.opts.MaxErrors; sess.errors >= max || sess.failedLogins >= max {
		sess.log.Warn("too many errors", "errors", sess.errors, "failed_logins", sess.failedLogins)
		sess.reason, sess.linger = "too many errors", true
		return false
	}
	if sess.hangup {
		return false
	}
	if sess.r.Buffered() == 0 {
		if err := sess.flush(); err != nil {
			sess.reason = "write"
			return false
		}
	}
	return true
}

// logVerb is the verb as logged: unknown verbs are the client's bytes,
// so only a short prefix goes to the log.
func logVerb(verb string, known bool) string {
	if known {
		return verb
	}
	if len(verb) > 16 {
		verb = verb[:16]
	}
	return "unknown:" + strconv.Quote(verb)
}

// hasControl reports a control character (other than tab) in an argument:
// NUL and bare CR have no place in any POP3 command.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// replyFor maps an error to the text after "-ERR ". Anything it does not
// know is our fault: logged once here, answered [SYS/TEMP] with the
// connection id as reference.
func (sess *session) replyFor(err error) string {
	var re replyError
	switch {
	case errors.As(err, &re):
		return string(re)
	case errors.Is(err, store.ErrAuthFailed):
		return string(errAuthFailed)
	case errors.Is(err, store.ErrLocked):
		return string(errInUse)
	}
	sess.log.Error("store failure", "err", err)
	return "[SYS/TEMP] try again later (ref " + sess.id + ")"
}

// readFailure names why a read ended the session.
func (sess *session) readFailure(err error) string {
	sess.mu.Lock()
	closing := sess.closing
	sess.mu.Unlock()
	var ne net.Error
	switch {
	case closing:
		return "shutdown"
	case errors.As(err, &ne) && ne.Timeout():
		// RFC 1939 §3: on autologout the server closes without a reply
		// and without entering UPDATE.
		return "timeout"
	case errors.Is(err, io.EOF):
		return "client closed"
	}
	return "read: " + err.Error()
}

// readLine reads one line and returns it without its line end (CRLF, or a
// bare LF from lenient clients). A line longer than MaxLineBytes is
// errLineTooLong; the rest of it stays unread.
func (sess *session) readLine() (string, error) {
	limit := sess.srv.opts.MaxLineBytes
	var line []byte
	for {
		frag, err := sess.r.ReadSlice('\n')
		if len(line)+len(frag) > limit {
			return "", errLineTooLong
		}
		if err == nil && line == nil {
			line = frag // the common case: no copy before the string
			break
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return string(line), nil
}

// writer returns the reply buffer, taking one from the pool if needed.
func (sess *session) writer() *bufio.Writer {
	if sess.w == nil {
		sess.w = sess.srv.writers.Get().(*bufio.Writer)
		sess.w.Reset(connWriter{sess})
	}
	return sess.w
}

// writeLine adds one reply line; CRLF is appended.
func (sess *session) writeLine(s string) {
	w := sess.writer()
	w.WriteString(s)
	w.WriteString("\r\n")
}

// flush sends what is buffered and gives the buffer back to the pool.
func (sess *session) flush() error {
	if sess.w == nil {
		return nil
	}
	err := sess.w.Flush()
	sess.w.Reset(nil)
	sess.srv.writers.Put(sess.w)
	sess.w = nil
	return err
}

// finish ends the session: whatever is buffered is sent, the lock is
// released without deleting anything (only QUIT deletes), the connection
// closed.
func (sess *session) finish() {
	sess.flush()
	sess.releaseLock()
	if sess.linger || sess.r.Buffered() > 0 {
		// Closing with unread input makes the kernel send a reset,
		// which can destroy the reply we just sent before the client
		// reads it. Half-close, then drain for a moment.
		if cw, ok := sess.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		sess.netConn.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, sess.netConn, lingerBytes)
	}
	sess.conn.Close()
	sess.netConn.Close()
	sess.cancel()
	sess.log.Info("connection end", "dur", time.Since(sess.start).Round(time.Millisecond),
		"in", sess.in, "out", sess.out, "reason", sess.reason)
}

func (sess *session) releaseLock() {
	if sess.release != nil {
		sess.release()
		sess.release = nil
	}
}
