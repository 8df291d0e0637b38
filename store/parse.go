package store

import (
	"bytes"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
	"golang.org/x/text/encoding/charmap"
)

// Limits of parseMessage. Beyond them the message is still stored and
// served byte for byte; only its structure is summarised.
const (
	// maxMIMEDepth bounds the nesting of multipart and message/rfc822
	// parts. A part deeper than this is a leaf text/plain part covering
	// its whole body (Dovecot caps nesting the same way).
	maxMIMEDepth = 50
	// maxMIMEParts bounds the parts of one message, encapsulated messages
	// included. Once reached, the rest of each open multipart is kept as
	// its epilogue and no more parts are created.
	maxMIMEParts = 10000
	// maxParams bounds the parameters kept per Content-Type or
	// Content-Disposition field.
	maxParams = 64
	// maxParamSegments bounds RFC 2231 continuations of one parameter.
	maxParamSegments = 256
	// maxLanguages bounds the tags kept from Content-Language.
	maxLanguages = 32
	// maxDateBytes bounds the Date: value parsed; a real one is ~40.
	maxDateBytes = 256
	// maxMsgIDs bounds the message IDs kept from In-Reply-To.
	maxMsgIDs = 100
)

// parseMessage parses raw message bytes into the Meta kept beside a blob.
// It runs once per stored blob, never fails and never copies the body:
// malformed input yields a best-effort structure, the way an IMAP server
// such as Dovecot would show it.
//
// How it reads a message:
//
//   - A header ends at the first empty line (CRLF or bare LF). A header
//     that never ends makes the whole part a header with an empty body.
//     Lines without a colon are skipped; the first of a repeated field
//     wins. Field values are unfolded, and text is decoded per RFC 2047
//     (unknown charsets keep their bytes, made valid UTF-8; raw 8-bit
//     text that is not UTF-8 is read as Windows-1252).
//   - Multipart bodies are split by scanning the bytes for delimiter
//     lines, so every part knows its exact offsets (RFC 2046 §5.1.1: the
//     line break before "--boundary" belongs to the delimiter; preamble
//     and epilogue belong to no part). Like Dovecot, a delimiter line only
//     has to begin with "--" and the boundary, every boundary still open
//     (outer ones too) ends a part, the longest matching boundary wins and
//     the innermost wins a tie. So a part missing its close delimiter ends
//     at its parent's next delimiter or at the end of the message.
//   - A multipart with no usable boundary parameter is a text/plain leaf
//     (its Content-Type is invalid, RFC 2045 §5.2). A multipart in which
//     no part was found gets one empty text/plain part, as Dovecot shows
//     it, because IMAP's body-type-mpart needs at least one.
//   - A message header with neither MIME-Version nor Content-Type is not
//     MIME: its other Content-* fields are ignored (as Dovecot does).
//   - Parts without Content-Type are text/plain; charset=us-ascii, or
//     message/rfc822 inside multipart/digest (RFC 2046 §5.1.5). Text parts
//     without a charset get charset=us-ascii. A missing or invalid
//     Content-Transfer-Encoding is 7bit.
//   - message/rfc822 and message/global bodies are parsed as messages
//     (whatever their transfer encoding), with offsets into the outer raw.
//   - Envelope address fields are stored as found: Sender and Reply-To
//     stay empty when the header lacks them; IMAP ENVELOPE must then show
//     From instead (RFC 9051 §7.5.2; go-imap's writer does this for nil
//     lists). Group syntax is flattened to its members. An address
//     without a domain ("root") has an empty Host; IMAP writes NIL there
//     only as a group marker, so the IMAP layer must put a placeholder
//     (Dovecot writes MISSING_DOMAIN).
//   - Lines count line feeds, like Dovecot's line counts.
//
// It runs in time linear in len(raw) (times the nesting depth for line
// counts) and never recurses deeper than maxMIMEDepth.
func parseMessage(raw []byte) Meta {
	p := parser{raw: raw}
	p.dec.CharsetReader = charsetReader
	part, env, _ := p.parsePart(0, 0, false, true)
	return Meta{
		Envelope:    env,
		Structure:   part,
		Lines:       int64(bytes.Count(raw, lf)),
		Attachments: countAttachments(&part),
	}
}

