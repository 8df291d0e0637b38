package web

// Real-browser tests: headless Chromium driven by chromedp against the
// webmail on loopback, with mail arriving through the real SMTP server.
// They skip when Chromium is missing, except in CI (CI=true), where a
// missing browser fails the test.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	netsmtp "net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"mailbox/smtp"
	"mailbox/store"
	"mailbox/store/storetest"
)

type css = chromedp.CSS

// chromium finds the browser, or skips (fails in CI).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not installed; CI must install the Debian package chromium")
	}
	t.Skip("chromium not installed")
	return ""
}

// newBrowser starts a headless Chromium with an empty profile and returns
// a tab's context, bounded by timeout.
func newBrowser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS polls a JavaScript predicate until it is true, across page
// navigations (a poll inside the page would not survive one).
func waitJS(t *testing.T, ctx context.Context, js string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+js+")"))
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("location.href + ' ' + (document.activeElement && document.activeElement.id) + ' ' + (document.getElementById('q') ? document.getElementById('q').value : '')"))
	t.Fatalf("waiting for %s: timed out (%v) at %s", js, lastErr, loc)
}

// startSMTP runs the inbound SMTP server (MX mode) over the store and
// returns a function that sends one message through it.
func startSMTP(t *testing.T, st *store.Store) func(from, to string, raw string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.New(smtp.Options{Store: st, Logger: testLogger(t)})
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return func(from, to, raw string) {
		t.Helper()
		if err := netsmtp.SendMail(ln.Addr().String(), nil, from, []string{to}, []byte(storetest.CRLF(raw))); err != nil {
			t.Fatalf("smtp send: %v", err)
		}
	}
}

func browserLogin(t *testing.T, ctx context.Context, base, addr string) {
	t.Helper()
	run(t, ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(css("#address")),
		chromedp.SendKeys(css("#address"), addr),
		chromedp.SendKeys(css("#password"), pass),
		chromedp.Click(css("form button[type=submit]")),
		chromedp.WaitVisible(css("#listform")),
	)
}

