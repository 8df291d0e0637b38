package web

import (
	"net/url"
	"strings"
	"testing"
	"time"

	xhtml "golang.org/x/net/html"
)

// forbiddenTags may never come out of the sanitizer.
var forbiddenTags = map[string]bool{
	"script": true, "iframe": true, "frame": true, "object": true, "embed": true, "applet": true, "style": true,
	"svg": true, "math": true, "meta": true, "base": true, "form": true, "input": true, "button": true,
	"link": true, "video": true, "audio": true, "source": true, "noscript": true, "template": true,
}

// checkSafe fails if sanitized output could run script or load anything.
func checkSafe(t *testing.T, in, out string) {
	t.Helper()
	z := xhtml.NewTokenizer(strings.NewReader(out))
	for {
		tt := z.Next()
		if tt == xhtml.ErrorToken {
			return
		}
		if tt != xhtml.StartTagToken && tt != xhtml.SelfClosingTagToken {
			continue
		}
		tok := z.Token()
		if forbiddenTags[tok.Data] {
			t.Fatalf("tag <%s> survived\nin:  %q\nout: %q", tok.Data, in, out)
		}
		for _, a := range tok.Attr {
			v := strings.ToLower(strings.Join(strings.Fields(a.Val), ""))
			switch {
			case strings.HasPrefix(a.Key, "on"):
				t.Fatalf("handler %s survived\nin:  %q\nout: %q", a.Key, in, out)
			case a.Key == "style" && (strings.Contains(v, "url(") || strings.Contains(v, "expression") || strings.Contains(v, "\\")):
				t.Fatalf("style %q survived\nin:  %q\nout: %q", a.Val, in, out)
			case a.Key == "src" || a.Key == "srcset" || a.Key == "background" || a.Key == "poster" || a.Key == "action" || a.Key == "formaction":
				t.Fatalf("%s=%q survived with images blocked\nin:  %q\nout: %q", a.Key, a.Val, in, out)
			case a.Key == "href" && !safeScheme(a.Val):
				t.Fatalf("href %q survived\nin:  %q\nout: %q", a.Val, in, out)
			}
		}
	}
}

func safeScheme(href string) bool {
	u, err := url.Parse(strings.TrimSpace(href))
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "mailto":
		return true
	}
	return false
}

func sanitizeForTest(p *Server, in string) string {
	out, _ := rewriteImages(p.pol.Sanitize(in), false, func(string) (string, bool) { return "", false })
	return out
}

var sanitizeSeeds = []string{
	`<script>alert(1)</script>`,
	`<img src=x onerror=alert(1)>`,
	`<a href="javascript:alert(1)">x</a>`,
	`<a href="&#x6A;avascript:alert(1)">x</a>`,
	`<a href=" java	script:alert(1)">x</a>`,
	`<svg><script>alert(1)</script></svg>`,
	`<p style="background:url(http://x/)">x</p>`,
	`<p style="width: expression(alert(1))">x</p>`,
	`<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>`,
	`<noscript><p title="</noscript><img src=x onerror=alert(1)>">`,
	`<img src="http://tracker.example/x.gif" srcset="http://t/ 1x">`,
	`<base href="http://evil/"><a href="rel">x</a>`,
	`<form action="http://x"><input autofocus onfocus=alert(1)></form>`,
	`<table background="http://x/bg"><tr><td background="http://x/td">x</td></tr></table>`,
	`<a href="data:text/html,<script>alert(1)</script>">x</a>`,
	`<img src="cid:part1">`,
	`<<img src=x onerror=alert(1)>`,
	`<scr<script>ipt>alert(1)</scr</script>ipt>`,
	`<p style="color: red; font-weight: bold">ok</p><a href="https://example.org/">ok</a>`,
}

func TestSanitizeSeeds(t *testing.T) {
	srv := &Server{pol: newPolicy()}
	for _, s := range sanitizeSeeds {
		checkSafe(t, s, sanitizeForTest(srv, s))
	}
	out := sanitizeForTest(srv, sanitizeSeeds[len(sanitizeSeeds)-1])
	if !strings.Contains(out, `style="color: red; font-weight: bold"`) || !strings.Contains(out, `href="https://example.org/"`) {
		t.Fatalf("good markup lost: %s", out)
	}
}

// FuzzSanitize checks that whatever HTML a message carries, what reaches
// the frame has no script, no handlers, no dangerous URLs and nothing
// that loads before images are allowed.
func FuzzSanitize(f *testing.F) {
	for _, s := range sanitizeSeeds {
		f.Add(s)
	}
	srv := &Server{pol: newPolicy()}
	f.Fuzz(func(t *testing.T, in string) {
		start := time.Now()
		out := sanitizeForTest(srv, in)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("sanitizing %d bytes took %v", len(in), d)
		}
		checkSafe(t, in, out)
	})
}
