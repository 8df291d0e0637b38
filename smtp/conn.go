package smtp

import (
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection, sitting below any TLS layer (go-smtp and
// crypto/tls read and write through it). It outlives the go-smtp sessions
// on it (STARTTLS starts a new one) and keeps what belongs to the
// connection: its id, logger, budgets, byte counts, and the deadline rules
// go-smtp lacks:
//
//   - go-smtp sets one absolute read deadline per command, also for DATA,
//     so a large, slow upload would time out. While message data streams
//     (inData), every read that brings bytes moves the deadline to
//     now+DataTimeout: only a pause longer than DataTimeout ends it.
//   - A refusal that must end the connection (too many errors or
//     commands) sets hangup: the next write, which is that 421 reply,
//     is followed by closing the socket.
//   - During Shutdown every deadline go-smtp asks for outside message
//     data becomes "now", so an idle session ends at once while one in
//     the middle of a message finishes it.
type conn struct {
	net.Conn
	srv   *Server
	id    string
	ip    netip.Addr
	log   *slog.Logger
	start time.Time

	inData   atomic.Bool
	hangup   atomic.Bool
	in, out  atomic.Int64
	commands atomic.Int64
	refusals atomic.Int64
	messages atomic.Int64 // accepted
	seq      atomic.Int64 // message ids handed out

	closeOnce sync.Once
}

func newConn(srv *Server, nc net.Conn, ip netip.Addr) *conn {
	var b [4]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	c := &conn{Conn: nc, srv: srv, id: hex.EncodeToString(b[:]), ip: ip, start: time.Now()}
	c.log = srv.log.With("conn", c.id, "remote", ip.String())
	srv.track(c)
	c.log.Debug("connection opened")
	return c
}

// connOf finds our conn under what go-smtp holds (ours, or a *tls.Conn
// over ours).
func connOf(nc net.Conn) *conn {
	switch v := nc.(type) {
	case *conn:
		return v
	case *tls.Conn:
		c, _ := v.NetConn().(*conn)
		return c
	}
	return nil
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	if n > 0 && c.inData.Load() {
		c.Conn.SetReadDeadline(time.Now().Add(c.srv.opts.DataTimeout))
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	if c.hangup.Load() {
		c.Conn.Close()
	}
	return n, err
}

func (c *conn) SetReadDeadline(t time.Time) error {
	if c.srv.draining.Load() && !c.inData.Load() {
		t = time.Now()
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close ends the connection once, however many layers call it.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.srv.forget(c)
		c.log.Info("connection closed", "dur", time.Since(c.start).Round(time.Millisecond),
			"in", c.in.Load(), "out", c.out.Load(), "msgs", c.messages.Load())
	})
	return err
}

// dataStarted marks the start of message data: deadlines now follow the
// bytes, starting with a full DataTimeout. dataEnded (at the session's
// Reset, after the reply) returns to per-command deadlines.
func (c *conn) dataStarted() {
	c.inData.Store(true)
	c.Conn.SetReadDeadline(time.Now().Add(c.srv.opts.DataTimeout))
}

func (c *conn) dataEnded() { c.inData.Store(false) }

// wake ends a wait for the next command at once (Shutdown); a session in
// the middle of message data is left to finish it.
func (c *conn) wake() {
	if !c.inData.Load() {
		c.Conn.SetReadDeadline(time.Now())
	}
}

// spend counts one command against MaxCommands and reports whether the
// budget still holds.
func (c *conn) spend() bool {
	max := c.srv.opts.MaxCommands
	return c.commands.Add(1) <= int64(max) || max < 0
}

// fail counts one refusal against MaxErrors and reports whether the
// connection may go on.
func (c *conn) fail() bool {
	max := c.srv.opts.MaxErrors
	return c.refusals.Add(1) <= int64(max) || max < 0
}

// nextMsgID names the next message of this connection: the connection id
// (the reference users see in errors) and a sequence number.
func (c *conn) nextMsgID() string {
	return fmt.Sprintf("%s.%d", c.id, c.seq.Add(1))
}
