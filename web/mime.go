package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/htmlindex"

	"mailbox/store"
)

// Limits on what is decoded for display.
const (
	// maxDisplayBytes caps the decoded text or HTML body shown in the frame.
	maxDisplayBytes = 4 << 20
	// maxInlineImageBytes caps all cid: images of one message embedded as
	// data: URLs.
	maxInlineImageBytes = 16 << 20
)

// attachment is a part offered for download.
type attachment struct {
	Path string // IMAP part number, "1.2"
	Name string
	Type string
	Size int64 // encoded size in the message
}

// layout is how a message is shown: which part is the body, which parts
// are images it refers to by Content-ID, and what can be downloaded.
type layout struct {
	HTML, Text  *store.Part
	Inline      map[string]*store.Part // Content-ID without <>
	Attachments []attachment
}

func planMessage(root *store.Part) *layout {
	l := &layout{Inline: map[string]*store.Part{}}
	if root.Type != "multipart" {
		l.leaf(root, "1")
		return l
	}
	l.walk(root, "")
	return l
}

func childPath(parent string, i int) string {
	if parent == "" {
		return strconv.Itoa(i + 1)
	}
	return parent + "." + strconv.Itoa(i+1)
}

func hasHTML(p *store.Part) bool {
	if p.Type == "text" && p.Subtype == "html" {
		return true
	}
	for i := range p.Parts {
		if hasHTML(&p.Parts[i]) {
			return true
		}
	}
	return false
}

func (l *layout) walk(p *store.Part, path string) {
	if p.Type != "multipart" {
		l.leaf(p, path)
		return
	}
	switch p.Subtype {
	case "alternative":
		// RFC 2046 §5.1.4: the last part the reader understands is the
		// best; prefer one with HTML, else the last plain text.
		best := -1
		for i := range p.Parts {
			c := &p.Parts[i]
			if hasHTML(c) || best < 0 || (c.Type == "text" && c.Subtype == "plain") {
				if best >= 0 && hasHTML(&p.Parts[best]) && !hasHTML(c) {
					continue
				}
				best = i
			}
		}
		if best >= 0 {
			// Keep the plain alternative too, as the fallback body.
			for i := range p.Parts {
				c := &p.Parts[i]
				if i != best && c.Type == "text" && c.Subtype == "plain" && l.Text == nil && c.Disposition != "attachment" {
					l.Text = c
				}
			}
			l.walk(&p.Parts[best], childPath(path, best))
		}
	case "related":
		// RFC 2387: the first part is the root; the others are resources it
		// refers to.
		for i := range p.Parts {
			c := &p.Parts[i]
			if i == 0 {
				l.walk(c, childPath(path, i))
				continue
			}
			if c.ID != "" && c.Type == "image" {
				l.Inline[strings.Trim(c.ID, "<> ")] = c
				continue
			}
			l.walk(c, childPath(path, i))
		}
	default:
		for i := range p.Parts {
			l.walk(&p.Parts[i], childPath(path, i))
		}
	}
}

func (l *layout) leaf(p *store.Part, path string) {
	name := fileName(p)
	isAttachment := p.Disposition == "attachment" || (name != "" && p.Type != "text")
	if !isAttachment && p.Type == "text" {
		if p.Subtype == "html" && l.HTML == nil {
			l.HTML = p
			return
		}
		if p.Subtype == "plain" && l.Text == nil {
			l.Text = p
			return
		}
	}
	if p.ID != "" && p.Type == "image" {
		l.Inline[strings.Trim(p.ID, "<> ")] = p
	}
	if name == "" {
		switch {
		case p.Type == "message" && (p.Subtype == "rfc822" || p.Subtype == "global"):
			name = "message.eml"
		default:
			ext := ".bin"
			if exts, _ := mime.ExtensionsByType(p.Type + "/" + p.Subtype); len(exts) > 0 {
				ext = exts[0]
			}
			name = "part-" + path + ext
		}
	}
	l.Attachments = append(l.Attachments, attachment{Path: path, Name: name, Type: p.Type + "/" + p.Subtype, Size: p.Size})
}

// fileName is a part's file name from Content-Disposition or Content-Type
// (already RFC 2231/2047-decoded by the store), made safe to offer as a
// download name: no directories, no control characters, bounded length.
func fileName(p *store.Part) string {
	name := p.DispositionParams["filename"]
	if name == "" {
		name = p.Params["name"]
	}
	return safeFileName(name)
}

func safeFileName(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	name = path.Base(name)
	if name == "." || name == "/" || name == ".." {
		return ""
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' || r == utf8.RuneError || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return -1
		}
		return r
	}, name)
	name = strings.TrimLeft(strings.TrimSpace(name), ".")
	if len(name) > 200 {
		ext := path.Ext(name)
		if len(ext) > 20 {
			ext = ""
		}
		name = strings.ToValidUTF8(name[:200-len(ext)], "") + ext
	}
	return name
}

// findPart returns the part with an IMAP part number ("1", "2.1").
func findPart(root *store.Part, num string) (*store.Part, bool) {
	if num == "" {
		return nil, false
	}
	p := root
	for i, s := range strings.Split(num, ".") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, false
		}
		if p.Type != "multipart" {
			// A single-part message (or the end of the path) has only part 1.
			if i == 0 && n == 1 && !strings.Contains(num, ".") {
				return p, true
			}
			return nil, false
		}
		if n > len(p.Parts) {
			return nil, false
		}
		p = &p.Parts[n-1]
	}
	return p, true
}

// partBytes reads a part's body and undoes its transfer encoding, reading
// at most limit decoded bytes (limit < 0: all).
func partBytes(ctx context.Context, acct *store.Account, msgID int64, p *store.Part, limit int64) ([]byte, error) {
	rc, err := acct.OpenRange(ctx, msgID, p.BodyStart, p.End-p.BodyStart)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var r io.Reader = rc
	switch p.Encoding {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &base64Cleaner{r: rc})
	case "quoted-printable":
		r = quotedprintable.NewReader(rc)
	}
	if limit >= 0 {
		r = io.LimitReader(r, limit)
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(r)
	if err != nil && buf.Len() == 0 && p.Encoding == "7bit" {
		return nil, fmt.Errorf("read part: %w", err)
	}
	// A damaged encoding keeps what decoded before the damage, as mail
	// readers do.
	return buf.Bytes(), nil
}

// base64Cleaner drops everything that is not base64 alphabet (line ends,
// spaces, junk after the padding) so the decoder sees one clean run.
type base64Cleaner struct {
	r    io.Reader
	done bool
}

func (c *base64Cleaner) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	for {
		n, err := c.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			switch {
			case b >= 'A' && b <= 'Z', b >= 'a' && b <= 'z', b >= '0' && b <= '9', b == '+', b == '/':
				p[j] = b
				j++
			case b == '=':
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			if err == io.EOF {
				c.done = true
				if j > 0 {
					return j, nil
				}
			}
			return j, err
		}
	}
}

// decodeText turns a text part's bytes into valid UTF-8 from its charset
// (HTML Living Standard names and aliases; unknown ones as UTF-8).
func decodeText(b []byte, charset string) string {
	cs := strings.ToLower(strings.TrimSpace(charset))
	if cs != "" && cs != "utf-8" && cs != "us-ascii" && cs != "utf8" {
		if enc, err := htmlindex.Get(cs); err == nil {
			if out, err := enc.NewDecoder().Bytes(b); err == nil {
				b = out
			}
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
