package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/microcosm-cc/bluemonday"

	"mailbox/store"
)

// Limits of the compose form.
const (
	// maxQuoteBytes caps the original text quoted in a reply or forward.
	maxQuoteBytes = 256 << 10
	// maxContacts is how many addresses the compose page offers for
	// completion without script; the script asks /contacts as you type.
	maxContacts = 200
	// maxContactsJSON is the number of suggestions /contacts returns.
	maxContactsJSON = 10
	// maxRecipients bounds To, Cc and Bcc together.
	maxRecipients = 100
)

// keptPart is an attachment of an existing message (the original of a
// forward, or the draft being edited) offered for the new message.
type keptPart struct {
	Ref     string // "box/uid/part"
	Name    string
	Size    int64
	Checked bool
}

type composeData struct {
	To, Cc, Bcc, Subject, Body string
	InReplyTo, References      string // message IDs, space-separated, without <>
	Reply                      string // "box/uid" of the message answered
	Draft                      string // "box/uid" of the draft being edited
	Keep                       []keptPart
	Contacts                   []store.Contact
}

func parseRef(ref string) (box int64, uid uint32, rest string, ok bool) {
	parts := strings.SplitN(ref, "/", 3)
	if len(parts) < 2 {
		return 0, 0, "", false
	}
	b, err1 := strconv.ParseInt(parts[0], 10, 64)
	u, err2 := strconv.ParseUint(parts[1], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, "", false
	}
	if len(parts) == 3 {
		rest = parts[2]
	}
	return b, uint32(u), rest, true
}

// loadRef loads a message of this account by "box/uid".
func (srv *Server) loadRef(r *http.Request, rc *reqCtx, box int64, uid uint32) (*loaded, error) {
	ctx := r.Context()
	l := &loaded{}
	var err error
	if l.Box, err = rc.acct.MailboxByID(ctx, box); err != nil {
		return nil, err
	}
	if l.Msg, err = rc.acct.Message(ctx, box, uid); err != nil {
		return nil, err
	}
	if l.Meta, err = rc.acct.Meta(ctx, l.Msg.ID); err != nil {
		return nil, err
	}
	l.Layout = planMessage(&l.Meta.Structure)
	return l, nil
}

// plainText is the text of a message for quoting: its text part, or its
// HTML reduced to text.
func (srv *Server) plainText(r *http.Request, rc *reqCtx, l *loaded) (string, error) {
	if p := l.Layout.Text; p != nil {
		b, err := partBytes(r.Context(), rc.acct, l.Msg.ID, p, maxQuoteBytes)
		if err != nil {
			return "", err
		}
		return decodeText(b, p.Params["charset"]), nil
	}
	if p := l.Layout.HTML; p != nil {
		b, err := partBytes(r.Context(), rc.acct, l.Msg.ID, p, maxQuoteBytes)
		if err != nil {
			return "", err
		}
		s := decodeText(b, p.Params["charset"])
		for _, tag := range []string{"<br", "<p", "<div", "<tr", "<li", "<h"} {
			s = strings.ReplaceAll(s, tag, "\n"+tag)
		}
		s = html.UnescapeString(bluemonday.StrictPolicy().Sanitize(s))
		var lines []string
		for _, ln := range strings.Split(s, "\n") {
			if ln = strings.TrimSpace(ln); ln != "" || (len(lines) > 0 && lines[len(lines)-1] != "") {
				lines = append(lines, ln)
			}
		}
		return strings.Join(lines, "\n"), nil
	}
	return "", nil
}

func addrString(list []store.Address) string {
	var parts []string
	for _, a := range list {
		ma := mail.Address{Name: a.Name, Address: a.Mailbox + "@" + a.Host}
		parts = append(parts, ma.String())
	}
	return strings.Join(parts, ", ")
}

