package web

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"mailbox/store"
)

// inlineImageTypes are the image types a cid: reference may embed.
var inlineImageTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true, "image/bmp": true,
}

// frameCSP is the policy of the document inside the message frame: no
// script of any kind, no plugins, no forms, no navigation of our page;
// images only from the message itself (data:) until the user allows
// remote ones.
func frameCSP(remoteImages bool) string {
	img := "data:"
	if remoteImages {
		img = "data: https: http:"
	}
	return "default-src 'none'; img-src " + img + "; style-src 'unsafe-inline'; font-src 'none'; " +
		"form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
}

func (srv *Server) home(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	inbox, err := rc.acct.MailboxByRole(r.Context(), store.RoleInbox)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/box/%d", inbox.ID), http.StatusSeeOther)
}

// listData is the message list page.
type listData struct {
	Box      store.Mailbox
	Items    []store.ListItem
	Page     int
	Pages    int
	Total    int
	Prev     string
	Next     string
	Search   searchForm
	Searched bool
	Self     string          // this page's URL, to come back to after an action
	Targets  []store.Mailbox // move destinations
}

type searchForm struct {
	Q, From, To, Subject, After, Before string
}

func (f searchForm) empty() bool { return f == searchForm{} }

func (f searchForm) query() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"q": f.Q, "from": f.From, "to": f.To, "subject": f.Subject, "after": f.After, "before": f.Before} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// criteria turns the search form into store criteria; dates are days in
// the server's time zone.
func (f searchForm) criteria() (store.SearchCriteria, error) {
	var c store.SearchCriteria
	if f.Q != "" {
		c.Text = []string{f.Q}
	}
	for _, h := range []struct{ key, val string }{{"from", f.From}, {"to", f.To}, {"subject", f.Subject}} {
		if h.val != "" {
			c.Header = append(c.Header, store.HeaderMatch{Key: h.key, Value: h.val})
		}
	}
	var err error
	if f.After != "" {
		if c.Since, err = time.ParseInLocation("2006-01-02", f.After, time.Local); err != nil {
			return c, err
		}
	}
	if f.Before != "" {
		var d time.Time
		if d, err = time.ParseInLocation("2006-01-02", f.Before, time.Local); err != nil {
			return c, err
		}
		c.Before = d.AddDate(0, 0, 1) // "before" in the form includes that day
	}
	return c, nil
}

func boxID(r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("box"), 10, 64)
	return id, err == nil && id > 0
}

