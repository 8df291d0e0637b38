package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"mailbox/internal/throttle"
	"mailbox/store"
	"mailbox/store/storetest"
)

func TestLoginSessionLogout(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	c := e.client()
	if r := c.get("/"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login") {
		t.Fatalf("anonymous / = %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	r := c.login(alice, "wrong")
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong address or password") {
		t.Fatalf("bad password: %d", r.StatusCode)
	}
	r = c.login("nobody@example.test", "wrong")
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong address or password") {
		t.Fatalf("unknown user: %d", r.StatusCode)
	}
	// The login form needs its CSRF cookie and token.
	if r := c.post("/login", url.Values{"address": {alice}, "password": {pass}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("login without token = %d", r.StatusCode)
	}
	r = c.login(alice, pass)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %d", r.StatusCode)
	}
	var sc *http.Cookie
	for _, ck := range r.Cookies() {
		if ck.Name == sessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie = %+v", sc)
	}
	r = c.get("/")
	inbox := e.box(alice, store.RoleInbox)
	if loc := r.Header.Get("Location"); loc != fmt.Sprintf("/box/%d", inbox.ID) {
		t.Fatalf("/ -> %q", loc)
	}
	r = c.get(fmt.Sprintf("/box/%d", inbox.ID))
	if r.StatusCode != 200 || !strings.Contains(r.body, alice) {
		t.Fatalf("inbox = %d", r.StatusCode)
	}
	// Another account's folder is not found, not forbidden.
	if r := c.get(fmt.Sprintf("/box/%d", e.box(bob, store.RoleInbox).ID)); r.StatusCode != http.StatusNotFound {
		t.Fatalf("bob's inbox = %d", r.StatusCode)
	}
	tok := c.csrf("/settings")
	if r := c.post("/logout", url.Values{"csrf": {tok}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout = %d", r.StatusCode)
	}
	// The old cookie value no longer works even if replayed.
	c2 := e.client()
	u, _ := url.Parse(e.ts.URL)
	c2.http.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: sc.Value}})
	if r := c2.get("/settings"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("replayed cookie after logout = %d", r.StatusCode)
	}
}

func TestSessionSurvivesRestartAndExpires(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	e := newEnv(t, Options{SessionIdle: time.Hour}, storetest.Fixture{Options: store.Options{Dir: dir, Now: clock}})
	c := e.client()
	c.mustLogin(alice)
	// A new server process: reopen the store from disk.
	e.st.Close()
	st2, err := store.Open(context.Background(), store.Options{Dir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	srv2 := New(Options{Store: st2, SessionIdle: time.Hour, Logger: testLogger(t)})
	e.ts.Config.Handler = srv2
	if r := c.get("/settings"); r.StatusCode != 200 {
		t.Fatalf("after restart = %d", r.StatusCode)
	}
	now = now.Add(2 * time.Hour)
	if r := c.get("/settings"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after idle expiry = %d", r.StatusCode)
	}
}

func TestSecurityHeadersEverywhere(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	d := e.deliver(alice, storetest.Message("x@elsewhere.test", alice, "hi", "hello"))
	c := e.client()
	c.mustLogin(alice)
	for _, p := range []string{"/login", "/", fmt.Sprintf("/box/%d", d.MailboxID), msgURL(d), msgURL(d) + "/body",
		msgURL(d) + "/source", "/compose", "/folders", "/settings", "/nope", "/static/app.js", "/healthz"} {
		r := c.get(p)
		csp := r.Header.Get("Content-Security-Policy")
		if csp == "" || strings.Contains(csp, "unsafe-eval") || !strings.Contains(csp, "frame-ancestors") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if strings.Contains(csp, "script-src") && strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: inline script allowed: %q", p, csp)
		}
		if r.Header.Get("Referrer-Policy") != "no-referrer" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", p, r.Header)
		}
		if p != msgURL(d)+"/body" && !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: framing allowed: %q", p, csp)
		}
	}
	if r := c.get(msgURL(d) + "/body"); !strings.Contains(r.Header.Get("Content-Security-Policy"), "sandbox") ||
		strings.Contains(r.Header.Get("Content-Security-Policy"), "script-src") {
		t.Errorf("body frame CSP %q", r.Header.Get("Content-Security-Policy"))
	}
}

