package imap

import (
	"bytes"
	"strconv"
)

// literalGuard follows the framing of what a client sends (lines and
// literals, RFC 9051 §4.3) to catch the one case go-imap v2.0.0-beta.8
// gets wrong: a non-synchronizing literal ({n+}, RFC 7888) that the
// library refuses (over APPENDLIMIT in APPEND, over 4096 bytes anywhere
// else). The library answers NO [TOOBIG] and then reads the literal's
// bytes as commands, so a message's lines could run as commands. The
// guard lets the library see the literal's header, so it still answers
// NO [TOOBIG], and ends the input there: the connection then closes with
// "* BYE" (bufConn.Close), the literal unread. Dovecot also closes a
// connection whose non-synchronizing literal it cannot take.
//
// Synchronizing literals need nothing: the library refuses them before
// the client sends them. The guard learns whether the library accepted
// one from the reply ("+" or a tagged status), since the client waits
// for it. The guard also finds STARTTLS commands: bufConn runs STARTTLS
// itself, so that the guard goes on reading plaintext (server.go,
// startTLS); if the library runs one, the guard sees only ciphertext
// afterwards and stands down.
type literalGuard struct {
	appendLimit func() int64 // the session's APPENDLIMIT; nil: DefaultAppendLimit

	off       bool   // STARTTLS began, or the client broke the framing
	head      []byte // the first guardHead bytes of the current line segment
	tail      []byte // its last guardTail bytes
	lineLen   int    // its full length
	cmdStart  bool   // the segment is the first of a command
	isAppend  bool   // the command is APPEND
	literals  int    // literals so far in this command
	skip      int64  // literal bytes still to pass
	awaitCont bool   // a synchronizing literal waits for the server's reply
	contSize  int64  // its size
	startTLS  []byte // tag of a STARTTLS command waiting for its reply
	tripped   bool   // a refused non-synchronizing literal was seen
}

// The guard keeps the start of a line segment (tag, command name, and
// all of a short "tag APPEND {n}") and its end (a literal header).
const (
	guardHead = 64
	guardTail = 32
)

// libLiteralMax is the library's limit for literals other than APPEND's
// message (imapserver.Conn.checkBufferedLiteral).
const libLiteralMax = 4096

func newLiteralGuard() *literalGuard {
	return &literalGuard{cmdStart: true}
}

// scan looks at bytes the client sent, in order. It returns how many of
// them the library may read: all of p, or up to the end of the header
// of a literal that must not be read (tripped is then set). It also stops
// after a STARTTLS command line that began in p, with stls set and start
// the index of that line, so that the caller can take it over; the bytes
// after it are not scanned yet.
func (g *literalGuard) scan(p []byte) (n int, stls bool, start int) {
	if g.off || g.tripped {
		return len(p), false, 0
	}
	for i := 0; i < len(p); {
		if g.awaitCont {
			// The client sent more before the server answered a
			// synchronizing literal: framing unknown from here.
			g.off = true
			return len(p), false, 0
		}
		if g.skip > 0 {
			n := min(int64(len(p)-i), g.skip)
			g.skip -= n
			i += int(n)
			continue
		}
		segStart := -1
		if g.lineLen == 0 {
			segStart = i
		}
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			g.addLine(p[i:])
			return len(p), false, 0
		}
		g.addLine(p[i : i+j])
		i += j + 1
		if g.endLine() {
			return i, false, 0 // through the header's LF; nothing after it
		}
		if g.off {
			return len(p), false, 0
		}
		if g.startTLS != nil && segStart >= 0 {
			return i, true, segStart
		}
	}
	return len(p), false, 0
}

func (g *literalGuard) addLine(b []byte) {
	g.lineLen += len(b)
	if room := guardHead - len(g.head); room > 0 {
		g.head = append(g.head, b[:min(room, len(b))]...)
	}
	if len(b) >= guardTail {
		g.tail = append(g.tail[:0], b[len(b)-guardTail:]...)
		return
	}
	g.tail = append(g.tail, b...)
	if extra := len(g.tail) - guardTail; extra > 0 {
		g.tail = append(g.tail[:0], g.tail[extra:]...)
	}
}