func TestBrowserWebmail(t *testing.T) {
	ctx := newBrowser(t, 3*time.Minute)
	e := newEnv(t, Options{}, storetest.Fixture{})
	send := startSMTP(t, e.st)
	base := e.ts.URL
	// Our own pages must not trip their Content-Security-Policy (inline
	// style or script would); violations are kept across navigations.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `document.addEventListener('securitypolicyviolation', function (e) {
			var v = JSON.parse(sessionStorage.getItem('csp') || '[]');
			v.push(location.pathname + ': ' + e.violatedDirective + ' ' + e.blockedURI);
			sessionStorage.setItem('csp', JSON.stringify(v));
		});`}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('csp') || ''`)); err == nil && v != "" {
			t.Errorf("CSP violations on our pages: %s", v)
		}
	})
	browserLogin(t, ctx, base, alice)

	t.Run("live delivery by SMTP", func(t *testing.T) {
		eval[bool](t, ctx, `window.__noReload = true`)
		send(bob, alice, storetest.Message("Bob <bob@example.test>", alice, "Live subject", "the pineapple plan\nsecond line"))
		waitJS(t, ctx, `document.getElementById('msgs') && document.getElementById('msgs').innerText.includes('Live subject')`, 15*time.Second)
		if !eval[bool](t, ctx, `window.__noReload === true`) {
			t.Fatal("the page reloaded")
		}
		if n := eval[string](t, ctx, `document.querySelector('#folders [aria-current] .count').textContent`); n != "1" {
			t.Fatalf("unread count = %q", n)
		}
		// A flag change and a deletion made elsewhere (IMAP, POP3, another
		// tab: all go through the store) show up too.
		send(bob, alice, storetest.Message("Bob <bob@example.test>", alice, "Doomed subject", "to be removed"))
		waitJS(t, ctx, `document.getElementById('msgs').innerText.includes('Doomed subject')`, 15*time.Second)
		inbox := e.box(alice, store.RoleInbox)
		msgs := e.messages(alice, store.RoleInbox)
		acct := e.account(alice)
		if _, err := acct.SetFlags(context.Background(), inbox.ID, []uint32{msgs[0].UID}, store.FlagsAdd, []string{store.FlagFlagged}); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, fmt.Sprintf(`document.querySelector('#msgs tr[data-uid="%d"]').classList.contains('flagged')`, msgs[0].UID), 15*time.Second)
		if _, err := acct.Expunge(context.Background(), inbox.ID, []uint32{msgs[1].UID}); err != nil {
			t.Fatal(err)
		}
		waitJS(t, ctx, `!document.getElementById('msgs').innerText.includes('Doomed subject')`, 15*time.Second)
		if !eval[bool](t, ctx, `window.__noReload === true`) {
			t.Fatal("the page reloaded")
		}
	})

	t.Run("open and reply", func(t *testing.T) {
		run(t, ctx,
			chromedp.Click(css("#msgs td.subj a")),
			chromedp.WaitVisible(css("iframe#body")),
			chromedp.Click(css("#reply")),
			chromedp.WaitVisible(css("textarea#body")),
		)
		if v := eval[string](t, ctx, `document.getElementById('to').value`); !strings.Contains(v, bob) {
			t.Fatalf("reply To = %q", v)
		}
		run(t, ctx,
			chromedp.Focus(css("textarea#body")),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('body').setSelectionRange(0,0)`),
			chromedp.SendKeys(css("textarea#body"), "Sounds good."),
			chromedp.Click(css("#send")),
			chromedp.WaitVisible(css("#listform")),
		)
		got := e.messages(bob, store.RoleInbox)
		sent := e.messages(alice, store.RoleSent)
		if len(got) != 1 || len(sent) != 1 || !strings.Contains(e.raw(bob, got[0]), "Sounds good.") || !strings.Contains(e.raw(bob, got[0]), "Re: Live subject") {
			t.Fatalf("reply: bob has %d, alice sent %d", len(got), len(sent))
		}
	})

	t.Run("attach and download", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "data.bin")
		want := bytes.Repeat([]byte("\x00\x01binary\xff\r\n"), 3000)
		if err := os.WriteFile(file, want, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, ctx,
			chromedp.Navigate(base+"/compose"),
			chromedp.WaitVisible(css("#to")),
			chromedp.SendKeys(css("#to"), alice),
			chromedp.SendKeys(css("#subject"), "File for you"),
			chromedp.SendKeys(css("textarea#body"), "attached"),
			chromedp.SetUploadFiles(css("#attach"), []string{file}),
			chromedp.Click(css("#send")),
			chromedp.WaitVisible(css("#listform")),
		)
		inbox := e.messages(alice, store.RoleInbox)
		last := inbox[len(inbox)-1]
		dir := t.TempDir()
		if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
		run(t, ctx,
			chromedp.Navigate(base+msgURL(store.Delivered{MailboxID: last.MailboxID, UID: last.UID})),
			chromedp.WaitVisible(css(".attachments a")),
			chromedp.Click(css(".attachments a")),
		)
		var guid string
		for ev, err := range progress {
			if err != nil {
				t.Fatal(err)
			}
			if ev.State == browser.DownloadProgressStateCompleted {
				guid = ev.GUID
				break
			}
			if ev.State == browser.DownloadProgressStateCanceled {
				t.Fatal("download cancelled")
			}
		}
		got, err := os.ReadFile(filepath.Join(dir, guid))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("downloaded %d bytes, differ from the %d sent", len(got), len(want))
		}
	})

	t.Run("search by a word of the body", func(t *testing.T) {
		run(t, ctx,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(css("#listform")),
			chromedp.KeyEvent("/"),
		)
		if id := eval[string](t, ctx, `document.activeElement.id`); id != "q" {
			t.Fatalf("/ focused %q, not the search box", id)
		}
		// CDP sends the key's character separately from keydown, so the
		// "/" lands in the box although the page cancelled the keydown (a
		// real keyboard does not do that); start from an empty box.
		run(t, ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('q').value = ''`), chromedp.SendKeys(css("#q"), "pineapple\r"))
		waitJS(t, ctx, `location.search.includes('q=pineapple') && document.readyState === 'complete'`, 10*time.Second)
		text := eval[string](t, ctx, `document.getElementById('main').innerText`)
		if !strings.Contains(text, "Live subject") || strings.Contains(text, "File for you") || !strings.Contains(text, "1 found") {
			t.Fatalf("search results: %s", text)
		}
	})

	t.Run("keyboard", func(t *testing.T) {
		run(t, ctx,
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(css("#msgs")),
			chromedp.KeyEvent("j"),
			chromedp.KeyEvent("o"),
		)
		waitJS(t, ctx, `location.pathname.startsWith('/msg/')`, 10*time.Second)
		run(t, ctx, chromedp.WaitVisible(css("#reply")), chromedp.KeyEvent("c"))
		waitJS(t, ctx, `location.pathname === '/compose'`, 10*time.Second)
	})

	t.Run("phone", func(t *testing.T) {
		for i := range 5 {
			e.deliver(alice, storetest.Message("A very long sender name indeed <long@elsewhere.test>", alice,
				fmt.Sprintf("A rather long subject line that has to wrap on a small phone screen %d", i), "x"))
		}
		run(t, ctx,
			chromedp.EmulateViewport(375, 740, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulateScale(2)),
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(css("#msgs")),
		)
		if !eval[bool](t, ctx, `document.documentElement.scrollWidth <= window.innerWidth + 1`) {
			t.Fatalf("page scrolls sideways: %v > %v", eval[float64](t, ctx, `document.documentElement.scrollWidth`), eval[float64](t, ctx, `window.innerWidth`))
		}
		// Subjects are visible and wide enough to read; the action buttons
		// and the Write button are on screen.
		if w := eval[float64](t, ctx, `document.querySelector('#msgs td.subj').getBoundingClientRect().width`); w < 250 {
			t.Fatalf("subject column only %vpx wide", w)
		}
		for _, sel := range []string{"#compose", `a[href="/settings"]`, `a[href="/folders"]`, "#q", "#delete"} {
			if !eval[bool](t, ctx, `(function(){var r=document.querySelector('`+sel+`').getBoundingClientRect(); return r.width>0 && r.left>=0 && r.right<=window.innerWidth})()`) {
				t.Fatalf("%s not on screen", sel)
			}
		}
		run(t, ctx, chromedp.Click(css("#msgs td.subj a")), chromedp.WaitVisible(css("iframe#body")))
		if !eval[bool](t, ctx, `document.documentElement.scrollWidth <= window.innerWidth + 1`) {
			t.Fatal("message page scrolls sideways")
		}
		run(t, ctx, chromedp.ResetViewport())
	})
}

