package imap

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

const (
	// fetchChunk is how many messages FETCH reads from the store at once:
	// enough to amortise a query, small enough to bound memory.
	fetchChunk = 500
	// maxHeaderFilterBytes bounds the header read for HEADER.FIELDS; a
	// longer header is cut there before filtering.
	maxHeaderFilterBytes = 4 << 20
	// bodyBatchBytes bounds the message bytes FETCH holds at once when it
	// reads bodies in batches (store.Account.InlineBodies).
	bodyBatchBytes = 4 << 20
)

// Fetch answers FETCH and UID FETCH from the data parsed at delivery:
// envelope and structure come from the store's meta, body sections are
// byte ranges of the stored message, nothing is re-parsed. A non-PEEK
// body section sets \Seen first (RFC 9051 §6.4.5).
func (sess *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	defer sess.enter("FETCH")()
	uids := sess.resolve(numSet)
	if len(uids) == 0 {
		return nil
	}
	var seen map[uint32]bool
	if markSeen(options) && !sess.sel.readOnly {
		changed, err := sess.setFlags(uids, store.FlagsAdd, []string{store.FlagSeen})
		if err != nil {
			return sess.replyFor(err)
		}
		if len(changed) > 0 {
			seen = make(map[uint32]bool, len(changed))
			for _, m := range changed {
				seen[m.UID] = true
			}
		}
	}
	if fromState(options) {
		return sess.fetchFromState(w, uids, options)
	}
	fields := metaFields(options)
	// Whole bodies alone (BODY.PEEK[], and BODY[] when \Seen was
	// already set) need of each message only its identity and size.
	sizesOnly := fields == 0 && seen == nil && !options.Flags && !options.InternalDate
	var ww *wireWriter
	if wireItems(options) {
		if ww = sess.wireWriter(); ww != nil {
			defer ww.flush()
		}
	}
	for len(uids) > 0 {
		chunk := uids[:min(len(uids), fetchChunk)]
		uids = uids[len(chunk):]
		msgs, err := sess.fetchChunk(chunk, fields, sizesOnly)
		if err != nil {
			return sess.replyFor(err)
		}
		mu := make([]uint32, len(msgs))
		for i := range msgs {
			mu[i] = msgs[i].UID
		}
		seqs := sess.seqNums(mu)
		// Bodies are read in batches of bounded size, one query each.
		for start := 0; start < len(msgs); {
			end, size := start, int64(0)
			for end < len(msgs) && (end == start || size+msgs[end].Size <= bodyBatchBytes) {
				size += msgs[end].Size
				end++
			}
			var raw map[uint32][]byte
			if needsBody(options) {
				var uids []uint32
				for i := start; i < end; i++ {
					if seqs[i] != 0 && msgs[i].Size <= bodyBatchBytes {
						uids = append(uids, msgs[i].UID)
					}
				}
				if len(uids) > 0 {
					if raw, err = sess.acct.InlineBodies(sess.ctx, sess.sel.id, toRanges(uids)); err != nil {
						return sess.replyFor(err)
					}
				}
			}
			for i := start; i < end; i++ {
				if seqs[i] == 0 {
					continue // expunged meanwhile, or not yet announced
				}
				if ww != nil {
					if err := ww.fetchOne(seqs[i], &msgs[i], options, seen[msgs[i].UID]); err != nil {
						return err
					}
					continue
				}
				m := &fetchMsg{MessageMeta: &msgs[i], raw: raw[msgs[i].UID]}
				if err := sess.fetchOne(w, seqs[i], m, options, seen[msgs[i].UID]); err != nil {
					return err
				}
			}
			start = end
		}
	}
	return nil
}

// fromState reports whether a FETCH asks for nothing but UID and FLAGS,
// which the shared mailbox state holds for every message, and ENVELOPE.
func fromState(options *imap.FetchOptions) bool {
	return options.BodyStructure == nil && !options.InternalDate && !options.RFC822Size &&
		len(options.BodySection) == 0 && len(options.BinarySection) == 0 && len(options.BinarySectionSize) == 0 &&
		!options.ModSeq && options.ChangedSince == 0
}

// stateChunk is how many messages a FETCH answered from the mailbox
// state handles at once (their envelopes are read in one query).
const stateChunk = 2000