// endLine handles the end of a line segment; it reports whether the
// segment ended with the header of a literal the library will refuse.
func (g *literalGuard) endLine() bool {
	tail := bytes.TrimSuffix(g.tail, []byte("\r"))
	var whole []byte // the segment, if short enough to be all in head
	if g.lineLen <= guardHead {
		whole = bytes.TrimSuffix(g.head, []byte("\r"))
	}
	first := g.cmdStart
	if first {
		fields := bytes.Fields(g.head)
		g.isAppend = false
		if len(fields) >= 2 {
			name := bytes.ToUpper(fields[1])
			g.isAppend = bytes.Equal(name, []byte("APPEND"))
			if bytes.Equal(name, []byte("STARTTLS")) && whole != nil && len(fields) == 2 {
				g.startTLS = append(g.startTLS[:0], fields[0]...)
			}
		}
	}
	size, nonSync, ok := literalHeader(tail)
	g.head, g.tail, g.lineLen = g.head[:0], g.tail[:0], 0
	if !ok {
		g.cmdStart, g.literals = true, 0
		return false
	}
	g.cmdStart = false
	g.literals++
	limit := int64(libLiteralMax)
	if g.isAppend && !(first && g.literals == 1 && whole != nil && appendMailboxLiteral(whole)) {
		limit = DefaultAppendLimit
		if g.appendLimit != nil {
			limit = g.appendLimit()
		}
	}
	if !nonSync {
		if size >= 0 {
			g.awaitCont, g.contSize = true, size
		}
		return false // a refused header ends the command; nothing follows
	}
	if size < 0 || size > limit {
		g.tripped = true
		return true
	}
	g.skip = size
	return false
}

// appendMailboxLiteral reports whether the literal ending the first
// segment of an APPEND is its mailbox name ("tag APPEND {n}").
func appendMailboxLiteral(line []byte) bool {
	i := bytes.LastIndexByte(line, '{')
	return i >= 0 && len(bytes.Fields(line[:i])) == 2
}

// literalHeader parses the "{n}", "{n+}" or "~{n}" that ends a line
// segment. size is -1 for a header whose number does not fit.
func literalHeader(line []byte) (size int64, nonSync, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false, false
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false, false
	}
	num := line[i+1 : len(line)-1]
	if n := len(num); n > 0 && num[n-1] == '+' {
		nonSync, num = true, num[:n-1]
	}
	if len(num) == 0 {
		return 0, false, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false, false
		}
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return -1, nonSync, true
	}
	return n, nonSync, true
}

// reply looks at what the server sends: the answer to a synchronizing
// literal, and to STARTTLS. While it waits for one, the server writes
// nothing else but untagged lines.
func (g *literalGuard) reply(p []byte) {
	if g.off || (!g.awaitCont && g.startTLS == nil) {
		return
	}
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i+1], p[i+1:]
		} else {
			p = nil
		}
		g.replyLine(line)
	}
}

func (g *literalGuard) replyLine(line []byte) {
	if len(line) == 0 || line[0] == '*' {
		return // untagged: the answer is still to come
	}
	if g.startTLS != nil && bytes.HasPrefix(line, g.startTLS) && bytes.HasPrefix(line[len(g.startTLS):], []byte(" ")) {
		if bytes.HasPrefix(line[len(g.startTLS)+1:], []byte("OK")) {
			g.off = true // TLS from here on
		}
		g.startTLS = nil
		return
	}
	if g.awaitCont {
		if line[0] == '+' {
			g.awaitCont, g.skip = false, g.contSize
			return
		}
		// A tagged status: the command ended, no literal follows.
		g.awaitCont, g.cmdStart, g.literals = false, true, 0
	}
}
