package pop3

import (
	"strconv"
	"strings"
)

// maxMessageDigits bounds a message number: more digits cannot name a
// message in any snapshot, and parsing them could overflow.
const maxMessageDigits = 9

// number parses a message number or line count: decimal digits only
// (no sign, no space). ok is false for anything else. Numbers too long to
// be real come back as the largest int.
func number(s string) (n int, ok bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	if len(s) > maxMessageDigits {
		return int(^uint(0) >> 1), true
	}
	n, _ = strconv.Atoi(s)
	return n, true
}

// message looks up a message number of the snapshot (one word, so "1 2"
// is a syntax error): syntax error, no such message, or deleted.
func (sess *session) message(arg string) (int, *msg, error) {
	n, ok := number(arg)
	if !ok {
		return 0, nil, errSyntax
	}
	if n < 1 || n > len(sess.msgs) {
		return 0, nil, errNoMessage
	}
	m := &sess.msgs[n-1]
	if m.deleted {
		return 0, nil, errDeleted
	}
	return n, m, nil
}

// noArg reports an argument of spaces at most.
func noArg(arg string) bool {
	return strings.TrimSpace(arg) == ""
}

// totals counts the messages not marked deleted and their octets.
func (sess *session) totals() (count int, octets int64) {
	for i := range sess.msgs {
		if !sess.msgs[i].deleted {
			count++
			octets += sess.msgs[i].Size
		}
	}
	return count, octets
}

// stat: "+OK count octets" (RFC 1939 §5), deleted messages left out.
func (sess *session) stat(arg string) error {
	if !noArg(arg) {
		return errSyntax
	}
	count, octets := sess.totals()
	sess.writeLine("+OK " + strconv.Itoa(count) + " " + strconv.FormatInt(octets, 10))
	return nil
}

// list gives the size of one message or of each one not deleted.
func (sess *session) list(arg string) error {
	header := func() string {
		count, octets := sess.totals()
		return "+OK " + plural(count, "message") + " (" + strconv.FormatInt(octets, 10) + " octets)"
	}
	return sess.listing(arg, header, func(b []byte, m *msg) []byte {
		return strconv.AppendInt(b, m.Size, 10)
	})
}

// uidl gives the unique id of one message or of each one not deleted
// (RFC 1939 §7), derived from INBOX UIDVALIDITY and UID (see UIDL).
func (sess *session) uidl(arg string) error {
	header := func() string { return "+OK unique-id listing follows" }
	return sess.listing(arg, header, func(b []byte, m *msg) []byte {
		return append(b, UIDL(sess.inbox.UIDValidity, m.UID)...)
	})
}

// listing is LIST and UIDL: with an argument one "+OK n value" line,
// without header and then one "n value" line per message not deleted.
func (sess *session) listing(arg string, header func() string, value func([]byte, *msg) []byte) error {
	f := strings.Fields(arg)
	if len(f) > 1 {
		return errSyntax
	}
	line := make([]byte, 0, 64)
	if len(f) == 1 {
		n, m, err := sess.message(f[0])
		if err != nil {
			return err
		}
		line = append(line, "+OK "...)
		line = strconv.AppendInt(line, int64(n), 10)
		line = append(line, ' ')
		sess.writeLine(string(value(line, m)))
		return nil
	}
	sess.writeLine(header())
	w := sess.writer()
	for i := range sess.msgs {
		m := &sess.msgs[i]
		if m.deleted {
			continue
		}
		line = strconv.AppendInt(line[:0], int64(i+1), 10)
		line = append(line, ' ')
		line = append(value(line, m), '\r', '\n')
		w.Write(line)
	}
	sess.writeLine(".")
	return nil
}

// dele marks a message; it is removed only at QUIT.
func (sess *session) dele(arg string) error {
	n, m, err := sess.message(strings.TrimSpace(arg))
	if err != nil {
		return err
	}
	m.deleted = true
	sess.writeLine("+OK message " + strconv.Itoa(n) + " deleted")
	return nil
}

// rset unmarks every message and, as RFC 1460 says for LAST, resets the
// highest message accessed.
func (sess *session) rset(arg string) error {
	if !noArg(arg) {
		return errSyntax
	}
	for i := range sess.msgs {
		sess.msgs[i].deleted = false
	}
	sess.lastMsg = 0
	count, octets := sess.totals()
	sess.writeLine("+OK " + plural(count, "message") + " (" + strconv.FormatInt(octets, 10) + " octets)")
	return nil
}

func (sess *session) noop(arg string) error {
	if !noArg(arg) {
		return errSyntax
	}
	sess.writeLine("+OK")
	return nil
}

// last is RFC 1460's LAST: the highest message number retrieved (in this
// or an earlier session), for clients that predate UIDL.
func (sess *session) last(arg string) error {
	if !noArg(arg) {
		return errSyntax
	}
	sess.writeLine("+OK " + strconv.Itoa(sess.lastMsg))
	return nil
}