var lf = []byte{'\n'}

// parser holds the state of one parseMessage call.
type parser struct {
	raw []byte
	// bounds are the boundaries of the multiparts being parsed, innermost
	// last.
	bounds [][]byte
	parts  int
	dec    mime.WordDecoder
}

// delim is a delimiter line found while scanning, or the end of input.
type delim struct {
	level int  // index into parser.bounds; -1 means the end of input
	close bool // "--boundary--"
	end   int  // where the content before it ends (its line break excluded)
	next  int  // offset of the line after the delimiter line
}

// Header fields parseMessage reads; the rest are ignored.
const (
	hContentType = iota
	hEncoding
	hDisposition
	hID
	hDescription
	hLanguage
	hLocation
	hMD5
	hDate
	hSubject
	hFrom
	hSender
	hReplyTo
	hTo
	hCc
	hBcc
	hInReplyTo
	hMessageID
	hMIMEVersion
	numFields
)

var fieldNames = [numFields]string{
	hContentType: "content-type",
	hEncoding:    "content-transfer-encoding",
	hDisposition: "content-disposition",
	hID:          "content-id",
	hDescription: "content-description",
	hLanguage:    "content-language",
	hLocation:    "content-location",
	hMD5:         "content-md5",
	hDate:        "date",
	hSubject:     "subject",
	hFrom:        "from",
	hSender:      "sender",
	hReplyTo:     "reply-to",
	hTo:          "to",
	hCc:          "cc",
	hBcc:         "bcc",
	hInReplyTo:   "in-reply-to",
	hMessageID:   "message-id",
	hMIMEVersion: "mime-version",
}

// span is a field value in raw: the bytes after the colon, still folded.
type span struct {
	start, end int
	ok         bool
}

type fields [numFields]span

// fieldIndex returns the index of a header field name, or -1.
func fieldIndex(name []byte) int {
	if len(name) < 2 || len(name) > len("content-transfer-encoding") {
		return -1
	}
	for i, n := range fieldNames {
		if len(n) == len(name) && equalFoldASCII(name, n) {
			return i
		}
	}
	return -1
}