func TestCSRFRequired(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	d := e.deliver(alice, storetest.Message("x@elsewhere.test", alice, "hi", "hello"))
	c := e.client()
	c.mustLogin(alice)
	form := url.Values{"box": {fmt.Sprint(d.MailboxID)}, "uid": {fmt.Sprint(d.UID)}, "action": {"delete"}}
	if r := c.post("/act", form); r.StatusCode != http.StatusForbidden {
		t.Fatalf("no token = %d", r.StatusCode)
	}
	form.Set("csrf", c.csrf("/settings"))
	req, _ := http.NewRequest("POST", e.ts.URL+"/act", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r := c.do(req); r.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site = %d", r.StatusCode)
	}
	req, _ = http.NewRequest("POST", e.ts.URL+"/act", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if r := c.do(req); r.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin = %d", r.StatusCode)
	}
	if n := len(e.messages(alice, store.RoleInbox)); n != 1 {
		t.Fatalf("a forged request deleted mail: %d left", n)
	}
	if r := c.post("/act", form); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("with token = %d", r.StatusCode)
	}
	if n := len(e.messages(alice, store.RoleTrash)); n != 1 {
		t.Fatalf("trash has %d", n)
	}
}

func TestListPagesNewestFirst(t *testing.T) {
	e := newEnv(t, Options{PageSize: 20}, storetest.Fixture{})
	for i := 1; i <= 45; i++ {
		e.deliver(alice, storetest.Message(fmt.Sprintf("Sender%d <s%d@elsewhere.test>", i, i), alice, fmt.Sprintf("Subject number %d", i), "body"))
	}
	c := e.client()
	c.mustLogin(alice)
	inbox := e.box(alice, store.RoleInbox)
	r := c.get(fmt.Sprintf("/box/%d", inbox.ID))
	i45, i26, i25 := strings.Index(r.body, "Subject number 45<"), strings.Index(r.body, "Subject number 26<"), strings.Index(r.body, "Subject number 25<")
	if i45 < 0 || i26 < 0 || i45 > i26 || i25 >= 0 {
		t.Fatalf("page 1 order wrong: %d %d %d", i45, i26, i25)
	}
	if !strings.Contains(r.body, "Page 1 of 3") || !strings.Contains(r.body, "Sender45") || !strings.Contains(r.body, `class="count"`) {
		t.Fatalf("page 1: %.2000s", r.body)
	}
	r = c.get(fmt.Sprintf("/box/%d?page=3", inbox.ID))
	if !strings.Contains(r.body, "Subject number 5<") || strings.Contains(r.body, "Subject number 6<") || !strings.Contains(r.body, "Subject number 1<") {
		t.Fatalf("page 3 wrong")
	}
}

// hostileHTML is an HTML message trying everything that must not work.
const hostileHTML = `<html><head><base href="http://127.0.0.1:9/"><meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/refresh">
<style>body{background:url(http://127.0.0.1:9/css)}</style><script>parent.document.title='pwned'</script></head>
<body onload="alert(1)"><p style="color:red;background-image:url(http://127.0.0.1:9/bg)">Hello <b>friend</b></p>
<img src="http://127.0.0.1:9/tracker.gif" onerror="alert(2)"><img src="cid:logo@x">
<a href="javascript:alert(3)">js link</a><a href="data:text/html,<script>alert(4)</script>">data link</a>
<svg><script>alert(5)</script></svg><form action="http://127.0.0.1:9/f"><input name=p></form>
<iframe src="http://127.0.0.1:9/frame"></iframe><a href="https://example.org/ok">fine link</a></body></html>`

func hostileMessage() string {
	png := base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\nfakepng"))
	return "From: \"<script>alert('from')</script>\" <evil@elsewhere.test>\r\nTo: alice@example.test\r\n" +
		"Subject: <img src=x onerror=alert('subj')>\r\nDate: Mon, 5 Jan 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n" +
		"--OUT\r\nContent-Type: multipart/related; boundary=\"REL\"\r\n\r\n" +
		"--REL\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		strings.ReplaceAll(hostileHTML, "=", "=3D") + "\r\n" +
		"--REL\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n" + png + "\r\n--REL--\r\n" +
		"--OUT\r\nContent-Type: text/html; name=\"a.html\"\r\nContent-Disposition: attachment; filename=\"<img src=x onerror=alert('file')>.html\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte("<script>alert('att')</script>")) + "\r\n--OUT--\r\n"
}