// flagsEntry is one message of a FETCH answered from the mailbox state.
type flagsEntry struct {
	seq, uid uint32
	system   store.SystemFlags
	keywords string
	envelope *store.Envelope
}

// fetchFromState answers a FETCH of UID, FLAGS and ENVELOPE from the
// shared mailbox state, the store giving only the envelopes (one narrow
// query per chunk): a chunk at a time is copied under the read lock,
// then written with no lock held.
func (sess *session) fetchFromState(w *imapserver.FetchWriter, uids []uint32, options *imap.FetchOptions) error {
	sel := sess.sel
	ww := sess.wireWriter()
	if ww != nil {
		defer ww.flush()
	}
	// The FLAGS lists of the system-flag combinations, built as needed.
	var lists [32][]imap.Flag
	listFor := func(e *flagsEntry) []imap.Flag {
		if e.keywords != "" {
			return imapFlags(append(e.system.Names(), strings.Fields(e.keywords)...))
		}
		l := lists[e.system&31]
		if l == nil {
			l = imapFlags(e.system.Names())
			lists[e.system&31] = l
		}
		return l
	}
	// The envelopes of the next chunk are read while this one is
	// written (the store and the client each get a CPU), at most one
	// chunk ahead.
	type envelopes struct {
		envs []store.UIDEnvelope
		err  error
	}
	readEnvelopes := func(chunk []uint32) <-chan envelopes {
		ch := make(chan envelopes, 1) // the reader never waits for us
		go func() {
			envs, err := sess.acct.Envelopes(sess.ctx, sel.id, toRanges(chunk))
			ch <- envelopes{envs, err}
		}()
		return ch
	}
	var pending <-chan envelopes
	if options.Envelope {
		pending = readEnvelopes(uids[:min(len(uids), stateChunk)])
	}
	buf := make([]flagsEntry, 0, min(len(uids), stateChunk))
	for len(uids) > 0 {
		chunk := uids[:min(len(uids), stateChunk)]
		uids = uids[len(chunk):]
		buf = buf[:0]
		var envs []store.UIDEnvelope
		if options.Envelope {
			res := <-pending
			if res.err != nil {
				return sess.replyFor(res.err)
			}
			envs = res.envs
			if len(uids) > 0 {
				pending = readEnvelopes(uids[:min(len(uids), stateChunk)])
			}
		}
		next := 0 // the first of envs that may belong to the next UID
		sel.mb.mu.RLock()
		pos, prev := 0, uint32(0)
		for _, uid := range chunk {
			if uid < prev { // "$" may come unsorted
				pos, next = 0, 0
			}
			prev = uid
			k, ok := slices.BinarySearch(sel.mb.uids[pos:], uid)
			pos += k
			if !ok {
				continue // expunged meanwhile
			}
			seq := sel.tracker.EncodeSeqNum(uint32(pos + 1))
			if seq == 0 {
				continue // not yet announced
			}
			e := flagsEntry{seq: seq, uid: uid, system: sel.mb.system[pos], keywords: sel.mb.keywords[uid]}
			if options.Envelope {
				// envs and chunk are both ascending (see prev).
				for next < len(envs) && envs[next].UID < uid {
					next++
				}
				if next == len(envs) || envs[next].UID != uid {
					continue // expunged before the envelopes were read
				}
				e.envelope = &envs[next].Envelope
			}
			buf = append(buf, e)
		}
		sel.mb.mu.RUnlock()
		if ww != nil {
			for i := range buf {
				e := &buf[i]
				ww.begin(e.seq)
				if options.UID {
					ww.uid(e.uid)
				}
				if options.Flags {
					ww.flags(e.system, e.keywords)
				}
				if e.envelope != nil {
					ww.envelope(e.envelope)
				}
				if err := ww.end(); err != nil {
					return err
				}
			}
			continue
		}
		for i := range buf {
			e := &buf[i]
			rw := w.CreateMessage(e.seq)
			if options.UID {
				rw.WriteUID(imap.UID(e.uid))
			}
			if options.Flags {
				rw.WriteFlags(listFor(e))
			}
			if e.envelope != nil {
				rw.WriteEnvelope(envelope(e.envelope))
			}
			if err := rw.Close(); err != nil {
				return err
			}
		}
	}
	return nil
}