func quote(s string) string {
	var b strings.Builder
	for _, ln := range strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), "\n") {
		if strings.HasPrefix(ln, ">") {
			b.WriteString(">" + ln + "\n")
		} else {
			b.WriteString("> " + ln + "\n")
		}
	}
	return b.String()
}

func prefixed(subject, prefix string) string {
	if strings.HasPrefix(strings.ToLower(subject), strings.ToLower(prefix)) {
		return subject
	}
	return prefix + " " + subject
}

func (srv *Server) composePage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	q := r.URL.Query()
	d := &composeData{To: q.Get("to")}
	mode := q.Get("mode")
	if mode != "" {
		box, uid, _, ok := parseRef(q.Get("ref"))
		if !ok {
			srv.notFound(w, r)
			return
		}
		l, err := srv.loadRef(r, rc, box, uid)
		if err != nil {
			srv.fail(w, r, err)
			return
		}
		text, err := srv.plainText(r, rc, l)
		if err != nil {
			srv.fail(w, r, err)
			return
		}
		env := l.Meta.Envelope
		ref := fmt.Sprintf("%d/%d", box, uid)
		switch mode {
		case "reply", "all":
			d.Reply = ref
			d.Subject = prefixed(env.Subject, "Re:")
			to := env.ReplyTo
			if len(to) == 0 {
				to = env.From
			}
			d.To = addrString(to)
			if mode == "all" {
				var cc []store.Address
				for _, a := range slices.Concat(env.To, env.Cc) {
					e := strings.ToLower(a.Mailbox + "@" + a.Host)
					if e == rc.acct.Address || slices.ContainsFunc(to, func(t store.Address) bool {
						return strings.EqualFold(t.Mailbox+"@"+t.Host, e)
					}) {
						continue
					}
					cc = append(cc, a)
				}
				d.Cc = addrString(cc)
			}
			if env.MessageID != "" {
				d.InReplyTo = env.MessageID
				d.References = strings.TrimSpace(strings.Join(env.InReplyTo, " ") + " " + env.MessageID)
			}
			who := addrString(env.From)
			d.Body = "\n\nOn " + env.Date.Format("Mon, 2 Jan 2006 at 15:04") + ", " + who + " wrote:\n" + quote(text)
		case "forward":
			d.Subject = prefixed(env.Subject, "Fwd:")
			d.Body = "\n\n---------- Forwarded message ----------\nFrom: " + addrString(env.From) +
				"\nDate: " + env.Date.Format(time.RFC1123Z) + "\nSubject: " + env.Subject +
				"\nTo: " + addrString(env.To) + "\n\n" + text
			for _, a := range l.Layout.Attachments {
				d.Keep = append(d.Keep, keptPart{Ref: ref + "/" + a.Path, Name: a.Name, Size: a.Size, Checked: true})
			}
		case "draft":
			d.Draft = ref
			d.To, d.Cc, d.Bcc, d.Subject = addrString(env.To), addrString(env.Cc), addrString(env.Bcc), env.Subject
			d.Body = text
			if len(env.InReplyTo) > 0 {
				d.InReplyTo = strings.Join(env.InReplyTo, " ")
				d.References = d.InReplyTo
			}
			for _, a := range l.Layout.Attachments {
				d.Keep = append(d.Keep, keptPart{Ref: ref + "/" + a.Path, Name: a.Name, Size: a.Size, Checked: true})
			}
		default:
			srv.notFound(w, r)
			return
		}
	}
	srv.renderCompose(w, r, rc, http.StatusOK, d, "")
}

func (srv *Server) renderCompose(w http.ResponseWriter, r *http.Request, rc *reqCtx, code int, d *composeData, msg string) {
	var err error
	if d.Contacts, err = rc.acct.Contacts(r.Context(), "", maxContacts); err != nil {
		srv.fail(w, r, err)
		return
	}
	v, err := srv.page(r, rc, "Write", 0, d)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	v.Error = msg
	srv.render(w, r, code, "compose", v)
}