func (srv *Server) list(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	ctx := r.Context()
	id, ok := boxID(r)
	if !ok {
		srv.notFound(w, r)
		return
	}
	v, err := srv.page(r, rc, "", id, nil)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	i := slices.IndexFunc(v.Folders, func(mb store.Mailbox) bool { return mb.ID == id })
	if i < 0 {
		srv.notFound(w, r)
		return
	}
	q := r.URL.Query()
	d := &listData{Box: v.Folders[i], Page: 1}
	d.Search = searchForm{Q: strings.TrimSpace(q.Get("q")), From: strings.TrimSpace(q.Get("from")), To: strings.TrimSpace(q.Get("to")),
		Subject: strings.TrimSpace(q.Get("subject")), After: q.Get("after"), Before: q.Get("before")}
	if p, err := strconv.Atoi(q.Get("page")); err == nil && p > 1 {
		d.Page = p
	}
	size := srv.opts.PageSize
	offset := (d.Page - 1) * size
	if d.Search.empty() {
		d.Total = int(d.Box.Messages)
		if offset < d.Total {
			if d.Items, err = rc.acct.List(ctx, id, offset, size); err != nil {
				srv.fail(w, r, err)
				return
			}
		}
	} else {
		d.Searched = true
		crit, err := d.Search.criteria()
		if err != nil {
			v.Error = "Dates must look like 2026-01-31."
		} else {
			uids, err := rc.acct.Search(ctx, id, crit)
			if err != nil {
				srv.fail(w, r, err)
				return
			}
			slices.Reverse(uids) // newest first
			d.Total = len(uids)
			if offset < len(uids) {
				if d.Items, err = rc.acct.ListUIDs(ctx, id, uids[offset:min(len(uids), offset+size)]); err != nil {
					srv.fail(w, r, err)
					return
				}
			}
		}
	}
	d.Pages = max(1, (d.Total+size-1)/size)
	link := func(page int) string {
		qv := d.Search.query()
		if page > 1 {
			qv.Set("page", strconv.Itoa(page))
		}
		u := fmt.Sprintf("/box/%d", id)
		if len(qv) > 0 {
			u += "?" + qv.Encode()
		}
		return u
	}
	if d.Page > 1 {
		d.Prev = link(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.Next = link(d.Page + 1)
	}
	for _, mb := range v.Folders {
		if mb.ID != id {
			d.Targets = append(d.Targets, mb)
		}
	}
	d.Self = link(d.Page)
	v.Title = roleLabel(d.Box)
	if d.Box.Unseen > 0 {
		v.Title = fmt.Sprintf("%s (%d)", v.Title, d.Box.Unseen)
	}
	v.Query = d.Search.Q
	v.Data = d
	srv.render(w, r, http.StatusOK, "list", v)
}

// loaded is one message with what reading it needs.
type loaded struct {
	Box    store.Mailbox
	Msg    store.Message
	Meta   store.Meta
	Layout *layout
}

func (srv *Server) load(r *http.Request, rc *reqCtx) (*loaded, error) {
	id, ok := boxID(r)
	uid, err := strconv.ParseUint(r.PathValue("uid"), 10, 32)
	if !ok || err != nil {
		return nil, store.ErrNotFound
	}
	ctx := r.Context()
	l := &loaded{}
	if l.Box, err = rc.acct.MailboxByID(ctx, id); err != nil {
		return nil, err
	}
	if l.Msg, err = rc.acct.Message(ctx, id, uint32(uid)); err != nil {
		return nil, err
	}
	if l.Meta, err = rc.acct.Meta(ctx, l.Msg.ID); err != nil {
		return nil, err
	}
	l.Layout = planMessage(&l.Meta.Structure)
	return l, nil
}

type messageData struct {
	*loaded
	Frame        string // URL of the body frame
	RemoteImages int
	ImagesShown  bool
	Targets      []store.Mailbox
	Base         string // /msg/box/uid
	InTrash      bool
	IsDraft      bool
}

func (srv *Server) message(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	l, err := srv.load(r, rc)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	ctx := r.Context()
	if !slices.Contains(l.Msg.Flags, store.FlagSeen) {
		changed, err := rc.acct.SetFlags(ctx, l.Box.ID, []uint32{l.Msg.UID}, store.FlagsAdd, []string{store.FlagSeen})
		if err != nil {
			srv.fail(w, r, err)
			return
		}
		if len(changed) == 1 {
			l.Msg.Flags = changed[0].Flags
		}
	}
	d := &messageData{loaded: l, Base: fmt.Sprintf("/msg/%d/%d", l.Box.ID, l.Msg.UID)}
	d.ImagesShown = r.URL.Query().Get("images") == "1"
	d.InTrash = l.Box.Role == store.RoleTrash
	d.IsDraft = l.Box.Role == store.RoleDrafts || slices.Contains(l.Msg.Flags, store.FlagDraft)
	if l.Layout.HTML != nil {
		_, d.RemoteImages, err = srv.renderBody(r, rc, l, false)
		if err != nil {
			srv.fail(w, r, err)
			return
		}
	}
	d.Frame = d.Base + "/body"
	if d.ImagesShown {
		d.Frame += "?images=1"
	}
	v, err := srv.page(r, rc, l.Meta.Envelope.Subject, l.Box.ID, d)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	for _, mb := range v.Folders {
		if mb.ID != l.Box.ID {
			d.Targets = append(d.Targets, mb)
		}
	}
	if v.Title == "" {
		v.Title = "(no subject)"
	}
	srv.render(w, r, http.StatusOK, "message", v)
}

// renderBody produces the sanitized body of a message and counts its
// remote images.
func (srv *Server) renderBody(r *http.Request, rc *reqCtx, l *loaded, remote bool) (string, int, error) {
	ctx := r.Context()
	lay := l.Layout
	if lay.HTML == nil {
		if lay.Text == nil {
			return "<p><em>This message has no text.</em></p>", 0, nil
		}
		b, err := partBytes(ctx, rc.acct, l.Msg.ID, lay.Text, maxDisplayBytes)
		if err != nil {
			return "", 0, err
		}
		return textHTML(decodeText(b, lay.Text.Params["charset"])), 0, nil
	}
	b, err := partBytes(ctx, rc.acct, l.Msg.ID, lay.HTML, maxDisplayBytes)
	if err != nil {
		return "", 0, err
	}
	clean := srv.pol.Sanitize(decodeText(b, lay.HTML.Params["charset"]))
	budget := int64(maxInlineImageBytes)
	var readErr error
	out, n := rewriteImages(clean, remote, func(cid string) (string, bool) {
		cid, _ = url.PathUnescape(cid)
		p := lay.Inline[strings.Trim(cid, "<> ")]
		if p == nil {
			return "", false
		}
		typ := p.Type + "/" + p.Subtype
		if !inlineImageTypes[typ] || p.Size > budget {
			return "", false
		}
		img, err := partBytes(ctx, rc.acct, l.Msg.ID, p, budget)
		if err != nil {
			readErr = err
			return "", false
		}
		budget -= int64(len(img))
		return dataURL(typ, img), true
	})
	if readErr != nil {
		return "", 0, readErr
	}
	return out, n, nil
}

// body serves the message body into the sandboxed frame.
func (srv *Server) body(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	l, err := srv.load(r, rc)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	remote := r.URL.Query().Get("images") == "1"
	html, _, err := srv.renderBody(r, rc, l, remote)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", frameCSP(remote))
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.Write(frameDoc(html))
}

// downloadCSP is the policy of attachment and source responses: should a
// browser render one anyway, nothing in it runs or loads.
const downloadCSP = "default-src 'none'; sandbox; frame-ancestors 'none'"

// part serves an attachment: decoded, as a download with a safe name and
// its declared type (nosniff is set for every response).
func (srv *Server) part(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	l, err := srv.load(r, rc)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	p, ok := findPart(&l.Meta.Structure, r.PathValue("part"))
	if !ok || p.Type == "multipart" {
		srv.notFound(w, r)
		return
	}
	b, err := partBytes(r.Context(), rc.acct, l.Msg.ID, p, -1)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	name := "attachment.bin"
	for _, a := range l.Layout.Attachments {
		if a.Path == r.PathValue("part") {
			name = a.Name
		}
	}
	if n := fileName(p); n != "" {
		name = n
	}
	typ := "application/octet-stream"
	if t := p.Type + "/" + p.Subtype; validMediaType(t) {
		typ = t
	}
	h := w.Header()
	h.Set("Content-Security-Policy", downloadCSP)
	h.Set("Content-Type", typ)
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "private, no-store")
	w.Write(b)
}

// validMediaType accepts type/subtype made of RFC 2045 token characters.
func validMediaType(t string) bool {
	typ, sub, ok := strings.Cut(t, "/")
	tok := func(s string) bool {
		if s == "" || len(s) > 100 {
			return false
		}
		for _, c := range s {
			if c <= ' ' || c >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?=`, c) {
				return false
			}
		}
		return true
	}
	return ok && tok(typ) && tok(sub)
}

// source shows the raw message as plain text.
func (srv *Server) source(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	l, err := srv.load(r, rc)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	rd, err := rc.acct.Open(r.Context(), l.Msg.ID)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	defer rd.Close()
	h := w.Header()
	h.Set("Content-Security-Policy", downloadCSP)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Disposition", "inline")
	h.Set("Cache-Control", "private, no-store")
	h.Set("Content-Length", strconv.FormatInt(l.Msg.Size, 10))
	if _, err := io.Copy(w, rd); err != nil && !errors.Is(err, r.Context().Err()) {
		srv.log.Debug("send source", "err", err)
	}
}