func ptr[T any](v T) *T { return &v }

// recorder is a loopback HTTP server that notes every request: a
// hostile message that manages to load anything, or to run script that
// phones home, shows up here.
type recorder struct {
	mu   sync.Mutex
	reqs []string
	ts   *httptest.Server
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.URL.Path)
		rec.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, ".gif") {
			w.Header().Set("Content-Type", "image/gif")
			w.Write([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
		}
	}))
	t.Cleanup(rec.ts.Close)
	return rec
}

func (rec *recorder) seen() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.reqs...)
}

// hostileCorpus returns messages that try to run script or load remote
// content in every way we know. P is the payload a script would run: it
// tells the parent page and phones home.
func hostileCorpus(rec string) map[string]string {
	p := `parent.postMessage('pwned','*');top.postMessage('pwned','*');new Image().src='` + rec + `/ran.gif';fetch('` + rec + `/ran-fetch')`
	html := map[string]string{
		"script":         `<script>` + p + `</script><p>text</p>`,
		"onerror":        `<img src=x onerror="` + p + `"><img src="cid:missing" onerror="` + p + `">`,
		"onload":         `<body onload="` + p + `"><p>x</p></body>`,
		"svg":            `<svg onload="` + p + `"><script>` + p + `</script><image href="` + rec + `/svgimage.gif"/></svg>`,
		"frames":         `<iframe src="data:text/html,<script>` + p + `</script>"></iframe><iframe srcdoc="<script>` + p + `</script>"></iframe><iframe src="` + rec + `/frame"></iframe>`,
		"object":         `<object data="data:text/html,<script>` + p + `</script>"></object><embed src="` + rec + `/embed"><applet code="x"></applet>`,
		"meta refresh":   `<meta http-equiv="refresh" content="0;url=` + rec + `/refresh"><meta http-equiv="refresh" content="0;url=javascript:` + p + `">`,
		"base":           `<base href="` + rec + `/"><img src="relative.gif"><a href="rel">rel</a>`,
		"css":            `<link rel="stylesheet" href="` + rec + `/css"><style>@import url(` + rec + `/import); body{background:url(` + rec + `/bg.gif)} p{behavior:url(x.htc)}</style><p>styled</p>`,
		"inline style":   `<div style="background-image:url(` + rec + `/inline.gif);width:expression(` + p + `)">x</div><p style="color:red;background:url('` + rec + `/bg2.gif')">y</p>`,
		"form":           `<form action="` + rec + `/form" method="post"><input name=a autofocus onfocus="` + p + `"><button formaction="javascript:` + p + `">go</button></form>`,
		"media":          `<img srcset="` + rec + `/srcset.gif 1x"><video poster="` + rec + `/poster.gif" src="` + rec + `/video"></video><audio src="` + rec + `/audio"></audio><table background="` + rec + `/tbg.gif"><tr><td background="` + rec + `/tdbg.gif">x</td></tr></table><input type="image" src="` + rec + `/input.gif">`,
		"events":         `<details open ontoggle="` + p + `">x</details><marquee onstart="` + p + `">m</marquee><div onmouseover="` + p + `">hover</div>`,
		"malformed":      `<scr<script>ipt>` + p + `</scr</script>ipt><<img src=x onerror="` + p + `">><img """><script>` + p + `</script>"><a href="<img src=x onerror=` + p + `>">n</a>`,
		"noscript":       `<noscript><p title="</noscript><img src=x onerror=` + p + `>"></noscript>`,
		"mxss":           `<math><mtext><table><mglyph><style><img src=x onerror="` + p + `"></style></mglyph></table></mtext></math>`,
		"javascript url": `<a href="javascript:` + p + `">a</a><a href="JaVaScRiPt:` + p + `">b</a><a href="&#106;avascript:` + p + `">c</a><a href="data:text/html,<script>` + p + `</script>">d</a><a href="vbscript:x">e</a>`,
		"prefetch":       `<link rel=prefetch href="` + rec + `/prefetch"><link rel=dns-prefetch href="` + rec + `"><link rel=preload as=image href="` + rec + `/preload.gif">`,
		"tracker":        `<p>Newsletter</p><img src="` + rec + `/tracker.gif" width=1 height=1>`,
		"nested":         strings.Repeat("<div><table><tr><td><b><i>", 300) + "deep" + `<script>` + p + `</script>`,
	}
	msgs := map[string]string{}
	for name, body := range html {
		msgs[name] = "From: Spammer <spam@elsewhere.test>\nTo: alice@example.test\nSubject: hostile " + name +
			"\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n" + body + "\n"
	}
	msgs["utf-7"] = "From: spam@elsewhere.test\nTo: alice@example.test\nSubject: hostile utf-7\nContent-Type: text/html; charset=utf-7\n\n+ADw-script+AD4-" + p + "+ADw-/script+AD4-\n"
	msgs["plain text"] = "From: spam@elsewhere.test\nTo: alice@example.test\nSubject: hostile plain text\nContent-Type: text/plain\n\n<script>" + p + "</script><img src=x onerror=\"" + p + "\">\n"
	msgs["headers"] = "From: \"<img src=x onerror=" + p + ">\" <spam@elsewhere.test>\nTo: \"</title><script>" + p + "</script>\" <alice@example.test>\n" +
		"Subject: <script>" + p + "</script> =?utf-8?b?PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==?=\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\nsee attachments\n--b\nContent-Type: text/html\nContent-Disposition: attachment; filename=\"<img src=x onerror=" + p + ">.html\"\n\n<script>" + p + "</script>\n" +
		"--b\nContent-Type: image/svg+xml; name=\"\\\"><script>x</script>.svg\"\nContent-ID: <svg1>\n\n<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"" + p + "\"><script>" + p + "</script></svg>\n--b--\n"
	msgs["alternative"] = "From: spam@elsewhere.test\nTo: alice@example.test\nSubject: hostile alternative\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=a\n\n" +
		"--a\nContent-Type: text/plain\n\nplain <script>" + p + "</script>\n--a\nContent-Type: text/html\n\n<p>rich</p><script>" + p + "</script><img src=\"" + rec + "/alt.gif\"><img src=\"cid:svg1\">\n--a--\n"
	return msgs
}

