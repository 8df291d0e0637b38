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

// object reads an object, calling field for each key; field reads the
// value and reports whether it could.
func (d *jsonReader) object(field func(key []byte) bool) bool {
	if !d.eat('{') {
		return false
	}
	if d.eat('}') {
		return true
	}
	for {
		tok, escaped, err := d.token()
		if err != nil || escaped || !d.eat(':') || !field(tok[1:len(tok)-1]) {
			return false
		}
		if d.eat('}') {
			return true
		}
		if !d.eat(',') {
			return false
		}
	}
}

// array reads an array, calling reset (nil for null, as json.Unmarshal
// sets a slice) and then elem for each element.
func (d *jsonReader) array(reset func(null bool), elem func() bool) bool {
	if d.null() {
		reset(true)
		return true
	}
	if !d.eat('[') {
		return false
	}
	reset(false)
	if d.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if d.eat(']') {
			return true
		}
		if !d.eat(',') {
			return false
		}
	}
}

func (d *jsonReader) strings(out *[]string) bool {
	return d.array(func(null bool) {
		if *out = []string{}; null {
			*out = nil
		}
	}, func() bool {
		var s string
		if !d.str(&s) {
			return false
		}
		*out = append(*out, s)
		return true
	})
}

func (d *jsonReader) addresses(out *[]Address) bool {
	return d.array(func(null bool) {
		if *out = []Address{}; null {
			*out = nil
		}
	}, func() bool {
		var a Address
		ok := d.object(func(key []byte) bool {
			switch string(key) {
			case "Name":
				return d.str(&a.Name)
			case "Mailbox":
				return d.str(&a.Mailbox)
			case "Host":
				return d.str(&a.Host)
			}
			return false
		})
		*out = append(*out, a)
		return ok
	})
}

func (d *jsonReader) envelope(e *Envelope) bool {
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "Date":
			if d.null() {
				return true
			}
			tok, _, err := d.token()
			return err == nil && e.Date.UnmarshalJSON(tok) == nil
		case "Subject":
			return d.str(&e.Subject)
		case "From":
			return d.addresses(&e.From)
		case "Sender":
			return d.addresses(&e.Sender)
		case "ReplyTo":
			return d.addresses(&e.ReplyTo)
		case "To":
			return d.addresses(&e.To)
		case "Cc":
			return d.addresses(&e.Cc)
		case "Bcc":
			return d.addresses(&e.Bcc)
		case "InReplyTo":
			return d.strings(&e.InReplyTo)
		case "MessageID":
			return d.str(&e.MessageID)
		}
		return false
	})
}
