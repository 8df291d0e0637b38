package imap

import (
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
}

// writeBuffer is how much a connection holds before sending.
const writeBuffer = 32 << 10

func newBufConn(c net.Conn, writeTimeout time.Duration, pool *sync.Pool) *bufConn {
	return &bufConn{Conn: c, writeTimeout: writeTimeout, pool: pool, guard: newLiteralGuard()}
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
	c.mu.Lock()
	err := c.flushLocked()
	c.reading = true
	cut := c.cut
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
	if k := c.guard.scan(p[:n]); k < n {
		n, c.cut = k, true
	}
	c.mu.Unlock()
	return n, err
}

func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.guard.reply(p)
	if c.buf != nil && len(*c.buf)+len(p) > writeBuffer {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= writeBuffer {
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
// the guard ended gets "* BYE" after the library's NO [TOOBIG].
func (c *bufConn) Close() error {
	c.mu.Lock()
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
