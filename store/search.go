package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	htmlcharset "golang.org/x/net/html/charset"
)

// Limits of the full-text index and of searches.
const (
	// maxIndexText is the most body text (bytes of UTF-8) indexed per
	// message; the rest of a long message is not searchable by BODY/TEXT.
	maxIndexText = 1 << 20
	// maxHTMLInput is the most decoded HTML read per part to find its
	// text.
	maxHTMLInput = 4 << 20
	// maxSearchDepth bounds the nesting of Not and Or in SearchCriteria.
	maxSearchDepth = 32
	// maxSearchTerms bounds the conditions of one search, so its SQL
	// stays within SQLite's expression and parameter limits.
	maxSearchTerms = 1000
	// maxHeaderScan is the most header bytes read per message for a
	// HEADER condition on a field the index does not keep.
	maxHeaderScan = 1 << 20
)

// extractText returns what the full-text index keeps of a message: its
// decoded subject, the names and addresses of its address fields, and in
// body the decoded text of its text parts (HTML reduced to the text a
// reader sees), the file names of its parts and the subjects and
// addresses of attached messages, capped at maxIndexText bytes.
func extractText(raw []byte, m *Meta) (subject, addresses, body string) {
	w := textWriter{max: maxIndexText}
	w.part(raw, &m.Structure)
	return m.Envelope.Subject, envelopeAddresses(&m.Envelope), w.b.String()
}

// envelopeAddresses renders the address fields for the index: display
// names and addresses, one address per line.
func envelopeAddresses(env *Envelope) string {
	var b strings.Builder
	for _, list := range [][]Address{env.From, env.Sender, env.ReplyTo, env.To, env.Cc, env.Bcc} {
		for _, a := range list {
			if a.Name != "" {
				b.WriteString(a.Name)
				b.WriteByte(' ')
			}
			b.WriteString(a.Mailbox)
			if a.Host != "" {
				b.WriteByte('@')
				b.WriteString(a.Host)
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// textWriter collects index text up to max bytes.
type textWriter struct {
	b   strings.Builder
	max int
}

func (w *textWriter) room() int { return w.max - w.b.Len() }

// add appends s and a line break, cut to fit at a rune boundary.
func (w *textWriter) add(s string) {
	if s == "" || w.room() <= 0 {
		return
	}
	if len(s) >= w.room() {
		s = cutUTF8(s, w.room())
		w.b.WriteString(s)
		return
	}
	w.b.WriteString(s)
	w.b.WriteByte('\n')
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not
// split a rune.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (w *textWriter) part(raw []byte, p *Part) {
	if w.room() <= 0 {
		return
	}
	w.add(partFilename(p))
	switch {
	case len(p.Parts) > 0:
		for i := range p.Parts {
			w.part(raw, &p.Parts[i])
		}
	case p.Message != nil:
		w.add(p.Message.Envelope.Subject)
		w.add(envelopeAddresses(&p.Message.Envelope))
		w.part(raw, &p.Message.Structure)
	case p.Type == "text":
		body := raw[p.BodyStart:p.End]
		if p.Subtype == "html" {
			content := decodeTransfer(body, p.Encoding, maxHTMLInput)
			w.html(htmlToUTF8(content, p.Params["charset"]))
			return
		}
		content := decodeTransfer(body, p.Encoding, w.room())
		w.add(decodeCharset(p.Params["charset"], content))
	}
}

// htmlToUTF8 converts an HTML part to UTF-8. A part that declares no
// charset other than the us-ascii default and is not UTF-8 gets the
// charset its <meta> names, or Windows-1252 as browsers assume.
func htmlToUTF8(content []byte, cs string) string {
	switch strings.ToLower(cs) {
	case "", "us-ascii", "ascii":
		if utf8.Valid(content) {
			return string(content)
		}
		if enc, _, certain := htmlcharset.DetermineEncoding(content, "text/html"); certain {
			if out, err := enc.NewDecoder().Bytes(content); err == nil {
				return strings.ToValidUTF8(string(out), "\uFFFD")
			}
		}
	}
	return decodeCharset(cs, content)
}

// html appends the visible text of an HTML document: text outside
// script, style, title and template, image alt texts, with a line break
// at block elements.
func (w *textWriter) html(doc string) {
	z := html.NewTokenizer(strings.NewReader(doc))
	hidden := 0
	var line strings.Builder
	flush := func() {
		w.add(line.String())
		line.Reset()
	}
	for w.room() > line.Len() {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			flush()
			return
		case html.TextToken:
			if hidden > 0 {
				continue
			}
			appendWords(&line, z.Text())
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, hasAttr := z.TagName()
			a := atom.Lookup(name)
			switch a {
			case atom.Script, atom.Style, atom.Title, atom.Template:
				if tt == html.StartTagToken {
					hidden++
				} else if tt == html.EndTagToken && hidden > 0 {
					hidden--
				}
			case atom.Img:
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					if string(k) == "alt" && hidden == 0 {
						line.WriteByte(' ')
						line.Write(v)
					}
				}
			default:
				if blockElements[a] {
					flush()
				}
			}
		}
	}
	flush()
}

// appendWords appends the words of text to line, each run of white
// space collapsed to one space.
func appendWords(line *strings.Builder, text []byte) {
	for len(text) > 0 {
		i := 0
		for i < len(text) && isHTMLSpace(text[i]) {
			i++
		}
		j := i
		for j < len(text) && !isHTMLSpace(text[j]) {
			j++
		}
		if j > i {
			if line.Len() > 0 {
				line.WriteByte(' ')
			}
			line.Write(text[i:j])
		}
		text = text[j:]
	}
}

func isHTMLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// blockElements break the line of text around them.
var blockElements = map[atom.Atom]bool{
	atom.Address: true, atom.Article: true, atom.Aside: true, atom.Blockquote: true, atom.Br: true,
	atom.Dd: true, atom.Div: true, atom.Dl: true, atom.Dt: true, atom.Footer: true, atom.H1: true,
	atom.H2: true, atom.H3: true, atom.H4: true, atom.H5: true, atom.H6: true, atom.Header: true,
	atom.Hr: true, atom.Li: true, atom.Ol: true, atom.P: true, atom.Pre: true, atom.Section: true,
	atom.Table: true, atom.Td: true, atom.Th: true, atom.Tr: true, atom.Ul: true,
}

// decodeTransfer undoes a Content-Transfer-Encoding, leniently, returning
// at most max bytes.
func decodeTransfer(b []byte, enc string, max int) []byte {
	switch enc {
	case "base64":
		return decodeBase64(b, max)
	case "quoted-printable":
		return decodeQP(b, max)
	}
	if len(b) > max {
		b = b[:max]
	}
	return b
}

// base64Values maps a byte to its base64 value, or 0xff.
var base64Values = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = byte(i)
	}
	return t
}()