func needsBody(options *imap.FetchOptions) bool {
	return len(options.BodySection) > 0 || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0
}

// fetchMsg is a message being fetched, with its bytes when they were
// read in a batch (nil: read them from the store as needed).
type fetchMsg struct {
	*store.MessageMeta
	raw []byte
}

// openRange reads n bytes of the message from off.
func (sess *session) openRange(m *fetchMsg, off, n int64) (io.ReadCloser, error) {
	if m.raw != nil {
		off = min(max(off, 0), int64(len(m.raw)))
		n = min(max(n, 0), int64(len(m.raw))-off)
		return io.NopCloser(bytes.NewReader(m.raw[off : off+n])), nil
	}
	rc, err := sess.acct.OpenRange(sess.ctx, m.ID, off, n)
	if err != nil {
		return nil, fmt.Errorf("fetch message %d: %w", m.ID, err)
	}
	return rc, nil
}

func markSeen(options *imap.FetchOptions) bool {
	for _, bs := range options.BodySection {
		if !bs.Peek {
			return true
		}
	}
	for _, bs := range options.BinarySection {
		if !bs.Peek {
			return true
		}
	}
	return false
}

// metaFields says which parsed data a FETCH needs.
func metaFields(options *imap.FetchOptions) store.MetaFields {
	var f store.MetaFields
	if options.Envelope {
		f |= store.MetaEnvelope
	}
	if options.BodyStructure != nil {
		f |= store.MetaStructure
	}
	for _, bs := range options.BodySection {
		if len(bs.Part) > 0 || bs.Specifier != imap.PartSpecifierNone {
			f |= store.MetaStructure
		}
	}
	for _, bs := range options.BinarySection {
		if len(bs.Part) > 0 {
			f |= store.MetaStructure
		}
	}
	for _, bs := range options.BinarySectionSize {
		if len(bs.Part) > 0 {
			f |= store.MetaStructure
		}
	}
	return f
}

// fetchChunk reads what a FETCH needs of the messages: with sizesOnly
// only ID, UID and Size are set.
func (sess *session) fetchChunk(uids []uint32, fields store.MetaFields, sizesOnly bool) ([]store.MessageMeta, error) {
	ranges := toRanges(uids)
	if fields != 0 {
		return sess.acct.MessagesWithMeta(sess.ctx, sess.sel.id, ranges, fields)
	}
	if sizesOnly {
		sizes, err := sess.acct.Sizes(sess.ctx, sess.sel.id, ranges)
		if err != nil {
			return nil, err
		}
		out := make([]store.MessageMeta, len(sizes))
		for i, m := range sizes {
			out[i].ID, out[i].MailboxID, out[i].UID, out[i].Size = m.ID, sess.sel.id, m.UID, m.Size
		}
		return out, nil
	}
	msgs, err := sess.acct.MessagesIn(sess.ctx, sess.sel.id, ranges)
	if err != nil {
		return nil, err
	}
	out := make([]store.MessageMeta, len(msgs))
	for i, m := range msgs {
		out[i].Message = m
	}
	return out, nil
}

func (sess *session) fetchOne(w *imapserver.FetchWriter, seq uint32, m *fetchMsg, options *imap.FetchOptions, seenChanged bool) error {
	rw := w.CreateMessage(seq)
	if options.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if options.Flags || seenChanged {
		rw.WriteFlags(imapFlags(m.Flags))
	}
	if options.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if options.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	if options.Envelope {
		rw.WriteEnvelope(envelope(&m.Meta.Envelope))
	}
	if options.BodyStructure != nil {
		rw.WriteBodyStructure(bodyStructure(&m.Meta.Structure))
	}
	for _, bs := range options.BodySection {
		if err := sess.writeBodySection(rw, m, bs); err != nil {
			rw.Close()
			return err
		}
	}
	for _, bs := range options.BinarySectionSize {
		n, err := sess.binarySize(m, bs.Part)
		if err != nil {
			rw.Close()
			return err
		}
		rw.WriteBinarySectionSize(bs, uint32(min(n, 1<<32-1)))
	}
	for _, bs := range options.BinarySection {
		if err := sess.writeBinarySection(rw, m, bs); err != nil {
			rw.Close()
			return err
		}
	}
	return rw.Close()
}