func equalFoldASCII(b []byte, s string) bool {
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// lineEnd returns the offset of the line feed ending the line that starts
// at i, or len(raw), and the start of the next line.
func (p *parser) lineEnd(i int) (end, next int) {
	j := bytes.IndexByte(p.raw[i:], '\n')
	if j < 0 {
		return len(p.raw), len(p.raw)
	}
	return i + j, i + j + 1
}

// breakBefore returns where the line break before line start i begins,
// not reaching below lo: that break belongs to a delimiter on line i.
func (p *parser) breakBefore(i, lo int) int {
	if i > lo && p.raw[i-1] == '\n' {
		i--
		if i > lo && p.raw[i-1] == '\r' {
			i--
		}
	}
	return i
}

// delimiterAt reports whether the line at ls is a delimiter line of an
// open multipart. end is the offset to report as the end of the content
// before it.
func (p *parser) delimiterAt(ls, end int) (delim, bool) {
	raw := p.raw
	if len(p.bounds) == 0 || ls+2 > len(raw) || raw[ls] != '-' || raw[ls+1] != '-' {
		return delim{}, false
	}
	le, next := p.lineEnd(ls)
	data := raw[ls+2 : le]
	best := -1
	for k := len(p.bounds) - 1; k >= 0; k-- {
		b := p.bounds[k]
		if len(b) <= len(data) && bytes.Equal(data[:len(b)], b) && (best < 0 || len(b) > len(p.bounds[best])) {
			best = k
		}
	}
	if best < 0 {
		return delim{}, false
	}
	rest := data[len(p.bounds[best]):]
	return delim{
		level: best,
		close: len(rest) >= 2 && rest[0] == '-' && rest[1] == '-',
		end:   end,
		next:  next,
	}, true
}

// findDelimiter scans from line start pos for the next delimiter line of
// any open multipart, or the end of input.
func (p *parser) findDelimiter(pos int) delim {
	raw := p.raw
	eof := delim{level: -1, end: len(raw), next: len(raw)}
	if len(p.bounds) == 0 {
		return eof
	}
	if d, ok := p.delimiterAt(pos, pos); ok {
		return d
	}
	i := pos
	for {
		j := bytes.Index(raw[i:], []byte("\n--"))
		if j < 0 {
			return eof
		}
		ls := i + j + 1
		if d, ok := p.delimiterAt(ls, p.breakBefore(ls, pos)); ok {
			return d
		}
		// The rest of this line holds no line feed, so no delimiter.
		i, _ = p.lineEnd(ls)
	}
}

// scanHeader reads the header starting at start. It returns the fields
// parseMessage wants and where the body starts. If a delimiter line of an
// open multipart cuts the header short, cut is true and d says where.
func (p *parser) scanHeader(start int) (f fields, bodyStart int, d delim, cut bool) {
	raw := p.raw
	cur := -1
	for i := start; i < len(raw); {
		if raw[i] == '-' {
			if d, ok := p.delimiterAt(i, p.breakBefore(i, start)); ok {
				return f, d.end, d, true
			}
		}
		le, next := p.lineEnd(i)
		ce := le
		if ce > i && raw[ce-1] == '\r' {
			ce--
		}
		if ce == i {
			return f, next, delim{}, false // the empty line ending the header
		}
		if raw[i] == ' ' || raw[i] == '\t' {
			if cur >= 0 {
				f[cur].end = ce
			}
			i = next
			continue
		}
		cur = -1
		if colon := bytes.IndexByte(raw[i:ce], ':'); colon > 0 {
			name := bytes.TrimRight(raw[i:i+colon], " \t")
			if k := fieldIndex(name); k >= 0 && !f[k].ok {
				f[k] = span{start: i + colon + 1, end: ce, ok: true}
				cur = k
			}
		}
		i = next
	}
	return f, len(raw), delim{}, false
}

// value returns a field's unfolded value, trimmed ("" if absent).
func (p *parser) value(s span) string {
	if !s.ok {
		return ""
	}
	return unfold(p.raw[s.start:s.end])
}

// unfold removes the line breaks of a folded field value (RFC 5322
// §2.2.3) and trims surrounding white space.
func unfold(v []byte) string {
	v = bytes.Trim(v, " \t\r\n")
	if bytes.IndexByte(v, '\n') < 0 {
		return string(v)
	}
	var b strings.Builder
	b.Grow(len(v))
	for len(v) > 0 {
		i := bytes.IndexByte(v, '\n')
		if i < 0 {
			b.Write(v)
			break
		}
		line := v[:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		b.Write(line)
		v = v[i+1:]
	}
	return b.String()
}

// Kinds of part, which decide how its body is parsed.
const (
	kindLeaf = iota
	kindMultipart
	kindMessage
)

// parsePart parses the part (or, with isMessage, the message) whose header
// starts at start, and returns it with the delimiter that ended it.
func (p *parser) parsePart(start, depth int, inDigest, isMessage bool) (Part, Envelope, delim) {
	p.parts++
	f, bodyStart, d, cut := p.scanHeader(start)
	part := Part{HeaderStart: int64(start), BodyStart: int64(bodyStart)}
	var env Envelope
	if isMessage {
		env = p.envelope(&f)
		if !f[hMIMEVersion].ok && !f[hContentType].ok {
			// Not MIME (RFC 2045 §4): Content-* fields mean nothing.
			// Dovecot, like us, takes Content-Type alone as MIME enough.
			f = fields{}
		}
	}
	kind, boundary := p.mimeFields(&part, &f, inDigest)
	if (kind != kindLeaf) && (depth >= maxMIMEDepth || p.parts >= maxMIMEParts) {
		kind = kindLeaf
		setTextPlain(&part)
	}
	switch {
	case cut:
		part.End = int64(d.end)
		switch kind {
		case kindMultipart:
			part.Parts = []Part{emptyPart(part.End)}
		case kindMessage:
			part.Message = &Meta{Structure: emptyPart(part.End)}
		}
	case kind == kindMultipart:
		d = p.parseMultipart(&part, boundary, depth)
	case kind == kindMessage:
		inner, innerEnv, dd := p.parsePart(bodyStart, depth+1, false, true)
		d = dd
		part.End = inner.End
		part.Message = &Meta{
			Envelope:    innerEnv,
			Structure:   inner,
			Lines:       int64(bytes.Count(p.raw[inner.HeaderStart:inner.End], lf)),
			Attachments: countAttachments(&inner),
		}
	default:
		d = p.findDelimiter(bodyStart)
		part.End = int64(d.end)
	}
	part.Size = part.End - part.BodyStart
	if part.Type == "text" || kind == kindMessage {
		part.Lines = int64(bytes.Count(p.raw[part.BodyStart:part.End], lf))
	}
	return part, env, d
}

// parseMultipart splits a multipart body into its parts and returns the
// delimiter (of an outer multipart) or end of input that ended it.
func (p *parser) parseMultipart(part *Part, boundary []byte, depth int) delim {
	p.bounds = append(p.bounds, boundary)
	my := len(p.bounds) - 1
	digest := part.Subtype == "digest"
	d := p.findDelimiter(int(part.BodyStart)) // skips the preamble
	for d.level == my && !d.close {
		if p.parts >= maxMIMEParts {
			d = p.findDelimiter(d.next)
			continue
		}
		child, _, cd := p.parsePart(d.next, depth+1, digest, false)
		part.Parts = append(part.Parts, child)
		d = cd
	}
	p.bounds = p.bounds[:my]
	if d.level == my {
		// The close delimiter: the epilogue runs to an outer delimiter.
		d = p.findDelimiter(d.next)
	}
	part.End = int64(d.end)
	if len(part.Parts) == 0 {
		part.Parts = []Part{emptyPart(part.BodyStart)}
	}
	return d
}

// emptyPart is the zero-length text/plain part at off that stands in for
// missing content.
func emptyPart(off int64) Part {
	part := Part{Encoding: "7bit", HeaderStart: off, BodyStart: off, End: off}
	setTextPlain(&part)
	return part
}

func setTextPlain(part *Part) {
	part.Type, part.Subtype = "text", "plain"
	part.Params = map[string]string{"charset": "us-ascii"}
}

// mimeFields fills the part's MIME fields from its header and says how
// its body is to be parsed.
func (p *parser) mimeFields(part *Part, f *fields, inDigest bool) (kind int, boundary []byte) {
	if f[hContentType].ok {
		typ, sub, params, ok := parseContentType(p.value(f[hContentType]), &p.dec)
		if ok {
			part.Type, part.Subtype, part.Params = typ, sub, params
		} else {
			setTextPlain(part)
			if cs := params["charset"]; cs != "" {
				part.Params["charset"] = cs
			}
		}
	} else if inDigest {
		part.Type, part.Subtype = "message", "rfc822"
	} else {
		setTextPlain(part)
	}
	switch part.Type {
	case "text":
		if part.Params["charset"] == "" {
			if part.Params == nil {
				part.Params = map[string]string{}
			}
			part.Params["charset"] = "us-ascii"
		}
	case "multipart":
		if b := part.Params["boundary"]; b != "" {
			kind, boundary = kindMultipart, []byte(b)
		} else {
			setTextPlain(part)
		}
	case "message":
		if part.Subtype == "rfc822" || part.Subtype == "global" {
			kind = kindMessage
		}
	}

	part.Encoding = "7bit"
	if enc := firstToken(p.value(f[hEncoding])); enc != "" {
		part.Encoding = enc
	}
	if f[hDisposition].ok {
		v := p.value(f[hDisposition])
		disp, rest := cutToken(v)
		part.Disposition = strings.ToLower(disp)
		part.DispositionParams = parseParams(rest, &p.dec)
	}
	part.ID = p.value(f[hID])
	if f[hDescription].ok {
		part.Description = p.decodeText(p.value(f[hDescription]))
	}
	part.Language = parseLanguages(p.value(f[hLanguage]))
	part.Location = p.value(f[hLocation])
	part.MD5 = p.value(f[hMD5])
	return kind, boundary
}

// envelope builds the IMAP envelope of a message header.
func (p *parser) envelope(f *fields) Envelope {
	env := Envelope{
		Date:      parseDate(p.value(f[hDate])),
		From:      p.addressList(f[hFrom]),
		Sender:    p.addressList(f[hSender]),
		ReplyTo:   p.addressList(f[hReplyTo]),
		To:        p.addressList(f[hTo]),
		Cc:        p.addressList(f[hCc]),
		Bcc:       p.addressList(f[hBcc]),
		InReplyTo: msgIDs(p.value(f[hInReplyTo])),
	}
	if f[hSubject].ok {
		env.Subject = p.decodeText(p.value(f[hSubject]))
	}
	if ids := msgIDs(p.value(f[hMessageID])); len(ids) > 0 {
		env.MessageID = ids[0]
	} else if v := p.value(f[hMessageID]); v != "" && !strings.ContainsAny(v, " \t<>") {
		env.MessageID = clean(v)
	}
	return env
}

// countAttachments counts the parts of a structure (not inside
// encapsulated messages) that are attachments: disposition attachment,
// or a file name.
func countAttachments(part *Part) int {
	if len(part.Parts) > 0 {
		n := 0
		for i := range part.Parts {
			n += countAttachments(&part.Parts[i])
		}
		return n
	}
	if part.Disposition == "attachment" || partFilename(part) != "" {
		return 1
	}
	return 0
}

// partFilename returns the file name a part carries, if any.
func partFilename(part *Part) string {
	if name := part.DispositionParams["filename"]; name != "" {
		return name
	}
	return part.Params["name"]
}

// charsetReader converts text in a named charset to UTF-8 for
// mime.WordDecoder. It never fails: an unknown charset passes its bytes
// through, and callers make the result valid UTF-8.
func charsetReader(name string, r io.Reader) (io.Reader, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if i := strings.IndexByte(name, '*'); i >= 0 {
		name = name[:i] // RFC 2231 §5 language suffix in an encoded word
	}
	switch name {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return r, nil
	}
	if cr, err := charset.Reader(name, r); err == nil {
		return cr, nil
	}
	return r, nil
}

// decodeCharset converts b from the named charset to valid UTF-8.
func decodeCharset(name string, b []byte) string {
	name = strings.ToLower(strings.TrimSpace(name))
	switch name {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return legacyText(b)
	}
	cr, err := charset.Reader(name, bytes.NewReader(b))
	if err != nil {
		return legacyText(b)
	}
	out, err := io.ReadAll(cr)
	if err != nil {
		return legacyText(b)
	}
	return strings.ToValidUTF8(string(out), "\uFFFD")
}

// legacyText returns b as UTF-8: unchanged if it is valid UTF-8, else
// read as Windows-1252, the usual charset of undeclared 8-bit mail.
func legacyText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out, err := charmap.Windows1252.NewDecoder().Bytes(b)
	if err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return string(out)
}

// decodeText decodes an unstructured field value: raw 8-bit text, then
// RFC 2047 encoded words.
func (p *parser) decodeText(v string) string {
	if !utf8.ValidString(v) {
		v = legacyText([]byte(v))
	}
	if strings.Contains(v, "=?") {
		if d, err := p.dec.DecodeHeader(v); err == nil {
			v = d
		}
	}
	return clean(v)
}

// clean makes s valid UTF-8 and turns control characters into spaces, so
// a decoded value can be written in an IMAP quoted string or a listing.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return strings.Map(func(r rune) rune {
				if r < ' ' && r != '\t' || r == 0x7f {
					return ' '
				}
				return r
			}, s)
		}
	}
	return s
}