// contacts answers the completion script: up to ten past correspondents
// matching the typed prefix.
func (srv *Server) contacts(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	cs, err := rc.acct.Contacts(r.Context(), strings.TrimSpace(r.URL.Query().Get("q")), maxContactsJSON)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, (&mail.Address{Name: c.Name, Address: c.Address}).String())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// errUser is a problem with the form, shown to the user as it is.
type errUser string

func (e errUser) Error() string { return string(e) }

func parseAddresses(field, s string) ([]*mail.Address, error) {
	s = strings.TrimSpace(strings.Trim(strings.TrimSpace(s), ","))
	if s == "" {
		return nil, nil
	}
	list, err := mail.ParseAddressList(s)
	if err != nil {
		return nil, errUser(fmt.Sprintf("The %s field has an address that is not valid.", field))
	}
	for _, a := range list {
		if _, err := store.NormalizeAddress(a.Address); err != nil {
			return nil, errUser(fmt.Sprintf("The %s field has an address that is not valid.", field))
		}
	}
	return list, nil
}

// attachmentIn is one attachment of the message being built.
type attachmentIn struct {
	name, typ string
	data      []byte
}

// compose handles the compose form: send, or save as a draft.
func (srv *Server) compose(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	ctx := r.Context()
	f := r.PostForm
	d := &composeData{To: f.Get("to"), Cc: f.Get("cc"), Bcc: f.Get("bcc"), Subject: f.Get("subject"),
		Body: f.Get("body"), InReplyTo: f.Get("in_reply_to"), References: f.Get("references"),
		Reply: f.Get("reply"), Draft: f.Get("draft")}
	saveDraft := f.Get("action") == "save"
	fail := func(err error) {
		var ue errUser
		if errors.As(err, &ue) {
			srv.renderCompose(w, r, rc, http.StatusBadRequest, d, string(ue)+" Attached files must be added again.")
			return
		}
		srv.fail(w, r, err)
	}
	// Parts kept from the original or the previous draft version.
	var atts []attachmentIn
	for _, ref := range f["keep"] {
		box, uid, path, ok := parseRef(ref)
		if !ok {
			continue
		}
		l, err := srv.loadRef(r, rc, box, uid)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			fail(err)
			return
		}
		p, ok := findPart(&l.Meta.Structure, path)
		if !ok || p.Type == "multipart" {
			continue
		}
		b, err := partBytes(ctx, rc.acct, l.Msg.ID, p, srv.opts.MaxMessageBytes)
		if err != nil {
			fail(err)
			return
		}
		name := fileName(p)
		if name == "" {
			name = "attachment"
		}
		atts = append(atts, attachmentIn{name: name, typ: p.Type + "/" + p.Subtype, data: b})
		d.Keep = append(d.Keep, keptPart{Ref: ref, Name: name, Size: int64(len(b)), Checked: true})
	}
	if r.MultipartForm != nil {
		for _, fh := range r.MultipartForm.File["attach"] {
			if fh.Size == 0 && fh.Filename == "" {
				continue
			}
			b, err := readUpload(fh)
			if err != nil {
				fail(err)
				return
			}
			typ := fh.Header.Get("Content-Type")
			if !validMediaType(strings.SplitN(typ, ";", 2)[0]) {
				typ = "application/octet-stream"
			}
			name := safeFileName(fh.Filename)
			if name == "" {
				name = "attachment"
			}
			atts = append(atts, attachmentIn{name: name, typ: strings.SplitN(typ, ";", 2)[0], data: b})
		}
	}
	to, err := parseAddresses("To", d.To)
	if err != nil {
		fail(err)
		return
	}
	cc, err := parseAddresses("Cc", d.Cc)
	if err != nil {
		fail(err)
		return
	}
	bcc, err := parseAddresses("Bcc", d.Bcc)
	if err != nil {
		fail(err)
		return
	}
	all := slices.Concat(to, cc, bcc)
	if !saveDraft && len(all) == 0 {
		fail(errUser("Add at least one recipient."))
		return
	}
	if len(all) > maxRecipients {
		fail(errUser(fmt.Sprintf("A message can have at most %d recipients.", maxRecipients)))
		return
	}
	msg := outgoing{from: rc.acct.Address, to: to, cc: cc, bcc: bcc, subject: d.Subject, body: d.Body,
		inReplyTo: strings.Fields(d.InReplyTo), references: strings.Fields(d.References), atts: atts}
	withBcc, err := msg.build(srv.opts.Hostname, true)
	if err != nil {
		fail(err)
		return
	}
	if int64(len(withBcc)) > srv.opts.MaxMessageBytes {
		fail(errUser(fmt.Sprintf("The message is too big (%s); the limit is %s.", humanSize(int64(len(withBcc))), humanSize(srv.opts.MaxMessageBytes))))
		return
	}
	if saveDraft {
		drafts, err := rc.acct.MailboxByRole(ctx, store.RoleDrafts)
		if err != nil {
			fail(err)
			return
		}
		res, err := rc.acct.Append(ctx, drafts.ID, withBcc, []string{store.FlagDraft, store.FlagSeen}, time.Time{})
		if err != nil {
			fail(submitError(err))
			return
		}
		srv.dropDraft(r, rc, d.Draft)
		http.Redirect(w, r, withNotice(fmt.Sprintf("/msg/%d/%d", drafts.ID, res.UID), "saved"), http.StatusSeeOther)
		return
	}
	noBcc, err := msg.withMessageID(withBcc).build(srv.opts.Hostname, false)
	if err != nil {
		fail(err)
		return
	}
	var rcpts []string
	for _, a := range all {
		rcpts = append(rcpts, a.Address)
	}
	res, err := rc.acct.Submit(ctx, store.Submission{Recipients: rcpts, Data: noBcc, SentCopy: withBcc})
	if err != nil {
		fail(submitError(err))
		return
	}
	srv.stats.sent.Add(1)
	srv.log.Info("sent", "user", rc.acct.Address, "rcpts", len(rcpts), "size", len(noBcc), "local", len(res.Delivered), "queued", len(res.Queued))
	srv.dropDraft(r, rc, d.Draft)
	if box, uid, _, ok := parseRef(d.Reply); ok {
		if _, err := rc.acct.SetFlags(ctx, box, []uint32{uid}, store.FlagsAdd, []string{store.FlagAnswered}); err != nil && !errors.Is(err, store.ErrNotFound) {
			srv.log.Warn("mark answered", "user", rc.acct.Address, "err", err)
		}
	}
	notice := "sent"
	if len(res.Queued) > 0 {
		notice = "queued"
	}
	http.Redirect(w, r, withNotice("/", notice), http.StatusSeeOther)
}