// findPart walks a section part path (RFC 9051 §6.4.5): numbers index
// the parts of a multipart; a message/rfc822 part is entered first; the
// body of a non-multipart message is its part 1. It returns nil for a
// path that names no part.
func findPart(root *store.Part, path []int) *store.Part {
	cur, isMsg := root, true
	for _, n := range path {
		if !isMsg && cur.Message != nil {
			cur, isMsg = &cur.Message.Structure, true
		}
		switch {
		case len(cur.Parts) > 0:
			if n < 1 || n > len(cur.Parts) {
				return nil
			}
			cur = &cur.Parts[n-1]
		case isMsg && n == 1:
			// the body of a single-part message is its part 1
		default:
			return nil
		}
		isMsg = false
	}
	return cur
}

// sectionRange returns the byte range [off, off+n) of the stored message
// that a section names before HEADER.FIELDS filtering and partial, and
// whether it exists.
func sectionRange(m *fetchMsg, bs *imap.FetchItemBodySection) (off, n int64, ok bool) {
	if len(bs.Part) == 0 {
		root := &m.Meta.Structure
		switch bs.Specifier {
		case imap.PartSpecifierNone:
			return 0, m.Size, true
		case imap.PartSpecifierHeader:
			return root.HeaderStart, root.BodyStart - root.HeaderStart, true
		case imap.PartSpecifierText:
			return root.BodyStart, root.End - root.BodyStart, true
		}
		return 0, 0, false
	}
	p := findPart(&m.Meta.Structure, bs.Part)
	if p == nil {
		return 0, 0, false
	}
	switch bs.Specifier {
	case imap.PartSpecifierNone:
		return p.BodyStart, p.End - p.BodyStart, true
	case imap.PartSpecifierMIME:
		return p.HeaderStart, p.BodyStart - p.HeaderStart, true
	case imap.PartSpecifierHeader, imap.PartSpecifierText:
		if p.Message == nil {
			return 0, 0, false // HEADER and TEXT need a message/rfc822 part
		}
		in := &p.Message.Structure
		if bs.Specifier == imap.PartSpecifierHeader {
			return in.HeaderStart, in.BodyStart - in.HeaderStart, true
		}
		return in.BodyStart, in.End - in.BodyStart, true
	}
	return 0, 0, false
}

// partial applies <offset.size> to a length: the sub-range's start and
// length.
func partial(p *imap.SectionPartial, n int64) (int64, int64) {
	if p == nil {
		return 0, n
	}
	off := min(max(p.Offset, 0), n)
	return off, min(max(p.Size, 0), n-off)
}

func (sess *session) writeBodySection(rw *imapserver.FetchResponseWriter, m *fetchMsg, bs *imap.FetchItemBodySection) error {
	off, n, ok := sectionRange(m, bs)
	if !ok {
		return closeLiteral(rw.WriteBodySection(bs, 0))
	}
	if len(bs.HeaderFields) > 0 || len(bs.HeaderFieldsNot) > 0 {
		hdr, err := sess.readRange(m, off, min(n, maxHeaderFilterBytes))
		if err != nil {
			return err
		}
		b := filterHeader(hdr, bs.HeaderFields, bs.HeaderFieldsNot)
		po, pn := partial(bs.Partial, int64(len(b)))
		lw := rw.WriteBodySection(bs, pn)
		if _, err := lw.Write(b[po : po+pn]); err != nil {
			return err
		}
		return lw.Close()
	}
	po, pn := partial(bs.Partial, n)
	lw := rw.WriteBodySection(bs, pn)
	if pn > 0 && m.raw != nil && off+po+pn <= int64(len(m.raw)) {
		if _, err := lw.Write(m.raw[off+po : off+po+pn]); err != nil {
			return err
		}
	} else if pn > 0 {
		rc, err := sess.openRange(m, off+po, pn)
		if err != nil {
			return err
		}
		_, err = io.CopyN(lw, rc, pn)
		rc.Close()
		if err != nil {
			return fmt.Errorf("fetch message %d: %w", m.ID, err)
		}
	}
	return lw.Close()
}