func TestReadSanitizedHTML(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	d := e.deliver(alice, hostileMessage())
	c := e.client()
	c.mustLogin(alice)
	r := c.get(msgURL(d))
	if r.StatusCode != 200 {
		t.Fatalf("message = %d", r.StatusCode)
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "<img src=x onerror"} {
		if strings.Contains(r.body, bad) {
			t.Errorf("message page carries %q", bad)
		}
	}
	if !strings.Contains(r.body, "&lt;img src=x onerror=alert(&#39;subj&#39;)&gt;") || !strings.Contains(r.body, "Show images") {
		t.Errorf("subject not escaped or no image prompt: %.3000s", r.body)
	}
	if !strings.Contains(r.body, `sandbox="allow-popups allow-popups-to-escape-sandbox"`) {
		t.Errorf("frame not sandboxed")
	}
	if m := e.messages(alice, store.RoleInbox); !slices.Contains(m[0].Flags, store.FlagSeen) {
		t.Errorf("opening did not mark seen: %v", m[0].Flags)
	}
	body := c.get(msgURL(d) + "/body")
	for _, bad := range []string{"<script", "onload", "onerror", "javascript:", "data:text", "127.0.0.1:9", "<base", `<meta http-equiv="refresh"`, "127.0.0.1:9/refresh",
		"<form", "<svg", "<iframe", "<style>body{background"} {
		if strings.Contains(body.body, bad) {
			t.Errorf("body frame carries %q:\n%s", bad, body.body)
		}
	}
	if !strings.Contains(body.body, "<b>friend</b>") || !strings.Contains(body.body, `src="data:image/png;base64,`) ||
		!strings.Contains(body.body, `href="https://example.org/ok"`) || !strings.Contains(body.body, `color: red`) {
		t.Errorf("body lost good content:\n%s", body.body)
	}
	csp := body.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "img-src data:;") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("frame CSP = %q", csp)
	}
	shown := c.get(msgURL(d) + "/body?images=1")
	if !strings.Contains(shown.body, `src="http://127.0.0.1:9/tracker.gif"`) || !strings.Contains(shown.Header.Get("Content-Security-Policy"), "http:") {
		t.Errorf("images=1 did not allow remote images:\n%s", shown.body)
	}
}

func TestAttachmentDownload(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	d := e.deliver(alice, hostileMessage())
	c := e.client()
	c.mustLogin(alice)
	r := c.get(msgURL(d))
	if !strings.Contains(r.body, "/part/2") || !strings.Contains(r.body, "&lt;img src=x onerror=alert(&#39;file&#39;)&gt;.html") {
		t.Fatalf("attachment not listed safely: %.3000s", r.body)
	}
	a := c.get(msgURL(d) + "/part/2")
	if a.body != "<script>alert('att')</script>" {
		t.Fatalf("attachment bytes = %q", a.body)
	}
	cd := a.Header.Get("Content-Disposition")
	if !strings.HasPrefix(cd, "attachment;") || strings.Contains(cd, "\n") {
		t.Fatalf("Content-Disposition = %q", cd)
	}
	if a.Header.Get("X-Content-Type-Options") != "nosniff" || a.Header.Get("Content-Type") != "text/html" ||
		!strings.Contains(a.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("headers = %v", a.Header)
	}
	if r := c.get(msgURL(d) + "/part/9"); r.StatusCode != 404 {
		t.Fatalf("missing part = %d", r.StatusCode)
	}
	src := c.get(msgURL(d) + "/source")
	if !strings.HasPrefix(src.Header.Get("Content-Type"), "text/plain") || !strings.Contains(src.body, "Content-ID: <logo@x>") {
		t.Fatalf("source = %v", src.Header)
	}
}

