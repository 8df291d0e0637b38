package pop3

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"mailbox/store"
)

// retr sends a whole message. The size in "+OK n octets" is the store's
// exact byte count, which is what the client gets once byte-stuffing is
// undone (the store keeps CRLF line ends).
func (sess *session) retr(arg string) error {
	n, m, err := sess.message(strings.TrimSpace(arg))
	if err != nil {
		return err
	}
	sent, err := sess.sendMessage(m, "+OK "+strconv.FormatInt(m.Size, 10)+" octets", -1)
	if err != nil {
		return err
	}
	if sent != m.Size {
		// The count in the reply was wrong; the client may be confused,
		// and the operator should know the store disagrees with itself.
		sess.log.Error("message size differs from the store's count", "msgid", m.ID, "size", m.Size, "sent", sent)
	}
	m.retrieved = true
	sess.lastMsg = max(sess.lastMsg, n)
	return nil
}

// top sends the header and the first lines of a message's body (RFC 1939
// §7).
func (sess *session) top(arg string) error {
	f := strings.Fields(arg)
	if len(f) != 2 {
		return errSyntax
	}
	lines, ok := number(f[1])
	if !ok {
		return errSyntax
	}
	_, m, err := sess.message(f[0])
	if err != nil {
		return err
	}
	_, err = sess.sendMessage(m, "+OK top of message follows", lines)
	return err
}

// sendMessage opens a message, writes the positive reply line and streams
// the message byte-stuffed, then the terminating dot. bodyLines < 0 sends
// it all. A message that vanished since login (expunged over IMAP) is "no
// such message"; a failure after the reply line has been written can only
// end the session. It returns the message bytes sent before stuffing.
func (sess *session) sendMessage(m *msg, okLine string, bodyLines int) (int64, error) {
	// The lookup is one indexed row and never waits for a lock (the pool
	// is read-only, WAL): a context that cannot be cancelled spares the
	// driver two watcher goroutines per query, a third of the CPU of a
	// small RETR. Shutdown still ends the session between commands.
	rc, err := sess.acct.Open(context.WithoutCancel(sess.ctx), m.ID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, errNoMessage
	}
	if err != nil {
		return 0, fmt.Errorf("open message %d: %w", m.ID, err)
	}
	defer rc.Close()
	sess.writeLine(okLine)
	chunk := sess.srv.chunks.Get().(*[]byte)
	defer sess.srv.chunks.Put(chunk)
	sent, err := writeStuffed(sess.writer(), rc, *chunk, bodyLines)
	if err != nil {
		sess.log.Warn("message transfer cut short", "msgid", m.ID, "sent", sent, "err", err)
		return sent, hangupError{err}
	}
	return sent, nil
}

// writeStuffed copies a message from r to w for a multi-line reply (RFC
// 1939 §3): a line starting with "." gets a second one, a last line without
// CRLF gets one, and ".\r\n" ends it. With bodyLines >= 0 it stops after
// the header, the empty line that ends it and bodyLines lines of body (a
// message without an empty line is all header). buf is scratch space. It
// returns how many bytes of r it sent, without the added ones.
func writeStuffed(w *bufio.Writer, r io.Reader, buf []byte, bodyLines int) (int64, error) {
	var (
		sent     int64
		bol      = true // at the beginning of a line
		inHeader = true
		lineLen  int  // bytes of the current line so far
		first    byte // its first byte
		done     bool
	)
	top := bodyLines >= 0
	for !done {
		nr, rerr := r.Read(buf)
		p := buf[:nr]
		for len(p) > 0 && !done {
			if bol {
				if p[0] == '.' {
					w.WriteByte('.')
				}
				first, bol = p[0], false
			}
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				w.Write(p)
				sent += int64(len(p))
				lineLen += len(p)
				break
			}
			w.Write(p[:i+1])
			sent += int64(i + 1)
			lineLen += i + 1
			p = p[i+1:]
			bol = true
			if top {
				if inHeader {
					inHeader = !(lineLen == 1 || lineLen == 2 && first == '\r')
				} else {
					bodyLines--
				}
				done = !inHeader && bodyLines <= 0
			}
			lineLen = 0
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return sent, rerr
		}
	}
	if !bol {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	// Any write error is sticky in w; report it now.
	if _, err := w.Write(nil); err != nil {
		return sent, err
	}
	return sent, nil
}