func closeLiteral(lw io.WriteCloser) error { return lw.Close() }

func (sess *session) readRange(m *fetchMsg, off, n int64) ([]byte, error) {
	rc, err := sess.openRange(m, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, n))
	if err != nil {
		return nil, fmt.Errorf("fetch message %d: %w", m.ID, err)
	}
	return b, nil
}

// filterHeader keeps (fields) or drops (not) the named header fields,
// each with its continuation lines, and ends with the blank line (RFC
// 9051 §6.4.5: HEADER.FIELDS includes the delimiting blank line).
func filterHeader(hdr []byte, fields, not []string) []byte {
	want := func(name string) bool {
		for _, f := range fields {
			if strings.EqualFold(f, name) {
				return true
			}
		}
		if len(fields) > 0 {
			return false
		}
		for _, f := range not {
			if strings.EqualFold(f, name) {
				return false
			}
		}
		return true
	}
	var out bytes.Buffer
	keep := false
	for len(hdr) > 0 {
		i := bytes.IndexByte(hdr, '\n')
		line := hdr
		if i >= 0 {
			line = hdr[:i+1]
		}
		hdr = hdr[len(line):]
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // the blank line ending the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if keep {
				out.Write(line)
			}
			continue
		}
		name, _, found := bytes.Cut(trimmed, []byte(":"))
		keep = found && want(strings.TrimSpace(string(name)))
		if keep {
			out.Write(line)
			if !bytes.HasSuffix(line, []byte("\n")) {
				out.WriteString("\r\n")
			}
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}

var errUnknownCTE = &imap.Error{
	Type: imap.StatusResponseTypeNo,
	Code: imap.ResponseCodeUnknownCTE,
	Text: "Cannot decode this part's transfer encoding",
}

// binaryPart returns the byte range and transfer encoding behind
// BINARY[path] (RFC 3516): a whole message or multipart is sent as is.
func binaryPart(m *fetchMsg, path []int) (off, n int64, enc string, ok bool) {
	if len(path) == 0 {
		return 0, m.Size, "", true
	}
	p := findPart(&m.Meta.Structure, path)
	if p == nil {
		return 0, 0, "", false
	}
	if len(p.Parts) > 0 || p.Message != nil {
		return p.BodyStart, p.End - p.BodyStart, "", true
	}
	return p.BodyStart, p.End - p.BodyStart, p.Encoding, true
}

// decoder returns a reader of r's decoded content, or nil for an unknown
// transfer encoding.
func decoder(enc string, r io.Reader) io.Reader {
	switch strings.ToLower(enc) {
	case "", "7bit", "8bit", "binary":
		return r
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &base64Cleaner{r: bufio.NewReader(r)})
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return nil
}

// base64Cleaner drops what is not base64 alphabet (line ends, spaces,
// stray characters), as mail readers do, and stops at padding's end.
type base64Cleaner struct {
	r *bufio.Reader
}

func (c *base64Cleaner) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		b, err := c.r.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		switch {
		case b >= 'A' && b <= 'Z', b >= 'a' && b <= 'z', b >= '0' && b <= '9', b == '+', b == '/', b == '=':
			p[n] = b
			n++
		}
	}
	return n, nil
}