// TestBrowserHostileMail delivers the hostile corpus by SMTP and opens
// every message in the browser: no script may run, and nothing may be
// requested from outside until the user allows images; after that, only
// the images load, and still no script runs.
func TestBrowserHostileMail(t *testing.T) {
	ctx := newBrowser(t, 4*time.Minute)
	rec := newRecorder(t)
	e := newEnv(t, Options{}, storetest.Fixture{})
	send := startSMTP(t, e.st)
	corpus := hostileCorpus(rec.ts.URL)
	for _, raw := range corpus {
		send("spam@elsewhere.test", alice, raw)
	}
	// Record messages posted to our page (a script in the frame would
	// post one) in every document the tab loads.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__pwned = []; window.addEventListener('message', function (e) { window.__pwned.push(String(e.data)); });`}); err != nil {
		t.Fatal(err)
	}
	// Positive control: the same payload in an unprotected frame is seen
	// by both detectors, so silence later means nothing ran.
	payload := strings.TrimSuffix(strings.TrimPrefix(corpus["script"][strings.Index(corpus["script"], "<script>"):], "<script>"), "</script><p>text</p>\n")
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<iframe srcdoc="<script>%s</script>"></iframe>`, strings.ReplaceAll(payload, `"`, "&quot;"))
	}))
	defer control.Close()
	run(t, ctx, chromedp.Navigate(control.URL))
	waitJS(t, ctx, `window.__pwned && window.__pwned.length > 0`, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); !containsPath(rec.seen(), "/ran.gif") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if !containsPath(rec.seen(), "/ran.gif") {
		t.Fatalf("control: the recorder saw %v", rec.seen())
	}
	time.Sleep(300 * time.Millisecond) // let the control's fetch arrive too
	rec.mu.Lock()
	rec.reqs = nil
	rec.mu.Unlock()

	base := e.ts.URL
	browserLogin(t, ctx, base, alice)
	msgs := e.messages(alice, store.RoleInbox)
	if len(msgs) != len(corpus) {
		t.Fatalf("%d messages delivered, want %d", len(msgs), len(corpus))
	}
	checkClean := func(what string) {
		t.Helper()
		if got := eval[[]string](t, ctx, `window.__pwned || []`); len(got) > 0 {
			t.Fatalf("%s: script ran in the message frame: %v", what, got)
		}
		if got := eval[string](t, ctx, `document.title`); got == "pwned" {
			t.Fatalf("%s: page title changed by message", what)
		}
		if reqs := rec.seen(); len(reqs) > 0 {
			t.Fatalf("%s: remote requests before images were allowed: %v", what, reqs)
		}
	}
	var trackerURL string
	for _, m := range msgs {
		u := base + msgURL(store.Delivered{MailboxID: m.MailboxID, UID: m.UID})
		run(t, ctx, chromedp.Navigate(u), chromedp.WaitVisible(css("iframe#body")))
		// Wait until the frame has loaded, then give any script time to run.
		waitJS(t, ctx, `performance.getEntriesByType('resource').some(function (e) { return e.name.indexOf('/body') > 0 && e.responseEnd > 0 })`, 10*time.Second)
		run(t, ctx, chromedp.Sleep(300*time.Millisecond))
		subject := eval[string](t, ctx, `document.querySelector('article h1').textContent`)
		checkClean(subject)
		if strings.Contains(subject, "tracker") {
			trackerURL = u
		}
		// The frame document itself, opened on its own, runs nothing either.
		run(t, ctx, chromedp.Navigate(u+"/body"), chromedp.Sleep(200*time.Millisecond))
		checkClean(subject + " (frame document opened directly)")
	}
	// The list page with every hostile subject and sender.
	run(t, ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#msgs")), chromedp.Sleep(300*time.Millisecond))
	checkClean("message list")
	if n := eval[int](t, ctx, `document.querySelectorAll('#msgs tbody tr').length`); n != len(corpus) {
		t.Fatalf("list shows %d rows, want %d", n, len(corpus))
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('main img, main script, main svg').length`); n != 0 {
		t.Fatalf("markup from headers in the list: %d elements", n)
	}

	// Allowing images loads the tracker, and still runs nothing.
	run(t, ctx, chromedp.Navigate(trackerURL), chromedp.WaitVisible(css("#showimages")), chromedp.Click(css("#showimages")))
	deadline := time.Now().Add(10 * time.Second)
	for !containsPath(rec.seen(), "/tracker.gif") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	run(t, ctx, chromedp.Sleep(300*time.Millisecond))
	reqs := rec.seen()
	if !containsPath(reqs, "/tracker.gif") {
		t.Fatalf("allowed image not loaded: %v", reqs)
	}
	for _, r := range reqs {
		if r != "/tracker.gif" {
			t.Fatalf("unexpected request after allowing images: %v", reqs)
		}
	}
	if got := eval[[]string](t, ctx, `window.__pwned || []`); len(got) > 0 {
		t.Fatalf("script ran after allowing images: %v", got)
	}
}

func containsPath(reqs []string, p string) bool {
	for _, r := range reqs {
		if r == p {
			return true
		}
	}
	return false
}
