package store

import "time"

// Meta is what listing a mailbox and IMAP FETCH need of a message, parsed
// once when the bytes are first stored (see parseMessage) and kept as JSON
// beside the blob, so nothing re-parses a message to list it.
type Meta struct {
	Envelope  Envelope
	Structure Part
	// Lines is the number of lines of the whole message.
	Lines int64
	// Attachments counts parts with Content-Disposition: attachment (or
	// a file name).
	Attachments int
}

// Envelope is the RFC 5322 header summary (IMAP ENVELOPE, RFC 9051 §7.5.2).
// Strings are decoded (RFC 2047) UTF-8.
type Envelope struct {
	Date      time.Time // zero if missing or unparsable
	Subject   string
	From      []Address
	Sender    []Address
	ReplyTo   []Address
	To        []Address
	Cc        []Address
	Bcc       []Address
	InReplyTo []string // message IDs without angle brackets
	MessageID string   // without angle brackets
}

// Address is one mailbox of an address list. Group syntax is flattened to
// its members.
type Address struct {
	Name    string // display name, decoded
	Mailbox string // local part
	Host    string // domain
}

// Part is one MIME part (IMAP BODYSTRUCTURE, RFC 9051 §7.5.2). Offsets
// index the raw message bytes exactly as stored, so a FETCH of
// BODY[1.2.MIME] or BODY[2.TEXT] is a byte range of the blob.
type Part struct {
	Type        string            // lower-case, e.g. "text"
	Subtype     string            // lower-case, e.g. "plain"
	Params      map[string]string // Content-Type parameters, keys lower-case, values decoded (RFC 2231)
	ID          string            // Content-ID
	Description string            // Content-Description, decoded
	Encoding    string            // Content-Transfer-Encoding, lower-case; "7bit" if absent
	// Disposition is "inline", "attachment" or "" if absent;
	// DispositionParams its parameters (keys lower-case).
	Disposition       string
	DispositionParams map[string]string
	Language          []string
	Location          string
	MD5               string

	// HeaderStart is the offset of the part's header; BodyStart of its
	// body (after the blank line); End is one past the last body byte.
	// For the top-level part HeaderStart is 0 and End the message size.
	HeaderStart, BodyStart, End int64
	// Size is End-BodyStart in bytes; Lines counts the body's lines (text
	// parts and message/rfc822).
	Size  int64
	Lines int64

	// Parts are the children of a multipart.
	Parts []Part
	// Message is set for message/rfc822 (and message/global): the
	// encapsulated message's envelope and structure.
	Message *Meta
}