// dropDraft removes the previous version of a draft once the new one (or
// the sent message) is stored.
func (srv *Server) dropDraft(r *http.Request, rc *reqCtx, ref string) {
	box, uid, _, ok := parseRef(ref)
	if !ok {
		return
	}
	mb, err := rc.acct.MailboxByID(r.Context(), box)
	if err != nil || mb.Role != store.RoleDrafts {
		return
	}
	if _, err := rc.acct.Expunge(r.Context(), box, []uint32{uid}); err != nil {
		srv.log.Warn("remove old draft", "user", rc.acct.Address, "err", err)
	}
}

// submitError turns a store refusal into words for the user.
func submitError(err error) error {
	var re *store.RecipientError
	if errors.As(err, &re) {
		switch {
		case errors.Is(err, store.ErrNotFound):
			return errUser("There is no mailbox " + re.Address + " on this server. Nothing was sent.")
		case errors.Is(err, store.ErrOverQuota):
			return errUser("The mailbox of " + re.Address + " is full. Nothing was sent.")
		default:
			return errUser(re.Address + " is not a valid address. Nothing was sent.")
		}
	}
	if errors.Is(err, store.ErrOverQuota) {
		return errUser("Your mailbox is full; delete some mail and try again.")
	}
	if errors.Is(err, store.ErrLimit) {
		return errUser("You have reached a sending limit (messages per hour or day, or recipients per message). Nothing was sent; try again later.")
	}
	return err
}