// decodedSize counts the decoded bytes of a part (BINARY.SIZE). Content
// that fails to decode counts up to the failure, consistently with what
// writeBinarySection sends.
func (sess *session) decodedSize(m *fetchMsg, off, n int64, enc string) (int64, error) {
	rc, err := sess.openRange(m, off, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	d := decoder(enc, rc)
	if d == nil {
		return 0, errUnknownCTE
	}
	size, err := io.Copy(io.Discard, d)
	if err != nil && !isDecodeError(err) {
		return 0, fmt.Errorf("fetch message %d: %w", m.ID, err)
	}
	return size, nil
}

func isDecodeError(err error) bool {
	var ce base64.CorruptInputError
	return errors.As(err, &ce) || strings.Contains(err.Error(), "quotedprintable")
}

func (sess *session) binarySize(m *fetchMsg, path []int) (int64, error) {
	off, n, enc, ok := binaryPart(m, path)
	if !ok {
		return 0, nil
	}
	switch strings.ToLower(enc) {
	case "", "7bit", "8bit", "binary":
		return n, nil
	}
	return sess.decodedSize(m, off, n, enc)
}

func (sess *session) writeBinarySection(rw *imapserver.FetchResponseWriter, m *fetchMsg, bs *imap.FetchItemBinarySection) error {
	off, n, enc, ok := binaryPart(m, bs.Part)
	if !ok {
		return closeLiteral(rw.WriteBinarySection(bs, 0))
	}
	size, err := sess.binarySize(m, bs.Part)
	if err != nil {
		return err
	}
	po, pn := partial(bs.Partial, size)
	lw := rw.WriteBinarySection(bs, pn)
	if pn > 0 {
		rc, err := sess.openRange(m, off, n)
		if err != nil {
			return err
		}
		d := decoder(enc, rc)
		if _, err := io.CopyN(io.Discard, d, po); err != nil {
			rc.Close()
			return fmt.Errorf("fetch message %d: %w", m.ID, err)
		}
		_, err = io.CopyN(lw, d, pn)
		rc.Close()
		if err != nil {
			return fmt.Errorf("fetch message %d: %w", m.ID, err)
		}
	}
	return lw.Close()
}

// envelope converts the stored envelope. Addresses keep their decoded
// display names (the library Q-encodes non-ASCII text on the wire); a
// local part without domain gets Dovecot's placeholder, since IMAP uses a
// NIL host only to mark groups.
func envelope(e *store.Envelope) *imap.Envelope {
	return &imap.Envelope{
		Date:      e.Date,
		Subject:   e.Subject,
		From:      addresses(e.From),
		Sender:    addresses(e.Sender),
		ReplyTo:   addresses(e.ReplyTo),
		To:        addresses(e.To),
		Cc:        addresses(e.Cc),
		Bcc:       addresses(e.Bcc),
		InReplyTo: e.InReplyTo,
		MessageID: e.MessageID,
	}
}

func addresses(in []store.Address) []imap.Address {
	if len(in) == 0 {
		return nil
	}
	out := make([]imap.Address, 0, len(in))
	for _, a := range in {
		if a.Mailbox == "" && a.Host == "" {
			continue
		}
		host := a.Host
		if host == "" {
			host = "MISSING_DOMAIN"
		}
		mailbox := a.Mailbox
		if mailbox == "" {
			mailbox = "MISSING_MAILBOX"
		}
		out = append(out, imap.Address{Name: a.Name, Mailbox: mailbox, Host: host})
	}
	return out
}

// bodyStructure converts the stored MIME structure, always extended
// (the library writes BODY from it by dropping the extension data).
func bodyStructure(p *store.Part) imap.BodyStructure {
	var disp *imap.BodyStructureDisposition
	if p.Disposition != "" {
		disp = &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
	}
	if len(p.Parts) > 0 {
		children := make([]imap.BodyStructure, len(p.Parts))
		for i := range p.Parts {
			children[i] = bodyStructure(&p.Parts[i])
		}
		return &imap.BodyStructureMultiPart{
			Children: children,
			Subtype:  p.Subtype,
			Extended: &imap.BodyStructureMultiPartExt{
				Params:      p.Params,
				Disposition: disp,
				Language:    p.Language,
				Location:    p.Location,
			},
		}
	}
	typ, sub := p.Type, p.Subtype
	if typ == "" {
		typ, sub = "text", "plain"
	}
	sp := &imap.BodyStructureSinglePart{
		Type:        typ,
		Subtype:     sub,
		Params:      p.Params,
		ID:          p.ID,
		Description: p.Description,
		Encoding:    p.Encoding,
		Size:        uint32(min(max(p.Size, 0), 1<<32-1)),
		Extended: &imap.BodyStructureSinglePartExt{
			Disposition: disp,
			Language:    p.Language,
			Location:    p.Location,
		},
	}
	switch {
	case p.Message != nil:
		sp.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      envelope(&p.Message.Envelope),
			BodyStructure: bodyStructure(&p.Message.Structure),
			NumLines:      p.Lines,
		}
	case typ == "text":
		sp.Text = &imap.BodyStructureText{NumLines: p.Lines}
	}
	return sp
}
