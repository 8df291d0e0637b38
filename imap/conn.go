package imap

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// bufConn batches a connection's writes. The library flushes after every
// response line, so a FETCH of 10,000 messages would cost 10,000 write
// calls; bufConn instead keeps writes while the library is working and
// sends them when it next reads (a command is done), when writeBuffer
// fills, or at once while a read is waiting (IDLE updates, BYE from
// another goroutine).
//
// Each write to the network gets its own deadline of writeTimeout, so a
// client that stops reading is dropped after that long without progress;
// the library's own write deadlines are ignored.
//
// bufConn also runs the client's input through a literalGuard (guard.go)
// and ends the input at a literal the library must not read as commands.
type bufConn struct {
	net.Conn
	writeTimeout time.Duration
	pool         *sync.Pool

	mu      sync.Mutex
	buf     *[]byte // nil while empty
	reading bool
	err     error
	guard   *literalGuard
	cut     bool // the guard ended the input: Read returns io.EOF

	// STARTTLS run by bufConn (see Server.startTLS): startTLS is set on
	// plain connections of a server with TLS, canStartTLS by the session
	// (not yet logged in); handoff is the accepted command, carried out
	// when the library, having read up to it, closes the connection.
	startTLS     func(raw net.Conn, leftover []byte)
	canStartTLS  func() bool
	handoff      *handoff
	handedOff    bool // the network connection went on under TLS
	tlsDone      bool // the connection is under TLS: STARTTLS gets BAD
	dropGreeting bool // the library's greeting after our STARTTLS is not sent
}

type handoff struct {
	tag, leftover []byte
}

// writeBuffer is how much a connection holds before sending.
const writeBuffer = 32 << 10

func newBufConn(c net.Conn, writeTimeout time.Duration, pool *sync.Pool) *bufConn {
	return &bufConn{Conn: c, writeTimeout: writeTimeout, pool: pool, guard: newLiteralGuard()}
}

// setCanStartTLS says when the session allows STARTTLS (before login).
// The function is called from the library's goroutine, as the session's
// own methods are.
func (c *bufConn) setCanStartTLS(f func() bool) {
	c.mu.Lock()
	c.canStartTLS = f
	c.mu.Unlock()
}

// setAppendLimit tells the guard the session's APPENDLIMIT. It is called
// once, before the library reads a command.
func (c *bufConn) setAppendLimit(limit func() int64) {
	c.mu.Lock()
	c.guard.appendLimit = limit
	c.mu.Unlock()
}

func newBufPool() *sync.Pool {
	return &sync.Pool{New: func() any {
		b := make([]byte, 0, writeBuffer)
		return &b
	}}
}

func (c *bufConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		err := c.flushLocked()
		c.reading = true
		cut := c.cut || c.handoff != nil
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if cut {
			return 0, io.EOF
		}
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		c.reading = false
		n = c.filterLocked(p, n)
		cut = c.cut || c.handoff != nil
		c.mu.Unlock()
		if n > 0 || err != nil || cut || len(p) == 0 {
			if n == 0 && err == nil {
				err = io.EOF // cut at the start of the input
			}
			return n, err
		}
		// All of it was a STARTTLS we answered: read on.
	}
}

// filterLocked runs the n bytes read into p through the guard and
// returns how many the library may have: fewer when the guard ends the
// input, or when bufConn takes a STARTTLS command out of it.
func (c *bufConn) filterLocked(p []byte, n int) int {
	for off := 0; off < n; {
		k, stls, start := c.guard.scan(p[off:n])
		if !stls {
			if c.guard.tripped && off+k < n {
				c.cut = true
			}
			return off + k
		}
		s, e := off+start, off+k
		tag := c.guard.startTLS
		switch {
		case c.tlsDone:
			// RFC 9051 §6.2.1: BAD for STARTTLS after TLS began.
			c.guard.startTLS = nil
			*c.bufLocked() = append(append(*c.bufLocked(), tag...), " BAD STARTTLS not available\r\n"...)
			c.flushLocked()
			copy(p[s:], p[e:n])
			n -= e - s
			off = s
		case c.startTLS != nil && c.canStartTLS != nil && c.canStartTLS():
			c.guard.startTLS = nil
			c.handoff = &handoff{tag: bytes.Clone(tag), leftover: bytes.Clone(p[e:n])}
			return s
		default:
			off = e // the library answers it
		}
	}
	return n
}

func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.dropGreeting {
		// After STARTTLS the client expects no greeting (RFC 9051
		// §6.2.1): the library's, written first, is dropped.
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return len(p), nil
		}
		c.dropGreeting = false
		if rest := p[i+1:]; len(rest) > 0 {
			n, err := c.writeBufferedLocked(rest)
			return n + i + 1, err
		}
		return len(p), nil
	}
	return c.writeBufferedLocked(p)
}

func (c *bufConn) writeBufferedLocked(p []byte) (int, error) {
	c.guard.reply(p)
	if c.buf != nil && len(*c.buf)+len(p) > writeBuffer {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= writeBuffer || (c.reading && c.buf == nil) {
		// Large, or sent at once anyway (IDLE updates): no copy, and no
		// pooled buffer for each of a thousand idling sessions.
		return c.writeLocked(p)
	}
	if c.buf == nil {
		c.buf = c.pool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if c.reading {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *bufConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.buf == nil {
		return nil
	}
	b := c.buf
	c.buf = nil
	_, err := c.writeLocked(*b)
	*b = (*b)[:0]
	c.pool.Put(b)
	return err
}

func (c *bufConn) writeLocked(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

// SetWriteDeadline is ignored: every network write has its own deadline.
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets only the read deadline (see SetWriteDeadline).
func (c *bufConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// Close sends what is buffered, then closes. A connection whose input
// the guard ended gets "* BYE" after the library's NO [TOOBIG]. One
// that ended at an accepted STARTTLS is not closed: it gets the OK and
// goes on under TLS with a new library connection.
func (c *bufConn) Close() error {
	c.mu.Lock()
	if c.handedOff {
		c.mu.Unlock()
		return nil // the connection lives on under TLS
	}
	if h := c.handoff; h != nil && c.err == nil {
		c.handoff = nil
		*c.bufLocked() = append(append(*c.bufLocked(), h.tag...), " OK Begin TLS negotiation now\r\n"...)
		err := c.flushLocked()
		if err != nil {
			c.mu.Unlock()
			return c.Conn.Close()
		}
		// Nothing more goes out in plain text on this connection.
		c.handedOff, c.err = true, net.ErrClosed
		c.mu.Unlock()
		c.startTLS(c.Conn, h.leftover)
		return nil
	}
	if c.cut && c.err == nil {
		*c.bufLocked() = append(*c.bufLocked(), "* BYE Literal too big, closing connection\r\n"...)
		c.cut = false // once
	}
	c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *bufConn) bufLocked() *[]byte {
	if c.buf == nil {
		c.buf = c.pool.Get().(*[]byte)
	}
	return c.buf
}