// addressList parses an address field leniently: a list the standard
// parser rejects is split at top-level commas and read item by item.
func (p *parser) addressList(s span) []Address {
	if !s.ok {
		return nil
	}
	v := p.value(s)
	if !utf8.ValidString(v) {
		v = legacyText([]byte(v))
	}
	ap := mail.AddressParser{WordDecoder: &p.dec}
	if list, err := ap.ParseList(v); err == nil {
		out := make([]Address, 0, len(list))
		for _, a := range list {
			out = append(out, makeAddress(a.Name, a.Address))
		}
		return out
	}
	var out []Address
	for _, item := range splitAddressList(v) {
		if a, err := ap.Parse(item); err == nil {
			out = append(out, makeAddress(a.Name, a.Address))
		} else if a, ok := p.looseAddress(item); ok {
			out = append(out, a)
		}
	}
	return out
}

func makeAddress(name, addr string) Address {
	a := Address{Name: clean(name)}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		a.Mailbox, a.Host = addr[:i], addr[i+1:]
	} else {
		a.Mailbox = addr
	}
	a.Mailbox, a.Host = clean(a.Mailbox), clean(a.Host)
	return a
}

// splitAddressList splits at commas outside quotes, comments and angle
// brackets.
func splitAddressList(v string) []string {
	var out []string
	depth, quoted, angle, start := 0, false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// looseAddress reads what the standard parser rejects: "Name
// <addr>" with specials in the name, "local" without a domain, a group
// prefix or suffix. Items with neither an address nor a name are dropped.
func (p *parser) looseAddress(item string) (Address, bool) {
	item = strings.TrimSpace(item)
	if i := strings.IndexByte(item, ':'); i >= 0 && !strings.ContainsAny(item[:i], "\"<@") {
		item = strings.TrimSpace(item[i+1:]) // group name
	}
	item = strings.TrimSpace(strings.TrimSuffix(item, ";"))
	var name, addr string
	if lt := strings.LastIndexByte(item, '<'); lt >= 0 {
		addr = item[lt+1:]
		if gt := strings.IndexByte(addr, '>'); gt >= 0 {
			addr = addr[:gt]
		}
		name = strings.TrimSpace(item[:lt])
		name = strings.TrimSpace(strings.Trim(name, `"`))
	} else {
		addr = item
		if lp := strings.IndexByte(addr, '('); lp >= 0 {
			name = strings.Trim(strings.TrimSpace(addr[lp:]), "()")
			addr = addr[:lp]
		}
	}
	addr = strings.Trim(strings.TrimSpace(addr), `"`)
	if strings.ContainsAny(addr, " \t") {
		if name == "" {
			name = addr
		}
		addr = ""
	}
	if addr == "" {
		return Address{}, false
	}
	if name != "" {
		if d, err := p.dec.DecodeHeader(name); err == nil {
			name = d
		}
	}
	return makeAddress(name, addr), true
}

// msgIDs returns the message IDs in angle brackets in v, brackets and
// white space removed, at most maxMsgIDs.
func msgIDs(v string) []string {
	var ids []string
	for len(ids) < maxMsgIDs {
		lt := strings.IndexByte(v, '<')
		if lt < 0 {
			return ids
		}
		gt := strings.IndexByte(v[lt:], '>')
		if gt < 0 {
			return ids
		}
		id := strings.Join(strings.Fields(v[lt+1:lt+gt]), "")
		if id != "" {
			ids = append(ids, clean(id))
		}
		v = v[lt+gt+1:]
	}
	return ids
}

// obsoleteZones are the RFC 5322 §4.3 zone names the standard parser
// reads as UTC offset 0.
var obsoleteZones = map[string]int{
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}

// parseDate parses a Date: field; zero if it cannot, or if the date
// cannot be represented in JSON.
func parseDate(v string) time.Time {
	if v == "" {
		return time.Time{}
	}
	if len(v) > maxDateBytes {
		v = v[:maxDateBytes]
	}
	t, err := mail.ParseDate(v)
	if err != nil {
		// Trailing junk after the zone is common: try the date's first
		// words ("Mon, 2 Mar 2026 10:00:00 +0100" has six).
		f := strings.Fields(v)
		for n := min(len(f)-1, 6); n >= 4 && err != nil; n-- {
			t, err = mail.ParseDate(strings.Join(f[:n], " "))
		}
		if err != nil {
			return time.Time{}
		}
	}
	name, off := t.Zone()
	if h, ok := obsoleteZones[name]; ok && off == 0 {
		t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.FixedZone(name, h*3600))
	}
	if _, off = t.Zone(); off <= -24*3600 || off >= 24*3600 {
		t = t.UTC()
	}
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}
	}
	return t
}

