package web

import (
	"bytes"
	"encoding/base64"
	"html"
	"slices"
	"strings"

	"github.com/microcosm-cc/bluemonday"
	xhtml "golang.org/x/net/html"
)

// newPolicy is the allow-list for HTML mail: bluemonday's policy for
// user-generated content (no script, no event handlers, no forms, no
// <base>, <meta>, <style>, <svg> or <iframe>, no javascript: or data:
// URLs), plus the presentational attributes and inline style properties
// mail layouts use, whose values bluemonday checks (no url(), no
// expressions). Relative URLs are refused: in mail they can only point at
// this server.
func newPolicy() *bluemonday.Policy {
	p := bluemonday.UGCPolicy()
	p.AllowRelativeURLs(false)
	p.AllowURLSchemes("http", "https", "mailto", "cid")
	p.RequireNoReferrerOnLinks(true)
	p.RequireNoFollowOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.AllowAttrs("align", "valign", "bgcolor", "width", "height", "border", "cellpadding", "cellspacing").
		OnElements("table", "tr", "td", "th", "tbody", "thead", "tfoot", "img", "div", "p", "center")
	p.AllowElements("center", "font")
	p.AllowAttrs("color", "size", "face").OnElements("font")
	p.AllowStyles("color", "background-color", "font-weight", "font-style", "font-size", "font-family",
		"text-align", "text-decoration", "vertical-align", "line-height", "white-space",
		"width", "max-width", "height", "margin", "margin-top", "margin-bottom", "margin-left", "margin-right",
		"padding", "padding-top", "padding-bottom", "padding-left", "padding-right",
		"border", "border-collapse", "display").Globally()
	return p
}

// frameDoc wraps a sanitized body in the document served to the sandboxed
// frame. Its own style sheet is inline; the frame's CSP allows inline
// style and nothing that runs.
func frameDoc(body string) []byte {
	var b bytes.Buffer
	b.WriteString(`<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">` +
		`<meta http-equiv="x-dns-prefetch-control" content="off">` +
		`<style>body{font:15px/1.45 system-ui,sans-serif;margin:8px;color:#111;overflow-wrap:anywhere}` +
		`img{max-width:100%;height:auto}pre{white-space:pre-wrap;font:14px/1.4 ui-monospace,monospace}` +
		`blockquote{margin:0 0 0 .5em;padding-left:.5em;border-left:2px solid #bbb}</style></head><body>`)
	b.WriteString(body)
	b.WriteString(`</body></html>`)
	return b.Bytes()
}

// textHTML renders a plain-text body: escaped, line breaks kept.
func textHTML(text string) string {
	return "<pre>" + html.EscapeString(strings.ReplaceAll(text, "\r\n", "\n")) + "</pre>"
}

// rewriteImages goes over sanitized HTML and decides each image's source:
// cid: references become data: URLs from inline (nil: dropped), remote
// images are dropped unless allowRemote, and anything else is removed.
// It reports how many remote images the message refers to.
func rewriteImages(sanitized string, allowRemote bool, inline func(cid string) (string, bool)) (string, int) {
	z := xhtml.NewTokenizer(strings.NewReader(sanitized))
	var out strings.Builder
	remote := 0
	for {
		tt := z.Next()
		if tt == xhtml.ErrorToken {
			break
		}
		tok := z.Token()
		if (tt == xhtml.StartTagToken || tt == xhtml.SelfClosingTagToken) && tok.Data == "img" {
			attrs := tok.Attr[:0]
			for _, a := range tok.Attr {
				if a.Key == "srcset" || a.Key == "background" {
					continue
				}
				if a.Key == "src" {
					v := strings.TrimSpace(a.Val)
					lower := strings.ToLower(v)
					switch {
					case strings.HasPrefix(lower, "cid:"):
						if d, ok := inline(v[4:]); ok {
							a.Val = d
						} else {
							continue
						}
					case strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://"):
						remote++
						if !allowRemote {
							continue
						}
					default:
						continue
					}
				}
				attrs = append(attrs, a)
			}
			if !slices.ContainsFunc(attrs, func(a xhtml.Attribute) bool { return a.Key == "src" }) &&
				!slices.ContainsFunc(attrs, func(a xhtml.Attribute) bool { return a.Key == "alt" }) {
				// A blocked image with an empty alt takes no room and shows
				// no broken-image icon.
				attrs = append(attrs, xhtml.Attribute{Key: "alt", Val: ""})
			}
			tok.Attr = attrs
		}
		out.WriteString(tok.String())
	}
	return out.String(), remote
}

func dataURL(typ string, b []byte) string {
	return "data:" + typ + ";base64," + base64.StdEncoding.EncodeToString(b)
}