func TestSafeFileName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"report.pdf", "report.pdf"},
		{"../../etc/passwd", "passwd"},
		{`C:\Users\x\evil.exe`, "evil.exe"},
		{"a\r\nContent-Type: text/html", "html"},
		{"bad\x00name\x7f.txt", "badname.txt"},
		{"\u202Egnp.exe", "gnp.exe"},
		{"..", ""},
		{".hidden", "hidden"},
		{`q"uote.txt`, "quote.txt"},
	} {
		if got := safeFileName(tc.in); got != tc.want {
			t.Errorf("safeFileName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// postMultipart posts a compose form with optional files.
func (c *client) postMultipart(path string, fields url.Values, files map[string][]byte) resp {
	c.e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, vs := range fields {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	for name, data := range files {
		fw, _ := mw.CreateFormFile("attach", name)
		fw.Write(data)
	}
	mw.Close()
	req, _ := http.NewRequest("POST", c.e.ts.URL+path, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return c.do(req)
}

func TestComposeSendReplyForwardDraft(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	c := e.client()
	c.mustLogin(alice)
	tok := c.csrf("/compose")
	file := bytes.Repeat([]byte{0, 1, 2, 0xff, 'x'}, 5000)
	r := c.postMultipart("/compose", url.Values{"csrf": {tok}, "to": {"Bob <bob@example.test>"}, "bcc": {"alice@example.test"},
		"subject": {"Lunch ✓"}, "body": {"Shall we meet?\nAt noon."}, "action": {"send"}}, map[string][]byte{"plan.bin": file})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("send = %d %.2000s", r.StatusCode, r.body)
	}
	inbox := e.messages(bob, store.RoleInbox)
	sent := e.messages(alice, store.RoleSent)
	if len(inbox) != 1 || len(sent) != 1 {
		t.Fatalf("bob inbox %d, alice sent %d", len(inbox), len(sent))
	}
	got := e.raw(bob, inbox[0])
	if strings.Contains(got, "Bcc:") || !strings.Contains(e.raw(alice, sent[0]), "Bcc:") {
		t.Fatalf("Bcc handling wrong")
	}
	if n := len(e.messages(alice, store.RoleInbox)); n != 1 {
		t.Fatalf("bcc copy to alice: %d", n)
	}
	// Bob downloads the attachment byte for byte.
	cb := e.client()
	cb.mustLogin(bob)
	d := store.Delivered{MailboxID: inbox[0].MailboxID, UID: inbox[0].UID}
	page := cb.get(msgURL(d))
	if !strings.Contains(page.body, "Lunch ✓") || !strings.Contains(page.body, "plan.bin") {
		t.Fatalf("bob's view: %.2000s", page.body)
	}
	if a := cb.get(msgURL(d) + "/part/2"); !bytes.Equal([]byte(a.body), file) {
		t.Fatalf("attachment differs: %d bytes", len(a.body))
	}
	if body := cb.get(msgURL(d) + "/body"); !strings.Contains(body.body, "Shall we meet?\nAt noon.") {
		t.Fatalf("text body: %s", body.body)
	}
	// Reply prefills and marks answered.
	rp := cb.get("/compose?mode=reply&ref=" + fmt.Sprintf("%d/%d", d.MailboxID, d.UID))
	if !strings.Contains(rp.body, `value="Re: Lunch ✓"`) || !strings.Contains(rp.body, "&gt; Shall we meet?") || !strings.Contains(rp.body, "alice@example.test") {
		t.Fatalf("reply form: %.3000s", rp.body)
	}
	btok := csrfRE.FindStringSubmatch(rp.body)[1]
	irt := regexp1(rp.body, `name="in_reply_to" value="([^"]*)"`)
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {alice}, "subject": {"Re: Lunch ✓"}, "body": {"Yes!"},
		"in_reply_to": {irt}, "references": {irt}, "reply": {fmt.Sprintf("%d/%d", d.MailboxID, d.UID)}, "action": {"send"}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("reply = %d %.1000s", r.StatusCode, r.body)
	}
	if m := e.messages(bob, store.RoleInbox); !slices.Contains(m[0].Flags, store.FlagAnswered) {
		t.Fatalf("not answered: %v", m[0].Flags)
	}
	ai := e.messages(alice, store.RoleInbox)
	if len(ai) != 2 || !strings.Contains(e.raw(alice, ai[1]), "In-Reply-To: <") {
		t.Fatalf("reply not in alice's inbox with In-Reply-To")
	}
	// Forward keeps the original's attachment.
	fw := cb.get("/compose?mode=forward&ref=" + fmt.Sprintf("%d/%d", d.MailboxID, d.UID))
	if !strings.Contains(fw.body, `name="keep" value="`) || !strings.Contains(fw.body, "Fwd: Lunch") {
		t.Fatalf("forward form: %.3000s", fw.body)
	}
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {alice}, "subject": {"Fwd: Lunch"}, "body": {"fyi"},
		"keep": {fmt.Sprintf("%d/%d/2", d.MailboxID, d.UID)}, "action": {"send"}}, nil)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("forward = %d", r.StatusCode)
	}
	ai = e.messages(alice, store.RoleInbox)
	meta, _ := e.account(alice).Meta(context.Background(), ai[2].ID)
	if meta.Attachments != 1 {
		t.Fatalf("forward lost the attachment: %+v", meta)
	}
	// A remote recipient goes to the outbound queue, the local one gets
	// it at once; an unknown local one refuses the whole message.
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {"carol@elsewhere.test, alice@example.test"}, "subject": {"x"}, "body": {"y"}, "action": {"send"}}, nil)
	if r.StatusCode != http.StatusSeeOther || !strings.Contains(r.Header.Get("Location"), "n=queued") {
		t.Fatalf("remote = %d %s %.2000s", r.StatusCode, r.Header.Get("Location"), r.body)
	}
	q, err := e.st.Queue(context.Background(), store.QueueFilter{})
	if err != nil || len(q) != 1 || q[0].Recipient != "carol@elsewhere.test" || q[0].Sender != bob {
		t.Fatalf("queue = %+v %v", q, err)
	}
	if n := len(e.messages(alice, store.RoleInbox)); n != 4 {
		t.Fatalf("local copy not delivered: %d", n)
	}
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {"nobody@example.test, alice@example.test"}, "subject": {"x"}, "body": {"y"}, "action": {"send"}}, nil)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.body, "There is no mailbox nobody@example.test on this server. Nothing was sent.") {
		t.Fatalf("unknown local = %d %.2000s", r.StatusCode, r.body)
	}
	if n := len(e.messages(alice, store.RoleInbox)); n != 4 {
		t.Fatalf("refused message delivered: %d", n)
	}
	// Drafts: save, edit (replaces), send (removes the draft).
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {alice}, "subject": {"Draft one"}, "body": {"first"}, "action": {"save"}}, map[string][]byte{"d.txt": []byte("draft file")})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("save draft = %d", r.StatusCode)
	}
	drafts := e.messages(bob, store.RoleDrafts)
	if len(drafts) != 1 || !slices.Contains(drafts[0].Flags, store.FlagDraft) {
		t.Fatalf("drafts = %+v", drafts)
	}
	ref := fmt.Sprintf("%d/%d", drafts[0].MailboxID, drafts[0].UID)
	ed := cb.get("/compose?mode=draft&ref=" + ref)
	if !strings.Contains(ed.body, `value="Draft one"`) || !strings.Contains(ed.body, "d.txt") {
		t.Fatalf("edit draft: %.2000s", ed.body)
	}
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {alice}, "subject": {"Draft two"}, "body": {"second"}, "draft": {ref},
		"keep": {ref + "/2"}, "action": {"save"}}, nil)
	drafts = e.messages(bob, store.RoleDrafts)
	if r.StatusCode != http.StatusSeeOther || len(drafts) != 1 || !strings.Contains(e.raw(bob, drafts[0]), "Draft two") || !strings.Contains(e.raw(bob, drafts[0]), "d.txt") {
		t.Fatalf("draft replace: %d %d", r.StatusCode, len(drafts))
	}
	ref = fmt.Sprintf("%d/%d", drafts[0].MailboxID, drafts[0].UID)
	r = cb.postMultipart("/compose", url.Values{"csrf": {btok}, "to": {alice}, "subject": {"Draft two"}, "body": {"second"}, "draft": {ref}, "action": {"send"}}, nil)
	if r.StatusCode != http.StatusSeeOther || len(e.messages(bob, store.RoleDrafts)) != 0 {
		t.Fatalf("sending a draft did not remove it")
	}
	// Completion knows alice now.
	cj := cb.get("/contacts?q=ali")
	if !strings.Contains(cj.body, "alice@example.test") {
		t.Fatalf("contacts = %s", cj.body)
	}
}