// firstToken returns the first token of v, lower-case, or "" if v does
// not start with one.
func firstToken(v string) string {
	tok, _ := cutToken(v)
	return strings.ToLower(tok)
}

// cutToken splits an RFC 2045 token off the start of v.
func cutToken(v string) (tok, rest string) {
	v = strings.TrimLeft(v, " \t")
	i := 0
	for i < len(v) && isTokenChar(v[i]) {
		i++
	}
	return v[:i], v[i:]
}

// isTokenChar reports whether c may appear in an RFC 2045 token.
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// parseContentType parses a Content-Type value leniently. ok is false if
// the type is invalid; params are returned either way.
func parseContentType(v string, dec *mime.WordDecoder) (typ, sub string, params map[string]string, ok bool) {
	typ, rest := cutToken(v)
	rest = strings.TrimLeft(rest, " \t")
	if strings.HasPrefix(rest, "/") {
		sub, rest = cutToken(rest[1:])
	}
	params = parseParams(rest, dec)
	typ, sub = strings.ToLower(typ), strings.ToLower(sub)
	if typ == "text" && sub == "" {
		sub = "plain"
	}
	return typ, sub, params, typ != "" && sub != ""
}

// paramSegment is one RFC 2231 piece of a parameter value.
type paramSegment struct {
	n       int
	encoded bool
	value   string
}

