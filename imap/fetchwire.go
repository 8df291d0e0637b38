package imap

import (
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store"
)

// wireWriter writes FETCH responses of the small items (UID, FLAGS,
// INTERNALDATE, RFC822.SIZE, ENVELOPE) straight to the connection's
// bufConn, bypassing go-imap's FetchWriter, whose per-message encoder
// (allocations, locks, a clock read and a flush per response) cost more
// than the rest of a FETCH of a whole mailbox. The bytes are those the
// library writes for the same items (TestWireWriterMatchesLibrary).
//
// Invariants that make this safe:
//   - The library's own buffered writer is flushed at the end of every
//     response it writes, and it writes none while the session's Fetch
//     runs, so responses written here land between its responses.
//   - Each Write to the bufConn carries whole responses, and bufConn
//     serialises writes, so a BYE written by another goroutine meanwhile
//     cannot split a response.
//   - Body sections (literals) and BODYSTRUCTURE still go through the
//     library.
type wireWriter struct {
	conn *bufConn
	// utf8 allows UTF-8 in quoted strings (IMAP4rev2 or UTF8=ACCEPT
	// enabled), as the library's encoder does.
	utf8    bool
	buf     []byte
	hasItem bool
}

// wireFlushBytes is how much wireWriter collects before writing.
const wireFlushBytes = 16 << 10

// wireWriter returns a writer for the session's connection, or nil when
// the connection is not a bufConn (after STARTTLS the library holds the
// TLS connection), in which case the library writes.
func (sess *session) wireWriter() *wireWriter {
	bc, ok := sess.conn.NetConn().(*bufConn)
	if !ok {
		return nil
	}
	caps := sess.conn.EnabledCaps()
	return &wireWriter{
		conn: bc,
		utf8: caps.Has(imap.CapIMAP4rev2) || caps.Has(imap.CapUTF8Accept),
		buf:  make([]byte, 0, wireFlushBytes+4096),
	}
}

// wireItems reports whether every item a FETCH asks for is one
// wireWriter writes.
func wireItems(options *imap.FetchOptions) bool {
	return options.BodyStructure == nil && len(options.BodySection) == 0 && len(options.BinarySection) == 0 &&
		len(options.BinarySectionSize) == 0 && !options.ModSeq && options.ChangedSince == 0
}

// fetchOne writes one message's response, items in the order of the
// library path (session.fetchOne).
func (w *wireWriter) fetchOne(seq uint32, m *store.MessageMeta, options *imap.FetchOptions, seenChanged bool) error {
	w.begin(seq)
	if options.UID {
		w.uid(m.UID)
	}
	if options.Flags || seenChanged {
		w.flagList(m.Flags)
	}
	if options.InternalDate {
		w.internalDate(m.InternalDate)
	}
	if options.RFC822Size {
		w.size(m.Size)
	}
	if options.Envelope {
		w.envelope(&m.Meta.Envelope)
	}
	return w.end()
}

func (w *wireWriter) begin(seq uint32) {
	w.buf = append(w.buf, "* "...)
	w.buf = strconv.AppendUint(w.buf, uint64(seq), 10)
	w.buf = append(w.buf, " FETCH ("...)
	w.hasItem = false
}

func (w *wireWriter) item(name string) {
	if w.hasItem {
		w.buf = append(w.buf, ' ')
	}
	w.hasItem = true
	w.buf = append(w.buf, name...)
	w.buf = append(w.buf, ' ')
}

func (w *wireWriter) uid(uid uint32) {
	w.item("UID")
	w.buf = strconv.AppendUint(w.buf, uint64(uid), 10)
}

// flags writes FLAGS from the compact form (keywords as store.SplitFlags
// gives them, valid atoms by the store's rule).
func (w *wireWriter) flags(sys store.SystemFlags, keywords string) {
	w.item("FLAGS")
	w.buf = append(w.buf, '(')
	first := true
	for _, name := range sys.Names() {
		if !first {
			w.buf = append(w.buf, ' ')
		}
		first = false
		w.buf = append(w.buf, name...)
	}
	for k := range strings.FieldsSeq(keywords) {
		if !first {
			w.buf = append(w.buf, ' ')
		}
		first = false
		w.buf = append(w.buf, k...)
	}
	w.buf = append(w.buf, ')')
}

func (w *wireWriter) flagList(flags []string) {
	sys, kws := store.SplitFlags(flags)
	w.flags(sys, kws)
}

func (w *wireWriter) internalDate(t time.Time) {
	w.item("INTERNALDATE")
	w.buf = append(w.buf, '"')
	w.buf = t.AppendFormat(w.buf, "_2-Jan-2006 15:04:05 -0700")
	w.buf = append(w.buf, '"')
}