// decodeBase64 decodes base64 that may hold line breaks, junk and
// padding in the middle (concatenated blocks), up to about max bytes.
func decodeBase64(src []byte, max int) []byte {
	out := make([]byte, 0, min(len(src)/4*3+3, max+3))
	var q [4]byte
	n := 0
	flush := func() {
		switch n {
		case 2:
			out = append(out, q[0]<<2|q[1]>>4)
		case 3:
			out = append(out, q[0]<<2|q[1]>>4, q[1]<<4|q[2]>>2)
		}
		n = 0
	}
	for _, c := range src {
		if len(out) >= max {
			break
		}
		v := base64Values[c]
		if v == 0xff {
			if c == '=' {
				flush()
			}
			continue
		}
		q[n] = v
		n++
		if n == 4 {
			out = append(out, q[0]<<2|q[1]>>4, q[1]<<4|q[2]>>2, q[2]<<6|q[3])
			n = 0
		}
	}
	flush()
	if len(out) > max {
		out = out[:max]
	}
	return out
}

// decodeQP decodes quoted-printable, passing malformed escapes through,
// up to max bytes.
func decodeQP(src []byte, max int) []byte {
	out := make([]byte, 0, min(len(src), max))
	for i := 0; i < len(src) && len(out) < max; i++ {
		c := src[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		j := i + 1
		for j < len(src) && (src[j] == ' ' || src[j] == '\t') {
			j++
		}
		switch {
		case j == len(src):
			i = j // a soft break at the very end
		case src[j] == '\n':
			i = j
		case src[j] == '\r' && j+1 < len(src) && src[j+1] == '\n':
			i = j + 1
		case i+2 < len(src) && isHex(src[i+1]) && isHex(src[i+2]):
			out = append(out, unhex(src[i+1])<<4|unhex(src[i+2]))
			i += 2
		default:
			out = append(out, '=')
		}
	}
	return out
}

// SearchCriteria is a tree of conditions on the messages of one mailbox
// (RFC 9051 §6.4.4 semantics); a message matches when it meets every
// condition set. The zero value matches every message.
//
// How conditions are evaluated, all in one SQL query:
//   - Subject and From (SUBJECT, FROM, HEADER Subject/From) are
//     substring matches on the decoded fields, case-insensitive for ASCII
//     letters (SQLite LIKE). To, Cc and Bcc match the same way against
//     each decoded address rendered as "Name <mailbox@host>". HEADER
//     Message-ID matches "<id>".
//   - HEADER on any other field is a case-insensitive substring match on
//     the unfolded, RFC 2047 decoded field values, read from the stored
//     headers (the first maxHeaderScan bytes) before the query runs; an
//     empty Value matches messages that have the field at all.
//   - Body and Text use the full-text index, so they match words, not
//     arbitrary substrings: every word of the string must appear, in
//     order, with the last one allowed to be a prefix ("meet" finds
//     "meeting"). Case and diacritics are ignored. Text covers the
//     subject, the addresses and the body text (see extractText). A
//     string without letters or digits matches every message.
//   - Sequence numbers are the caller's business: convert them to UIDs.
type SearchCriteria struct {
	// UIDs: the message's UID must be in every one of these sets (see
	// UIDSet for '*').
	UIDs []UIDSet
	// Since and Before compare INTERNALDATE by day: the message arrived on
	// or after Since's day, or before Before's day. The day is the value's
	// year, month and day, running from midnight to midnight in the
	// value's Location (pass the server's). ON d is Since d, Before d+1.
	Since, Before time.Time
	// SentSince and SentBefore compare the date of the Date: field in its
	// own time zone (RFC 9051: disregarding time and timezone), using the
	// year, month and day of the value. Messages without a valid Date:
	// count as sent on 0001-01-01.
	SentSince, SentBefore time.Time
	// Larger and Smaller compare the size in bytes; 0 means no condition.
	Larger, Smaller int64
	// Flags must all be set and NotFlags all unset: system flags
	// ("\Seen", "\Answered", "\Flagged", "\Deleted", "\Draft") in any
	// case, or keywords. "\Recent" is never set in the store.
	Flags, NotFlags []string
	// Header conditions (HEADER, SUBJECT, FROM, TO, CC, BCC).
	Header []HeaderMatch
	// Body and Text strings must all match (BODY, TEXT).
	Body, Text []string
	// ModSeq is the least modseq (MODSEQ, RFC 7162); 0 means no condition.
	ModSeq int64
	// Not: the message must match none of these.
	Not []SearchCriteria
	// Or: the message must match at least one of each pair.
	Or [][2]SearchCriteria
}

// HeaderMatch is a header field name and a string its value must contain.
type HeaderMatch struct {
	Key, Value string
}

// UIDSet is a union of UID ranges. In a search a range may be given in
// either order, and 0 as Start or Stop means '*', the largest UID in the
// mailbox (RFC 9051 §9 seq-range), so "5:*" is {5, 0}.
type UIDSet []UIDRange

// indexedHeaders are the header fields searched in the meta table rather
// than in the stored header bytes.
var indexedHeaders = map[string]bool{
	"subject": true, "from": true, "to": true, "cc": true, "bcc": true, "message-id": true,
}

// Search returns the UIDs, ascending, of the messages of a mailbox of this
// account that match c. Errors: ErrNotFound (not this account's mailbox),
// ErrInvalid (criteria nested deeper than maxSearchDepth or with more
// than maxSearchTerms conditions), ErrTemporary.
func (a *Account) Search(ctx context.Context, mailboxID int64, c SearchCriteria) ([]uint32, error) {
	if err := checkCriteria(&c); err != nil {
		return nil, err
	}
	text := hasTextCondition(&c)
	if text {
		if err := a.st.awaitIndexed(ctx, mailboxID); err != nil {
			return nil, err
		}
	}
	conn, err := a.st.reader.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("search: %w: %w", ErrTemporary, err)
	}
	defer conn.Close()
	// One read transaction: the header scan and the query see the same
	// snapshot.
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("search: %w: %w", ErrTemporary, err)
	}
	defer tx.Rollback()
	if err := a.ownMailbox(ctx, tx, mailboxID); err != nil {
		return nil, err
	}
	var headerUIDs map[HeaderMatch][]uint32
	if hm := rawHeaderMatches(&c, nil); len(hm) > 0 {
		if headerUIDs, err = a.st.scanHeaders(ctx, tx, mailboxID, hm); err != nil {
			return nil, fmt.Errorf("search headers: %w: %w", ErrTemporary, err)
		}
	}
	query, args, err := searchQueryWith(mailboxID, &c, headerUIDs, text)
	if err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w: %w", ErrTemporary, err)
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var uid uint32
		if err := rows.Scan(&uid); err != nil {
			return nil, fmt.Errorf("search: %w: %w", ErrTemporary, err)
		}
		out = append(out, uid)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search: %w: %w", ErrTemporary, err)
	}
	return out, nil
}