// parseParams parses "; name=value" parameters leniently, joining RFC
// 2231 continuations and decoding their charsets, and decoding RFC 2047
// words that some mailers put in quoted values. Keys are lower-case; the
// first of a repeated parameter wins. Nil if there are none.
func parseParams(s string, dec *mime.WordDecoder) map[string]string {
	var plain map[string]string
	var ext map[string][]paramSegment
	count := 0
	for i := 0; i < len(s) && count < maxParams; {
		c := s[i]
		if c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			i++
			continue
		}
		if c == '(' {
			i = skipComment(s, i)
			continue
		}
		// attribute
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ';' {
			j++
		}
		name := strings.ToLower(strings.TrimSpace(s[i:j]))
		if j >= len(s) || s[j] == ';' {
			i = j
			continue
		}
		j++ // '='
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		var value string
		if j < len(s) && s[j] == '"' {
			var b strings.Builder
			k := j + 1
			for ; k < len(s) && s[k] != '"'; k++ {
				if s[k] == '\\' && k+1 < len(s) {
					k++
				}
				b.WriteByte(s[k])
			}
			value, i = b.String(), k+1
		} else {
			k := j
			for k < len(s) && s[k] != ';' {
				k++
			}
			value, i = strings.TrimSpace(s[j:k]), k
			if c := strings.Index(value, " ("); c >= 0 {
				value = strings.TrimSpace(value[:c]) // trailing comment
			}
		}
		if name == "" {
			continue
		}
		count++
		base, seg, isExt := splitExtName(name)
		if !isExt {
			if plain == nil {
				plain = map[string]string{}
			}
			if _, dup := plain[name]; !dup {
				plain[name] = value
			}
			continue
		}
		if ext == nil {
			ext = map[string][]paramSegment{}
		}
		if len(ext[base]) < maxParamSegments {
			seg.value = value
			ext[base] = append(ext[base], seg)
		}
	}
	if plain == nil && ext == nil {
		return nil
	}
	out := make(map[string]string, len(plain)+len(ext))
	for k, v := range plain {
		if k == "boundary" {
			out[k] = v // must match the delimiter lines byte for byte
			continue
		}
		v = legacyText([]byte(v))
		if strings.Contains(v, "=?") {
			if d, err := dec.DecodeHeader(v); err == nil {
				v = d
			}
		}
		out[k] = clean(v)
	}
	for k, segs := range ext {
		out[k] = joinSegments(segs) // RFC 2231 wins over a plain twin
	}
	return out
}

