package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"mailbox/store"
)

//go:embed ui/*.html
var templateFS embed.FS

//go:embed ui/static
var staticFS embed.FS

// pages holds one template set per page, each the layout plus the page's
// "content".
type pages struct {
	sets map[string]*template.Template
}

var funcs = template.FuncMap{
	"size":   humanSize,
	"count":  countNoun,
	"addrs":  addressList,
	"addr":   addressText,
	"sender": senderName,
	"date":   shortDate,
	"longdate": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format("Mon, 2 Jan 2006 15:04 MST")
	},
	"has": func(flags []string, f string) bool {
		for _, x := range flags {
			if strings.EqualFold(x, f) {
				return true
			}
		}
		return false
	},
	"roleLabel": roleLabel,
	"add":       func(a, b int) int { return a + b },
}

func loadPages() *pages {
	p := &pages{sets: map[string]*template.Template{}}
	names, err := fs.Glob(templateFS, "ui/*.html")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "ui/"), ".html")
		if name == "layout" {
			continue
		}
		// Parse errors in embedded templates are programming errors caught
		// by every test; Must keeps New free of an error return.
		p.sets[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "ui/layout.html", n))
	}
	return p
}

// view is what every page template gets.
type view struct {
	Title   string
	User    string
	CSRF    string
	Folders []store.Mailbox
	Box     int64  // the folder being shown, 0 if none
	Query   string // the words searched for, shown in the search box
	Notice  string
	Error   string
	Data    any
}

// notices are the fixed phrases a redirect can ask a page to show
// (?n=key), so no text from a URL ever reaches a page.
var notices = map[string]string{
	"sent":       "Message sent.",
	"queued":     "Message sent. Recipients on other servers get it as soon as their servers accept it.",
	"saved":      "Draft saved.",
	"deleted":    "Deleted.",
	"moved":      "Moved.",
	"updated":    "Updated.",
	"emptied":    "Folder emptied.",
	"created":    "Folder created.",
	"renamed":    "Folder renamed.",
	"removed":    "Folder deleted.",
	"password":   "Password changed. Other sessions were signed out.",
	"pop3":       "POP3 setting saved.",
	"nothing":    "Nothing was selected.",
	"draftgone":  "That draft no longer exists.",
	"deleteperm": "Deleted permanently.",
}

func (srv *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, v *view) {
	t := srv.pages.sets[name]
	if t == nil {
		srv.fail(w, r, fmt.Errorf("no template %q", name))
		return
	}
	if v.Notice == "" {
		v.Notice = notices[r.URL.Query().Get("n")]
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		srv.fail(w, r, fmt.Errorf("render %s: %w", name, err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// page builds the common view for a signed-in page.
func (srv *Server) page(r *http.Request, rc *reqCtx, title string, box int64, data any) (*view, error) {
	folders, err := rc.acct.Mailboxes(r.Context())
	if err != nil {
		return nil, err
	}
	return &view{Title: title, User: rc.acct.Address, CSRF: rc.sess.CSRF, Folders: folders, Box: box, Data: data}, nil
}

func (srv *Server) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	v := &view{Title: http.StatusText(code), Error: msg}
	if rc, err := srv.session(r); err == nil {
		v.User, v.CSRF = rc.acct.Address, rc.sess.CSRF
	}
	srv.render(w, r, code, "error", v)
}

func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "ui/static")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

func humanSize(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.0f kB", float64(n)/1000)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1f GB", float64(n)/1e9)
}

func addressText(a store.Address) string {
	email := a.Mailbox
	if a.Host != "" {
		email += "@" + a.Host
	}
	if a.Name != "" {
		return a.Name + " <" + email + ">"
	}
	return email
}

func addressList(list []store.Address) string {
	var parts []string
	for _, a := range list {
		parts = append(parts, addressText(a))
	}
	return strings.Join(parts, ", ")
}

func senderName(list []store.Address) string {
	if len(list) == 0 {
		return "(no sender)"
	}
	if list[0].Name != "" {
		return list[0].Name
	}
	return list[0].Mailbox + "@" + list[0].Host
}

func shortDate(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	now := time.Now()
	switch {
	case t.Year() == now.Year() && t.YearDay() == now.YearDay():
		return t.Format("15:04")
	case t.Year() == now.Year():
		return t.Format("2 Jan")
	}
	return t.Format("2 Jan 2006")
}

func roleLabel(mb store.Mailbox) string {
	switch mb.Role {
	case store.RoleInbox:
		return "Inbox"
	case store.RoleSent:
		return "Sent"
	case store.RoleDrafts:
		return "Drafts"
	case store.RoleTrash:
		return "Trash"
	case store.RoleJunk:
		return "Junk"
	case store.RoleArchive:
		return "Archive"
	}
	return mb.Name
}

// countNoun writes "1 message", "2 messages": n and the noun, plural
// unless n is one.
func countNoun(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.FormatInt(n, 10) + " " + noun + "s"
}