// checkCriteria enforces maxSearchDepth and maxSearchTerms.
func checkCriteria(c *SearchCriteria) error {
	terms := 0
	var walk func(c *SearchCriteria, depth int) error
	walk = func(c *SearchCriteria, depth int) error {
		if depth > maxSearchDepth {
			return fmt.Errorf("search: %w: criteria nested deeper than %d", ErrInvalid, maxSearchDepth)
		}
		terms += len(c.UIDs) + len(c.Flags) + len(c.NotFlags) + len(c.Header) + len(c.Body) + len(c.Text) + 7
		if terms > maxSearchTerms {
			return fmt.Errorf("search: %w: more than %d conditions", ErrInvalid, maxSearchTerms)
		}
		for i := range c.Not {
			if err := walk(&c.Not[i], depth+1); err != nil {
				return err
			}
		}
		for i := range c.Or {
			for j := range c.Or[i] {
				if err := walk(&c.Or[i][j], depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(c, 0)
}

// rawHeaderMatches collects the distinct HEADER conditions on fields the
// index does not keep, keys lower-cased.
func rawHeaderMatches(c *SearchCriteria, out []HeaderMatch) []HeaderMatch {
	for _, h := range c.Header {
		h.Key = strings.ToLower(strings.TrimSpace(h.Key))
		if !indexedHeaders[h.Key] && !containsMatch(out, h) {
			out = append(out, h)
		}
	}
	for i := range c.Not {
		out = rawHeaderMatches(&c.Not[i], out)
	}
	for i := range c.Or {
		out = rawHeaderMatches(&c.Or[i][0], out)
		out = rawHeaderMatches(&c.Or[i][1], out)
	}
	return out
}

func containsMatch(list []HeaderMatch, h HeaderMatch) bool {
	for _, x := range list {
		if x == h {
			return true
		}
	}
	return false
}

// scanHeaders reads the header of every message in a mailbox and returns,
// for each condition, the UIDs whose header matches.
func (st *Store) scanHeaders(ctx context.Context, tx *sql.Tx, mailboxID int64, hm []HeaderMatch) (map[HeaderMatch][]uint32, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT m.uid, b.hash, b.data IS NULL, min(json_extract(t.structure, '$.BodyStart'), ?),
		       CASE WHEN b.data IS NOT NULL THEN substr(b.data, 1, min(json_extract(t.structure, '$.BodyStart'), ?)) END
		  FROM messages m JOIN blobs b ON b.id = m.blob_id JOIN meta t ON t.blob_id = m.blob_id
		 WHERE m.mailbox_id = ? ORDER BY m.uid`, maxHeaderScan, maxHeaderScan, mailboxID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	dec := mime.WordDecoder{CharsetReader: charsetReader}
	needles := make([]string, len(hm))
	for i, h := range hm {
		needles[i] = strings.ToLower(h.Value)
	}
	out := make(map[HeaderMatch][]uint32, len(hm))
	for rows.Next() {
		var uid uint32
		var hash, hdr []byte
		var isFile bool
		var n int64
		if err := rows.Scan(&uid, &hash, &isFile, &n, &hdr); err != nil {
			return nil, err
		}
		if isFile {
			if hdr, err = st.readBlobRange(hash, n); err != nil {
				return nil, err
			}
		}
		for i, h := range hm {
			if headerContains(hdr, h.Key, needles[i], &dec) {
				out[h] = append(out[h], uid)
			}
		}
	}
	return out, rows.Err()
}

func (st *Store) readBlobRange(hash []byte, n int64) ([]byte, error) {
	rc, err := st.blobs.Range(hex.EncodeToString(hash), 0, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, n))
}

// headerContains reports whether a header has a field named key (lower
// case) whose unfolded, decoded value contains needle (lower case).
func headerContains(hdr []byte, key, needle string, dec *mime.WordDecoder) bool {
	var field []byte // the value of the field being read, if it is key
	match := func() bool {
		if field == nil {
			return false
		}
		v := unfold(field)
		if !utf8.ValidString(v) {
			v = legacyText([]byte(v))
		}
		if strings.Contains(v, "=?") {
			if d, err := dec.DecodeHeader(v); err == nil {
				v = d
			}
		}
		return strings.Contains(strings.ToLower(v), needle)
	}
	start := -1 // offset of the value of the current field, if it is key
	for i := 0; i < len(hdr); {
		end := bytes.IndexByte(hdr[i:], '\n')
		next := len(hdr)
		if end < 0 {
			end = len(hdr)
		} else {
			end += i
			next = end + 1
		}
		line := bytes.TrimRight(hdr[i:end], "\r")
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if start >= 0 {
				field = hdr[start:end]
			}
			i = next
			continue
		}
		if match() {
			return true
		}
		field, start = nil, -1
		if len(line) == 0 {
			return false
		}
		if colon := bytes.IndexByte(line, ':'); colon > 0 {
			name := bytes.TrimRight(line[:colon], " \t")
			if len(name) == len(key) && equalFoldASCII(name, key) {
				start = i + colon + 1
				field = hdr[start:end]
			}
		}
		i = next
	}
	return match()
}

// sqlTerm is a piece of SQL with the arguments of its placeholders, in
// order.
type sqlTerm struct {
	sql  string
	args []any
}

var (
	termTrue  = sqlTerm{sql: "1"}
	termFalse = sqlTerm{sql: "0"}
)

// joinTerms combines terms with AND or OR as a balanced tree, so that a
// long list stays well inside SQLite's expression depth limit.
func joinTerms(terms []sqlTerm, op string) sqlTerm {
	switch len(terms) {
	case 0:
		if op == "OR" {
			return termFalse
		}
		return termTrue
	case 1:
		return terms[0]
	}
	l, r := joinTerms(terms[:len(terms)/2], op), joinTerms(terms[len(terms)/2:], op)
	return sqlTerm{
		sql:  "(" + l.sql + " " + op + " " + r.sql + ")",
		args: append(append(make([]any, 0, len(l.args)+len(r.args)), l.args...), r.args...),
	}
}

// searchQuery translates criteria into one SQL query returning the
// matching UIDs of a mailbox, ascending. headerUIDs holds the UIDs that
// match each raw-header condition (see rawHeaderMatches); a condition
// missing from it matches nothing. User input only ever travels as
// arguments.
func searchQuery(mailboxID int64, c *SearchCriteria, headerUIDs map[HeaderMatch][]uint32) (string, []any, error) {
	return searchQueryWith(mailboxID, c, headerUIDs, false)
}

// searchQueryWith is searchQuery; indexedOnly leaves out messages whose
// text the indexer has not reached. Search sets it for criteria that use
// the index: it has waited for every message the mailbox held when it
// began (awaitIndexed), so only messages that arrived during the search
// are left out, and none of them is wrongly matched by NOT BODY.
func searchQueryWith(mailboxID int64, c *SearchCriteria, headerUIDs map[HeaderMatch][]uint32, indexedOnly bool) (string, []any, error) {
	if err := checkCriteria(c); err != nil {
		return "", nil, err
	}
	where, err := criteriaTerm(mailboxID, c, headerUIDs)
	if err != nil {
		return "", nil, err
	}
	query := `SELECT m.uid FROM messages m JOIN meta t ON t.blob_id = m.blob_id
	 WHERE m.mailbox_id = ? AND ` + where.sql
	if indexedOnly {
		query += ` AND m.blob_id NOT IN (SELECT blob_id FROM unindexed)`
	}
	return query + ` ORDER BY m.uid`, append([]any{mailboxID}, where.args...), nil
}

func criteriaTerm(mailboxID int64, c *SearchCriteria, headerUIDs map[HeaderMatch][]uint32) (sqlTerm, error) {
	var terms []sqlTerm
	for _, set := range c.UIDs {
		t, err := uidSetTerm(mailboxID, set)
		if err != nil {
			return sqlTerm{}, err
		}
		terms = append(terms, t)
	}
	if !c.Since.IsZero() {
		terms = append(terms, sqlTerm{"m.internal_date >= ?", []any{dayStart(c.Since).Unix()}})
	}
	if !c.Before.IsZero() {
		terms = append(terms, sqlTerm{"m.internal_date < ?", []any{dayStart(c.Before).Unix()}})
	}
	const sentDay = "substr(json_extract(t.envelope, '$.Date'), 1, 10)"
	if !c.SentSince.IsZero() {
		terms = append(terms, sqlTerm{sentDay + " >= ?", []any{c.SentSince.Format(time.DateOnly)}})
	}
	if !c.SentBefore.IsZero() {
		terms = append(terms, sqlTerm{sentDay + " < ?", []any{c.SentBefore.Format(time.DateOnly)}})
	}
	if c.Larger > 0 {
		terms = append(terms, sqlTerm{"m.size > ?", []any{c.Larger}})
	}
	if c.Smaller > 0 {
		terms = append(terms, sqlTerm{"m.size < ?", []any{c.Smaller}})
	}
	for _, f := range c.Flags {
		terms = append(terms, flagTerm(f, true))
	}
	for _, f := range c.NotFlags {
		terms = append(terms, flagTerm(f, false))
	}
	for _, h := range c.Header {
		terms = append(terms, headerTerm(h, headerUIDs))
	}
	for _, s := range c.Body {
		terms = append(terms, ftsTerm("body", s))
	}
	for _, s := range c.Text {
		terms = append(terms, ftsTerm("", s))
	}
	if c.ModSeq > 0 {
		terms = append(terms, sqlTerm{"m.modseq >= ?", []any{c.ModSeq}})
	}
	for i := range c.Not {
		t, err := criteriaTerm(mailboxID, &c.Not[i], headerUIDs)
		if err != nil {
			return sqlTerm{}, err
		}
		terms = append(terms, sqlTerm{"NOT (" + t.sql + ")", t.args})
	}
	for i := range c.Or {
		l, err := criteriaTerm(mailboxID, &c.Or[i][0], headerUIDs)
		if err != nil {
			return sqlTerm{}, err
		}
		r, err := criteriaTerm(mailboxID, &c.Or[i][1], headerUIDs)
		if err != nil {
			return sqlTerm{}, err
		}
		terms = append(terms, joinTerms([]sqlTerm{l, r}, "OR"))
	}
	return joinTerms(terms, "AND"), nil
}

// dayStart is midnight at the start of t's day in t's location.
func dayStart(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
}

// uidSetTerm matches a union of UID ranges. The ranges travel as one JSON
// argument and are joined with the (mailbox_id, uid) index, so a set of
// thousands of ranges costs one placeholder and index range scans.
func uidSetTerm(mailboxID int64, set UIDSet) (sqlTerm, error) {
	if len(set) == 0 {
		return termFalse, nil
	}
	ranges := make([][2]uint32, len(set))
	for i, r := range set {
		ranges[i] = [2]uint32{r.Start, r.Stop}
	}
	js, err := json.Marshal(ranges)
	if err != nil {
		return sqlTerm{}, fmt.Errorf("search: encode uid set: %w", err)
	}
	// lo and hi of a range, with 0 standing for the largest UID.
	const (
		a = "iif(json_extract(r.value, '$[0]') = 0, x.top, json_extract(r.value, '$[0]'))"
		b = "iif(json_extract(r.value, '$[1]') = 0, x.top, json_extract(r.value, '$[1]'))"
	)
	return sqlTerm{
		sql: `m.uid IN (SELECT u.uid FROM json_each(?) r
			JOIN (SELECT coalesce(max(uid), 0) AS top FROM messages WHERE mailbox_id = ?) x
			JOIN messages u ON u.mailbox_id = ? AND u.uid BETWEEN min(` + a + `, ` + b + `) AND max(` + a + `, ` + b + `))`,
		args: []any{string(js), mailboxID, mailboxID},
	}, nil
}

// flagTerm matches a flag being set (or, with set false, unset).
func flagTerm(flag string, set bool) sqlTerm {
	for _, sf := range systemFlags {
		if strings.EqualFold(flag, sf.name) {
			if set {
				return sqlTerm{"m.flags & ? != 0", []any{sf.bit}}
			}
			return sqlTerm{"m.flags & ? = 0", []any{sf.bit}}
		}
	}
	if strings.HasPrefix(flag, `\`) || !validKeyword(flag) {
		// \Recent and other flags the store never keeps.
		if set {
			return termFalse
		}
		return termTrue
	}
	pattern := "% " + escapeLike(flag) + " %"
	if set {
		return sqlTerm{`m.keywords LIKE ? ESCAPE '\'`, []any{pattern}}
	}
	return sqlTerm{`m.keywords NOT LIKE ? ESCAPE '\'`, []any{pattern}}
}

// escapeLike escapes LIKE's wildcards for ESCAPE '\'.
func escapeLike(s string) string {
	if !strings.ContainsAny(s, `\%_`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '\\' || r == '%' || r == '_' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// addressField renders each address of an envelope list as "Name
// <mailbox@host>" for LIKE, inside EXISTS over json_each of the list.
func addressField(path string) string {
	return `EXISTS (SELECT 1 FROM json_each(t.envelope, '` + path + `') j WHERE
		coalesce(json_extract(j.value, '$.Name'), '') || ' <' || coalesce(json_extract(j.value, '$.Mailbox'), '') ||
		'@' || coalesce(json_extract(j.value, '$.Host'), '') || '>' LIKE ? ESCAPE '\')`
}

// headerTerm matches one HEADER (or SUBJECT, FROM, ...) condition.
func headerTerm(h HeaderMatch, headerUIDs map[HeaderMatch][]uint32) sqlTerm {
	key := strings.ToLower(strings.TrimSpace(h.Key))
	pattern := "%" + escapeLike(h.Value) + "%"
	switch key {
	case "subject":
		return sqlTerm{`t.subject LIKE ? ESCAPE '\'`, []any{pattern}}
	case "from":
		return sqlTerm{`t.from_addr LIKE ? ESCAPE '\'`, []any{pattern}}
	case "to":
		return sqlTerm{addressField("$.To"), []any{pattern}}
	case "cc":
		return sqlTerm{addressField("$.Cc"), []any{pattern}}
	case "bcc":
		return sqlTerm{addressField("$.Bcc"), []any{pattern}}
	case "message-id":
		return sqlTerm{`('<' || t.message_id || '>') LIKE ? ESCAPE '\'`, []any{pattern}}
	}
	uids := headerUIDs[HeaderMatch{Key: key, Value: h.Value}]
	if len(uids) == 0 {
		return termFalse
	}
	js, _ := json.Marshal(uids) // []uint32 always encodes
	return sqlTerm{"m.uid IN (SELECT value FROM json_each(?))", []any{string(js)}}
}

// ftsTerm matches a string against the full-text index: one column, or
// all with column "". The string becomes a single FTS5 phrase whose last
// word may be a prefix; quoting keeps any FTS5 syntax in it literal.
func ftsTerm(column, s string) sqlTerm {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) }) {
		return termTrue
	}
	// SQLite ends an FTS5 query string at a NUL; other controls are no
	// part of a word either.
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
	q := `"` + strings.ReplaceAll(s, `"`, `""`) + `" *`
	if column != "" {
		q = column + " : " + q
	}
	return sqlTerm{"m.blob_id IN (SELECT rowid FROM blob_text WHERE blob_text MATCH ?)", []any{q}}
}
