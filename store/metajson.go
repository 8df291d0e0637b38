package store

import (
	"bytes"
	"encoding/json"
	"errors"
)

// decodeEnvelope decodes an Envelope from the JSON that json.Marshal
// writes for it (the meta table's envelope column). FETCH ENVELOPE of a
// whole mailbox decodes one per message, and encoding/json's reflection
// was a third of that command's time; this reads the known shape
// directly and hands anything else (escapes aside, which it takes) to
// encoding/json, so the result is always what json.Unmarshal gives.
func decodeEnvelope(b []byte, e *Envelope) error {
	d := jsonReader{b: b}
	if d.envelope(e) && d.end() {
		return nil
	}
	*e = Envelope{}
	return json.Unmarshal(b, e)
}

// jsonReader reads JSON values of known shape. Each method reports false
// when the input is not that shape; the caller then falls back.
type jsonReader struct {
	b []byte
	i int
}

var errNotString = errors.New("not a JSON string")

func (d *jsonReader) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space (0 at the end).
func (d *jsonReader) peek() byte {
	d.ws()
	if d.i >= len(d.b) {
		return 0
	}
	return d.b[d.i]
}

func (d *jsonReader) eat(c byte) bool {
	if d.peek() != c {
		return false
	}
	d.i++
	return true
}

func (d *jsonReader) null() bool {
	d.ws()
	if bytes.HasPrefix(d.b[d.i:], []byte("null")) {
		d.i += 4
		return true
	}
	return false
}

func (d *jsonReader) end() bool {
	d.ws()
	return d.i == len(d.b)
}

// token returns the next string token, quotes included, and whether it
// has escapes.
func (d *jsonReader) token() ([]byte, bool, error) {
	if d.peek() != '"' {
		return nil, false, errNotString
	}
	start := d.i
	// Fast path: the closing quote is the next quote, with no escape
	// before it.
	if k := bytes.IndexByte(d.b[start+1:], '"'); k >= 0 {
		seg := d.b[start+1 : start+1+k]
		if bytes.IndexByte(seg, '\\') < 0 {
			for _, c := range seg {
				if c < 0x20 {
					return nil, false, errNotString
				}
			}
			d.i = start + k + 2
			return d.b[start:d.i], false, nil
		}
	}
	escaped := false
	for j := start + 1; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '\\':
			escaped = true
			j++
		case c == '"':
			d.i = j + 1
			return d.b[start:d.i], escaped, nil
		case c < 0x20:
			return nil, false, errNotString
		}
	}
	return nil, false, errNotString
}

// str reads a string (or null, as json.Unmarshal leaves a string alone
// on null: the zero value here).
func (d *jsonReader) str(s *string) bool {
	if d.null() {
		return true
	}
	tok, escaped, err := d.token()
	if err != nil {
		return false
	}
	if !escaped {
		*s = string(tok[1 : len(tok)-1])
		return true
	}
	return json.Unmarshal(tok, s) == nil
}

// next steps through the members of an object or the elements of an
// array whose opening bracket was read: it reads the separator before
// every member but the first (first says which) and reports whether
// another one follows; ok is false on bad syntax.
func (d *jsonReader) next(first bool, closing byte) (more, ok bool) {
	if d.eat(closing) {
		return false, true
	}
	if !first && !d.eat(',') {
		return false, false
	}
	return true, true
}

// key reads a member name and its colon. Names with escapes are left to
// the fallback.
func (d *jsonReader) key() ([]byte, bool) {
	tok, escaped, err := d.token()
	if err != nil || escaped || !d.eat(':') {
		return nil, false
	}
	return tok[1 : len(tok)-1], true
}

func (d *jsonReader) strings(out *[]string) bool {
	if d.null() {
		*out = nil // as json.Unmarshal sets a slice on null
		return true
	}
	if !d.eat('[') {
		return false
	}
	*out = []string{}
	for first := true; ; first = false {
		more, ok := d.next(first, ']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
		var s string
		if !d.str(&s) {
			return false
		}
		*out = append(*out, s)
	}
}

func (d *jsonReader) addresses(out *[]Address) bool {
	if d.null() {
		*out = nil
		return true
	}
	if !d.eat('[') {
		return false
	}
	*out = []Address{}
	for first := true; ; first = false {
		more, ok := d.next(first, ']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
		var a Address
		if !d.address(&a) {
			return false
		}
		*out = append(*out, a)
	}
}

func (d *jsonReader) address(a *Address) bool {
	if !d.eat('{') {
		return false
	}
	for first := true; ; first = false {
		more, ok := d.next(first, '}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
		key, ok := d.key()
		if !ok {
			return false
		}
		switch string(key) {
		case "Name":
			ok = d.str(&a.Name)
		case "Mailbox":
			ok = d.str(&a.Mailbox)
		case "Host":
			ok = d.str(&a.Host)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (d *jsonReader) envelope(e *Envelope) bool {
	if !d.eat('{') {
		return false
	}
	for first := true; ; first = false {
		more, ok := d.next(first, '}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
		key, ok := d.key()
		if !ok {
			return false
		}
		switch string(key) {
		case "Date":
			if !d.null() {
				tok, _, err := d.token()
				ok = err == nil && e.Date.UnmarshalJSON(tok) == nil
			}
		case "Subject":
			ok = d.str(&e.Subject)
		case "From":
			ok = d.addresses(&e.From)
		case "Sender":
			ok = d.addresses(&e.Sender)
		case "ReplyTo":
			ok = d.addresses(&e.ReplyTo)
		case "To":
			ok = d.addresses(&e.To)
		case "Cc":
			ok = d.addresses(&e.Cc)
		case "Bcc":
			ok = d.addresses(&e.Bcc)
		case "InReplyTo":
			ok = d.strings(&e.InReplyTo)
		case "MessageID":
			ok = d.str(&e.MessageID)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}