func regexp1(s, re string) string {
	m := regexpMust(re).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestOrganise(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	var ds []store.Delivered
	for i := 0; i < 4; i++ {
		ds = append(ds, e.deliver(alice, storetest.Message("x@elsewhere.test", alice, fmt.Sprint("m", i), "hello")))
	}
	c := e.client()
	c.mustLogin(alice)
	tok := c.csrf("/folders")
	inbox := e.box(alice, store.RoleInbox)
	act := func(action string, uids []uint32, extra url.Values) resp {
		f := url.Values{"csrf": {tok}, "box": {fmt.Sprint(inbox.ID)}, "action": {action}, "back": {fmt.Sprintf("/box/%d", inbox.ID)}}
		for _, u := range uids {
			f.Add("uid", fmt.Sprint(u))
		}
		for k, v := range extra {
			f[k] = v
		}
		r := c.post("/act", f)
		if r.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s = %d %.500s", action, r.StatusCode, r.body)
		}
		return r
	}
	act("read", []uint32{1, 2}, nil)
	act("flag", []uint32{2}, nil)
	act("unread", []uint32{2}, nil)
	m := e.messages(alice, store.RoleInbox)
	if !slices.Contains(m[0].Flags, store.FlagSeen) || slices.Contains(m[1].Flags, store.FlagSeen) || !slices.Contains(m[1].Flags, store.FlagFlagged) {
		t.Fatalf("flags = %v %v", m[0].Flags, m[1].Flags)
	}
	// Folders: create, move into it, rename, refuse deleting a special one.
	if r := c.post("/folders", url.Values{"csrf": {tok}, "action": {"create"}, "name": {"Projects"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("create = %d", r.StatusCode)
	}
	proj, err := e.account(alice).Mailbox(context.Background(), "Projects")
	if err != nil {
		t.Fatal(err)
	}
	act("move", []uint32{3}, url.Values{"target": {fmt.Sprint(proj.ID)}})
	if r := c.post("/folders", url.Values{"csrf": {tok}, "action": {"rename"}, "from": {"Projects"}, "to": {"Work"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("rename = %d", r.StatusCode)
	}
	work, err := e.account(alice).Mailbox(context.Background(), "Work")
	if err != nil || work.Messages != 1 {
		t.Fatalf("Work = %+v %v", work, err)
	}
	if r := c.post("/folders", url.Values{"csrf": {tok}, "action": {"delete"}, "name": {"Sent"}}); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("delete Sent = %d", r.StatusCode)
	}
	if r := c.post("/folders", url.Values{"csrf": {tok}, "action": {"delete"}, "name": {"Work"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete Work = %d", r.StatusCode)
	}
	act("junk", []uint32{4}, nil)
	if j := e.box(alice, store.RoleJunk); j.Messages != 1 {
		t.Fatalf("junk has %d", j.Messages)
	}
	// Delete goes to Trash; deleting in Trash is permanent; Empty Trash.
	act("delete", []uint32{1, 2}, nil)
	trash := e.box(alice, store.RoleTrash)
	if trash.Messages != 2 || len(e.messages(alice, store.RoleInbox)) != 0 {
		t.Fatalf("trash %d", trash.Messages)
	}
	tm := e.messages(alice, store.RoleTrash)
	r := c.post("/act", url.Values{"csrf": {tok}, "box": {fmt.Sprint(trash.ID)}, "action": {"delete"}, "uid": {fmt.Sprint(tm[0].UID)}, "back": {"/"}})
	if r.StatusCode != http.StatusSeeOther || len(e.messages(alice, store.RoleTrash)) != 1 {
		t.Fatalf("permanent delete failed")
	}
	if r := c.post("/folders", url.Values{"csrf": {tok}, "action": {"empty"}, "box": {fmt.Sprint(trash.ID)}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("empty = %d", r.StatusCode)
	}
	if n := len(e.messages(alice, store.RoleTrash)); n != 0 {
		t.Fatalf("trash not empty: %d", n)
	}
	if r := c.post("/folders", url.Values{"csrf": {tok}, "action": {"empty"}, "box": {fmt.Sprint(inbox.ID)}}); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("emptying INBOX = %d", r.StatusCode)
	}
	_ = ds
}

func TestSearch(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	e.deliver(alice, storetest.Message("Zed <zed@elsewhere.test>", alice, "Quarterly numbers", "the pineapple budget is ready"))
	e.deliver(alice, storetest.Message("amy@elsewhere.test", alice, "Holiday", "beach photos"))
	c := e.client()
	c.mustLogin(alice)
	inbox := e.box(alice, store.RoleInbox)
	r := c.get(fmt.Sprintf("/box/%d?q=pineapple", inbox.ID))
	if !strings.Contains(r.body, "Quarterly numbers") || strings.Contains(r.body, "Holiday") || !strings.Contains(r.body, "1 found") {
		t.Fatalf("body search: %.3000s", r.body)
	}
	r = c.get(fmt.Sprintf("/box/%d?from=amy", inbox.ID))
	if strings.Contains(r.body, "Quarterly numbers") || !strings.Contains(r.body, "Holiday") {
		t.Fatalf("from search wrong")
	}
	r = c.get(fmt.Sprintf("/box/%d?subject=holiday&after=2000-01-01", inbox.ID))
	if !strings.Contains(r.body, "Holiday") {
		t.Fatalf("subject+date search wrong")
	}
	r = c.get(fmt.Sprintf("/box/%d?after=nonsense", inbox.ID))
	if !strings.Contains(r.body, "Dates must look like") {
		t.Fatalf("bad date accepted")
	}
}

func TestEventsStream(t *testing.T) {
	e := newEnv(t, Options{EventsKeepAlive: 50 * time.Millisecond}, storetest.Fixture{})
	c := e.client()
	c.mustLogin(alice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/events", nil)
	res, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", res.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(res.Body)
	sc.Scan() // retry:
	d := e.deliver(alice, storetest.Message("x@elsewhere.test", alice, "live", "now"))
	want := fmt.Sprintf(`data: {"kind":"added","mailbox":%d,"uid":%d`, d.MailboxID, d.UID)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), want) {
			return
		}
	}
	t.Fatalf("no event for the new message: %v", sc.Err())
}

func TestSettings(t *testing.T) {
	e := newEnv(t, Options{Hostname: "mail.example.test", Ports: Ports{IMAP: -1}}, storetest.Fixture{})
	c := e.client()
	c.mustLogin(alice)
	other := e.client()
	other.mustLogin(alice)
	r := c.get("/settings")
	if !strings.Contains(r.body, "mail.example.test") || !strings.Contains(r.body, "<td>993</td>") || strings.Contains(r.body, "<td>143</td>") {
		t.Fatalf("settings: %.3000s", r.body)
	}
	tok := csrfRE.FindStringSubmatch(r.body)[1]
	if r := c.post("/settings", url.Values{"csrf": {tok}, "action": {"password"}, "current": {"bad"}, "new": {"new password"}, "repeat": {"new password"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("wrong current = %d", r.StatusCode)
	}
	if r := c.post("/settings", url.Values{"csrf": {tok}, "action": {"password"}, "current": {pass}, "new": {"short"}, "repeat": {"short"}}); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("short = %d", r.StatusCode)
	}
	if r := c.post("/settings", url.Values{"csrf": {tok}, "action": {"password"}, "current": {pass}, "new": {"new password"}, "repeat": {"new password"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("change = %d", r.StatusCode)
	}
	if _, err := e.st.Login(context.Background(), alice, "new password"); err != nil {
		t.Fatal("new password does not work")
	}
	if r := c.get("/settings"); r.StatusCode != 200 {
		t.Fatal("this session was signed out")
	}
	if r := other.get("/settings"); r.StatusCode != http.StatusSeeOther {
		t.Fatal("the other session survived the password change")
	}
	if r := c.post("/settings", url.Values{"csrf": {tok}, "action": {"pop3"}, "pop3": {"trash"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("pop3 = %d", r.StatusCode)
	}
	if mode, _ := e.account(alice).POP3Delete(context.Background()); mode != store.POP3Trash {
		t.Fatalf("pop3 mode = %s", mode)
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	e.deliver(alice, storetest.Message("x@elsewhere.test", alice, "a", "b"))
	c := e.client()
	if r := c.get("/healthz"); r.StatusCode != 200 || r.body != "ok\n" {
		t.Fatalf("healthz = %d %q", r.StatusCode, r.body)
	}
	c.login(alice, "bad")
	r := c.get("/metrics")
	for _, want := range []string{"mailbox_accounts 2\n", "mailbox_messages 1\n", `mailbox_web_logins_total{result="failed"} 1`, "# TYPE mailbox_web_requests_total counter"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
}

func TestFrontEndBudget(t *testing.T) {
	total := 0
	for _, f := range []string{"ui/static/app.css", "ui/static/app.js"} {
		b, err := staticFS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
	}
	if total > 40<<10 {
		t.Fatalf("front end is %d bytes, budget 40 KiB", total)
	}
	t.Logf("front end: %d bytes", total)
}

func TestShutdownEndsEventStreams(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	c := e.client()
	c.mustLogin(alice)
	req, _ := http.NewRequest("GET", e.ts.URL+"/events", nil)
	res, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, res.Body)
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("event stream still open after Shutdown")
	}
}

func TestLoginThrottled(t *testing.T) {
	lim := throttle.New(throttle.Options{Free: 1, BaseDelay: 300 * time.Millisecond, MaxDelay: time.Second})
	e := newEnv(t, Options{Limiter: lim}, storetest.Fixture{})
	c := e.client()
	c.login(alice, "bad1")
	c.login(alice, "bad2")
	start := time.Now()
	r := c.login(alice, pass)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("third attempt answered after %v, want a delay", d)
	}
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("correct password after delay = %d", r.StatusCode)
	}
}

func TestAutoconfig(t *testing.T) {
	e := newEnv(t, Options{Hostname: "mail.example.test", Ports: Ports{POP3: -1}}, storetest.Fixture{})
	c := e.client()
	r := c.get("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test")
	for _, want := range []string{`<emailProvider id="example.test">`, `<hostname>mail.example.test</hostname>`, `<port>993</port>`,
		`<socketType>STARTTLS</socketType>`, `<port>465</port>`, `<username>%EMAILADDRESS%</username>`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("autoconfig lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, "<port>110</port>") {
		t.Errorf("autoconfig offers a disabled port")
	}
	req, _ := http.NewRequest("POST", e.ts.URL+"/autodiscover/autodiscover.xml", strings.NewReader(
		`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.test</EMailAddress></Request></Autodiscover>`))
	r = c.do(req)
	for _, want := range []string{"<Type>IMAP</Type>", "<Port>993</Port>", "<LoginName>alice@example.test</LoginName>", "<Type>SMTP</Type>"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("autodiscover lacks %q:\n%s", want, r.body)
		}
	}
}

func TestUploadTooBig(t *testing.T) {
	e := newEnv(t, Options{MaxMessageBytes: 64 << 10}, storetest.Fixture{})
	c := e.client()
	c.mustLogin(alice)
	tok := c.csrf("/compose")
	r := c.postMultipart("/compose", url.Values{"csrf": {tok}, "to": {bob}, "subject": {"big"}, "action": {"send"}},
		map[string][]byte{"big.bin": bytes.Repeat([]byte("x"), 2<<20)})
	if r.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(r.body, "too big") {
		t.Fatalf("oversized upload = %d", r.StatusCode)
	}
	r = c.postMultipart("/compose", url.Values{"csrf": {tok}, "to": {bob}, "subject": {"big"}, "action": {"send"}},
		map[string][]byte{"mid.bin": bytes.Repeat([]byte("x"), 100<<10)})
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.body, "too big") {
		t.Fatalf("message over the limit = %d %.500s", r.StatusCode, r.body)
	}
	if n := len(e.messages(bob, store.RoleInbox)); n != 0 {
		t.Fatalf("bob got %d", n)
	}
}

func TestSendLimit(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{Options: store.Options{SendLimits: store.SendLimits{RecipientsPerMessage: 1}}})
	c := e.client()
	c.mustLogin(alice)
	tok := c.csrf("/compose")
	r := c.postMultipart("/compose", url.Values{"csrf": {tok}, "to": {"bob@example.test, alice@example.test"}, "subject": {"x"}, "body": {"y"}, "action": {"send"}}, nil)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.body, "sending limit") {
		t.Fatalf("over the limit = %d %.1000s", r.StatusCode, r.body)
	}
	if n := len(e.messages(bob, store.RoleInbox)); n != 0 {
		t.Fatalf("bob got %d", n)
	}
}

func TestCharsetsAndEncodings(t *testing.T) {
	e := newEnv(t, Options{}, storetest.Fixture{})
	latin := e.deliver(alice, "From: x@elsewhere.test\r\nTo: alice@example.test\r\nSubject: =?iso-8859-1?q?caf=E9?=\r\n"+
		"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nun caf=E9 cr=E8me=\r\n s'il vous pla=EEt\r\n")
	b64 := e.deliver(alice, "From: x@elsewhere.test\r\nTo: alice@example.test\r\nSubject: b64\r\n"+
		"Content-Type: text/html; charset=windows-1252\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
		base64.StdEncoding.EncodeToString([]byte("<p>\x93quoted\x94 \x80 5</p>"))+"\r\n")
	c := e.client()
	c.mustLogin(alice)
	if r := c.get(msgURL(latin)); !strings.Contains(r.body, "café") {
		t.Fatalf("subject not decoded")
	}
	if r := c.get(msgURL(latin) + "/body"); !strings.Contains(r.body, "un café crème s&#39;il vous plaît") {
		t.Fatalf("latin-1 QP body: %s", r.body)
	}
	if r := c.get(msgURL(b64) + "/body"); !strings.Contains(r.body, "“quoted” € 5") {
		t.Fatalf("windows-1252 base64 body: %s", r.body)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/box/3?page=2": "/box/3?page=2", "//evil.example/": "/", "/\\evil.example": "/", "/\t/evil.example": "/",
		"https://evil.example/": "/", "/login?next=/x": "/", "": "/", "/msg/1/2": "/msg/1/2", "/\n/evil": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLogoutEndsEventStream(t *testing.T) {
	e := newEnv(t, Options{EventsKeepAlive: 50 * time.Millisecond}, storetest.Fixture{})
	c := e.client()
	c.mustLogin(alice)
	req, _ := http.NewRequest("GET", e.ts.URL+"/events", nil)
	res, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, res.Body)
		close(done)
	}()
	tok := c.csrf("/settings")
	c.post("/logout", url.Values{"csrf": {tok}})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("event stream outlived the session")
	}
	if r := c.get("/events"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events after logout = %d", r.StatusCode)
	}
}