func readUpload(fh *multipart.FileHeader) ([]byte, error) {
	f, err := fh.Open()
	if err != nil {
		return nil, fmt.Errorf("open upload: %w", err)
	}
	defer f.Close()
	return io.ReadAll(f)
}

// outgoing is a message written in the webmail.
type outgoing struct {
	from                  string
	to, cc, bcc           []*mail.Address
	subject, body         string
	inReplyTo, references []string
	atts                  []attachmentIn
	messageID             string
	date                  time.Time
}

// withMessageID returns a copy that reuses the Message-ID and Date of a
// message built before, so the Sent copy and the delivered copy are the
// same message.
func (m outgoing) withMessageID(built []byte) outgoing {
	h, err := mail.CreateReader(bytes.NewReader(built))
	if err == nil {
		m.messageID, _ = h.Header.MessageID()
		m.date, _ = h.Header.Date()
	}
	return m
}

// build writes the message: text/plain in UTF-8 (quoted-printable), and
// the attachments base64-encoded in multipart/mixed. withBcc keeps the Bcc
// header (Sent copy and drafts only).
func (m outgoing) build(hostname string, withBcc bool) ([]byte, error) {
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: m.from}})
	if len(m.to) > 0 {
		h.SetAddressList("To", m.to)
	}
	if len(m.cc) > 0 {
		h.SetAddressList("Cc", m.cc)
	}
	if withBcc && len(m.bcc) > 0 {
		h.SetAddressList("Bcc", m.bcc)
	}
	h.SetSubject(m.subject)
	if m.date.IsZero() {
		m.date = time.Now()
	}
	h.SetDate(m.date)
	if m.messageID != "" {
		h.SetMessageID(m.messageID)
	} else if err := h.GenerateMessageIDWithHostname(hostname); err != nil {
		return nil, fmt.Errorf("message id: %w", err)
	}
	if len(m.inReplyTo) > 0 {
		h.SetMsgIDList("In-Reply-To", m.inReplyTo)
	}
	if len(m.references) > 0 {
		h.SetMsgIDList("References", m.references)
	}
	body := strings.ReplaceAll(strings.ReplaceAll(m.body, "\r\n", "\n"), "\n", "\r\n")
	var buf bytes.Buffer
	textHeader := func() mail.InlineHeader {
		var th mail.InlineHeader
		th.Set("Content-Type", "text/plain; charset=utf-8")
		return th
	}
	if len(m.atts) == 0 {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		wc, err := mail.CreateSingleInlineWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("write message: %w", err)
		}
		io.WriteString(wc, body)
		if err := wc.Close(); err != nil {
			return nil, fmt.Errorf("write message: %w", err)
		}
		return buf.Bytes(), nil
	}
	mw, err := mail.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("write message: %w", err)
	}
	tw, err := mw.CreateSingleInline(textHeader())
	if err != nil {
		return nil, fmt.Errorf("write message: %w", err)
	}
	io.WriteString(tw, body)
	tw.Close()
	for _, a := range m.atts {
		var ah mail.AttachmentHeader
		ct := mime.FormatMediaType(a.typ, map[string]string{"name": a.name})
		if ct == "" {
			ct = mime.FormatMediaType("application/octet-stream", map[string]string{"name": a.name})
		}
		ah.Set("Content-Type", ct)
		ah.SetFilename(a.name)
		aw, err := mw.CreateAttachment(ah)
		if err != nil {
			return nil, fmt.Errorf("write attachment: %w", err)
		}
		aw.Write(a.data)
		if err := aw.Close(); err != nil {
			return nil, fmt.Errorf("write attachment: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("write message: %w", err)
	}
	return buf.Bytes(), nil
}