// splitExtName splits an RFC 2231 parameter name: "name*" (encoded),
// "name*N" (continuation) or "name*N*" (encoded continuation).
func splitExtName(name string) (base string, seg paramSegment, ok bool) {
	star := strings.IndexByte(name, '*')
	if star <= 0 {
		return name, seg, false
	}
	base, rest := name[:star], name[star+1:]
	if rest == "" {
		return base, paramSegment{encoded: true}, true
	}
	if strings.HasSuffix(rest, "*") {
		seg.encoded = true
		rest = rest[:len(rest)-1]
	}
	n := 0
	for _, c := range []byte(rest) {
		if c < '0' || c > '9' || n > maxParamSegments {
			return name, paramSegment{}, false
		}
		n = n*10 + int(c-'0')
	}
	if rest == "" {
		return name, paramSegment{}, false
	}
	seg.n = n
	return base, seg, true
}

// joinSegments assembles an RFC 2231 value: segments in order, the first
// encoded one carrying charset'language'.
func joinSegments(segs []paramSegment) string {
	// Insertion sort: few segments, usually already in order.
	for i := 1; i < len(segs); i++ {
		for j := i; j > 0 && segs[j].n < segs[j-1].n; j-- {
			segs[j], segs[j-1] = segs[j-1], segs[j]
		}
	}
	var cs string
	var b []byte
	for i, s := range segs {
		if i > 0 && s.n == segs[i-1].n {
			continue // duplicate segment
		}
		v := s.value
		if !s.encoded {
			b = append(b, v...)
			continue
		}
		if i == 0 {
			if q := strings.IndexByte(v, '\''); q >= 0 {
				if q2 := strings.IndexByte(v[q+1:], '\''); q2 >= 0 {
					cs = v[:q]
					v = v[q+1+q2+1:]
				}
			}
		}
		b = appendPercentDecoded(b, v)
	}
	return clean(decodeCharset(cs, b))
}

func appendPercentDecoded(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
			i += 2
			continue
		}
		b = append(b, v[i])
	}
	return b
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// skipComment returns the offset after the (possibly nested) comment at i.
func skipComment(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}

// parseLanguages splits a Content-Language value into its tags.
func parseLanguages(v string) []string {
	if v == "" {
		return nil
	}
	var out []string
	for _, tag := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if strings.ContainsAny(tag, "()") || len(out) >= maxLanguages {
			continue
		}
		out = append(out, clean(tag))
	}
	return out
}