func (w *wireWriter) size(n int64) {
	w.item("RFC822.SIZE")
	w.buf = strconv.AppendInt(w.buf, n, 10)
}

// envelope writes ENVELOPE as the library's writeEnvelope does for
// envelope(e).
func (w *wireWriter) envelope(e *store.Envelope) {
	w.item("ENVELOPE")
	w.buf = append(w.buf, '(')
	if e.Date.IsZero() {
		w.buf = append(w.buf, "NIL"...)
	} else {
		w.buf = append(w.buf, '"')
		w.buf = e.Date.AppendFormat(w.buf, "Mon, 02 Jan 2006 15:04:05 -0700")
		w.buf = append(w.buf, '"')
	}
	w.buf = append(w.buf, ' ')
	w.nstring(qEncode(e.Subject))
	from := e.From
	sender, replyTo := e.Sender, e.ReplyTo
	// The library writes From for a missing Sender or Reply-To (RFC
	// 9051 §7.5.2); addresses() gives nil only for an empty list.
	if len(sender) == 0 {
		sender = from
	}
	if len(replyTo) == 0 {
		replyTo = from
	}
	for _, l := range [][]store.Address{from, sender, replyTo, e.To, e.Cc, e.Bcc} {
		w.buf = append(w.buf, ' ')
		w.addresses(l)
	}
	w.buf = append(w.buf, ' ')
	if len(e.InReplyTo) > 0 {
		w.string("<" + strings.Join(e.InReplyTo, "> <") + ">")
	} else {
		w.buf = append(w.buf, "NIL"...)
	}
	w.buf = append(w.buf, ' ')
	if e.MessageID != "" {
		w.string("<" + e.MessageID + ">")
	} else {
		w.buf = append(w.buf, "NIL"...)
	}
	w.buf = append(w.buf, ')')
}

// hasAddress reports whether addresses() keeps any of l.
func hasAddress(l []store.Address) bool {
	for _, a := range l {
		if a.Mailbox != "" || a.Host != "" {
			return true
		}
	}
	return false
}

// addresses writes an address list as addresses() and the library do:
// entries without mailbox and host are dropped, a missing part gets
// Dovecot's placeholder.
func (w *wireWriter) addresses(l []store.Address) {
	if !hasAddress(l) {
		w.buf = append(w.buf, "NIL"...)
		return
	}
	w.buf = append(w.buf, '(')
	first := true
	for _, a := range l {
		if a.Mailbox == "" && a.Host == "" {
			continue
		}
		if !first {
			w.buf = append(w.buf, ' ')
		}
		first = false
		host := a.Host
		if host == "" {
			host = "MISSING_DOMAIN"
		}
		mailbox := a.Mailbox
		if mailbox == "" {
			mailbox = "MISSING_MAILBOX"
		}
		w.buf = append(w.buf, '(')
		w.nstring(qEncode(a.Name))
		w.buf = append(w.buf, " NIL "...)
		w.nstring(mailbox)
		w.buf = append(w.buf, ' ')
		w.nstring(host)
		w.buf = append(w.buf, ')')
	}
	w.buf = append(w.buf, ')')
}

// qEncode is the library's RFC 2047 encoding of display text (s itself
// when nothing needs encoding).
func qEncode(s string) string { return mime.QEncoding.Encode("utf-8", s) }

func (w *wireWriter) nstring(s string) {
	if s == "" {
		w.buf = append(w.buf, "NIL"...)
		return
	}
	w.string(s)
}

// string writes a quoted string, or a literal where a quoted string
// cannot carry s (as imapwire.Encoder.String).
func (w *wireWriter) string(s string) {
	if !w.validQuoted(s) {
		w.buf = append(w.buf, '{')
		w.buf = strconv.AppendInt(w.buf, int64(len(s)), 10)
		w.buf = append(w.buf, "}\r\n"...)
		w.buf = append(w.buf, s...)
		return
	}
	w.buf = append(w.buf, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			w.buf = append(w.buf, '\\')
		}
		w.buf = append(w.buf, s[i])
	}
	w.buf = append(w.buf, '"')
}

func (w *wireWriter) validQuoted(s string) bool {
	if len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0 || c == '\r' || c == '\n':
			return false
		case !w.utf8 && c > 0x7f:
			return false
		}
	}
	return true
}

// end closes a response and writes what is collected once it is large.
func (w *wireWriter) end() error {
	w.buf = append(w.buf, ")\r\n"...)
	if len(w.buf) >= wireFlushBytes {
		return w.flush()
	}
	return nil
}

// flush writes the collected responses.
func (w *wireWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}
