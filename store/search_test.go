package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestExtractText(t *testing.T) {
	tests := []struct {
		file       string
		want, not  []string // substrings of body that must (not) be there
		addresses  []string // substrings of addresses
		subjectHas string
	}{
		{
			file:       "alternative.eml",
			want:       []string{"Café prices are up this week.", "Read more online.", "Read & enjoy"},
			not:        []string{"hidden", "Hidden title", "color", "PGh0bWw", "=E9", "Epilogue", "multi-part message"},
			addresses:  []string{"News news@example.test", "bob@example.test"},
			subjectHas: "Weekly news — issue 42",
		},
		{
			file:      "rfc822.eml",
			want:      []string{"See below.", "lunch.eml", "Lunch\n", "Alice Example alice@example.test", "Lunch on Friday?"},
			not:       []string{"<b>"},
			addresses: []string{"bob@example.test", "carol@example.test"},
		},
		{
			file: "rfc2231.eml",
			want: []string{"See attachment.", "€ rates.txt"},
			not:  []string{"binary"}, // application/octet-stream is not text
		},
		{
			file:      "simple.eml",
			want:      []string{"The café opens at noon."},
			addresses: []string{"Alice Example alice@example.test", "Bob bob@example.test", "carol@example.test", "Smith, Dave dave@example.test"},
		},
		{
			file: "mixed-attachment.eml",
			want: []string{"Please find the report attached.", "report.pdf"},
			not:  []string{"PDF-1.4", "JVBER"}, // application/pdf is not text
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := readMIME(t, tt.file)
			m := parseMessage(raw)
			subject, addresses, body := extractText(raw, &m)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(body, n) {
					t.Errorf("body has %q:\n%s", n, body)
				}
			}
			for _, w := range tt.addresses {
				if !strings.Contains(addresses, w) {
					t.Errorf("addresses lack %q:\n%s", w, addresses)
				}
			}
			if subject != m.Envelope.Subject || !strings.Contains(subject, tt.subjectHas) {
				t.Errorf("subject = %q", subject)
			}
		})
	}
}

func TestExtractTextCapsBody(t *testing.T) {
	line := strings.Repeat("äbc ", 25) + "\r\n"
	raw := []byte("Content-Type: text/plain; charset=utf-8\r\n\r\n" + strings.Repeat(line, (3*maxIndexText)/len(line)))
	m := parseMessage(raw)
	_, _, body := extractText(raw, &m)
	if len(body) > maxIndexText || len(body) < maxIndexText-4 || !utf8.ValidString(body) {
		t.Errorf("body of %d bytes (valid UTF-8: %v), want at most %d", len(body), utf8.ValidString(body), maxIndexText)
	}
	// HTML is capped too, however much markup surrounds the text.
	raw = []byte("Content-Type: text/html\r\n\r\n" + strings.Repeat("<div><span>word</span></div>\r\n", 400000))
	m = parseMessage(raw)
	_, _, body = extractText(raw, &m)
	if len(body) > maxIndexText || !strings.HasPrefix(body, "word\nword\n") {
		t.Errorf("html body of %d bytes starting %q", len(body), body[:min(len(body), 20)])
	}
}

func TestDecodeTransfer(t *testing.T) {
	tests := []struct {
		name, enc, in, want string
	}{
		{"base64 with line breaks and junk", "base64", "aGVs\r\nbG8g*d29y\nbGQ=", "hello world"},
		{"base64 concatenated blocks", "base64", "aGk=aGk=", "hihi"},
		{"base64 truncated", "base64", "aGVsbG", "hell"},
		{"qp soft breaks", "quoted-printable", "caf=C3=A9 =\r\nau lait=\nx", "café au laitx"},
		{"qp malformed escapes", "quoted-printable", "100% =ZZ =4", "100% =ZZ =4"},
		{"qp soft break with trailing space", "quoted-printable", "a= \r\nb", "ab"},
		{"7bit untouched", "7bit", "a=C3", "a=C3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(decodeTransfer([]byte(tt.in), tt.enc, 100)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if got := decodeTransfer([]byte("aGVsbG8gd29ybGQ="), "base64", 5); string(got) != "hello" {
		t.Errorf("capped base64 = %q", got)
	}
}

// searchFixture is a store with one account whose INBOX holds messages
// chosen to tell each search condition apart.
type searchFixture struct {
	st     *Store
	acct   *Account
	inbox  int64
	modseq int64 // of the flag change on UID 2
}

var searchMessages = []struct {
	raw   string
	flags []string
	date  time.Time
}{
	{ // UID 1
		raw: crlf(`From: Alice Example <alice@example.test>
To: Bob <bob@example.test>
Cc: "Carol Jones" <carol@example.test>
Subject: Quarterly report
Date: Mon, 2 Mar 2026 23:30:00 -0800
Message-ID: <r1@example.test>
X-Priority: 1
Content-Type: text/plain; charset=utf-8

The numbers look great this quarter. See you at the café.
`),
		flags: []string{FlagSeen, "work"},
		date:  time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC),
	},
	{ // UID 2
		raw: crlf(`From: Dave <dave@example.test>
To: bob@example.test
Bcc: secret@example.test
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from Berlin
Date: Thu, 5 Mar 2026 09:00:00 +0100
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/html; charset=utf-8

<p>Meeting <b>tomorrow</b> at noon</p><script>hidden words</script>
--b
Content-Type: application/pdf
Content-Disposition: attachment; filename=agenda.pdf
Content-Transfer-Encoding: base64

JVBERi0=
--b--
`),
		flags: []string{FlagFlagged, FlagAnswered},
		date:  time.Date(2026, 3, 5, 12, 0, 0, 0, time.UTC),
	},
	{ // UID 3: large, so its body is a file
		raw: crlf(`From: news@example.test
To: bob@example.test
Subject: Newsletter
Date: Tue, 10 Mar 2026 06:00:00 +0000
List-Id: Example news
 <news.example.test>
Content-Type: text/plain

`) + strings.Repeat("filler text line\r\n", 10000),
		flags: []string{"$Forwarded"},
		date:  time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC),
	},
	{ // UID 4: no Date:
		raw: crlf(`From: carl@example.test
To: bob@example.test
Subject: no date
Content-Type: text/plain

special_chars 100% off
`),
		flags: []string{FlagDeleted, FlagDraft},
		date:  time.Date(2026, 3, 11, 12, 0, 0, 0, time.UTC),
	},
}

func newSearchFixture(t testing.TB) *searchFixture {
	t.Helper()
	ctx := context.Background()
	st, err := Open(ctx, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	acct, err := st.CreateAccount(ctx, "bob@example.test", "secret password")
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(ctx, RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	f := &searchFixture{st: st, acct: acct, inbox: inbox.ID}
	for i, m := range searchMessages {
		d, err := st.Deliver(ctx, Delivery{Recipients: []string{"bob@example.test"}, Data: []byte(m.raw), Flags: m.flags, InternalDate: m.date})
		if err != nil {
			t.Fatal(err)
		}
		if d[0].UID != uint32(i+1) {
			t.Fatalf("message %d got UID %d", i+1, d[0].UID)
		}
	}
	changed, err := acct.SetFlags(ctx, inbox.ID, []uint32{2}, FlagsAdd, []string{"$Important"})
	if err != nil || len(changed) != 1 {
		t.Fatalf("set flags: %v %v", changed, err)
	}
	f.modseq = changed[0].ModSeq
	return f
}

func TestSearch(t *testing.T) {
	f := newSearchFixture(t)
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	hdr := func(k, v string) []HeaderMatch { return []HeaderMatch{{Key: k, Value: v}} }
	all := []uint32{1, 2, 3, 4}
	tests := []struct {
		name string
		c    SearchCriteria
		want []uint32
	}{
		{"everything", SearchCriteria{}, all},

		{"uid range", SearchCriteria{UIDs: []UIDSet{{{1, 2}}}}, []uint32{1, 2}},
		{"uid list", SearchCriteria{UIDs: []UIDSet{{{1, 1}, {3, 3}}}}, []uint32{1, 3}},
		{"uid 3:*", SearchCriteria{UIDs: []UIDSet{{{3, 0}}}}, []uint32{3, 4}},
		{"uid *", SearchCriteria{UIDs: []UIDSet{{{0, 0}}}}, []uint32{4}},
		{"uid 10:* is 4:10", SearchCriteria{UIDs: []UIDSet{{{10, 0}}}}, []uint32{4}},
		{"uid reversed range", SearchCriteria{UIDs: []UIDSet{{{2, 1}}}}, []uint32{1, 2}},
		{"uid sets intersect", SearchCriteria{UIDs: []UIDSet{{{1, 3}}, {{2, 4}}}}, []uint32{2, 3}},
		{"uid empty set", SearchCriteria{UIDs: []UIDSet{{}}}, nil},
		{"uid beyond", SearchCriteria{UIDs: []UIDSet{{{5, 9}}}}, nil},

		{"since", SearchCriteria{Since: day(2026, 3, 5)}, []uint32{2, 3, 4}},
		{"before", SearchCriteria{Before: day(2026, 3, 5)}, []uint32{1}},
		{"on", SearchCriteria{Since: day(2026, 3, 5), Before: day(2026, 3, 6)}, []uint32{2}},
		{"since ignores the time of day", SearchCriteria{Since: time.Date(2026, 3, 5, 23, 59, 0, 0, time.UTC)}, []uint32{2, 3, 4}},
		{"since in the server's location", SearchCriteria{Since: time.Date(2026, 3, 2, 0, 0, 0, 0, time.FixedZone("", -12*3600))}, []uint32{2, 3, 4}},

		{"sentsince uses the header's own zone", SearchCriteria{SentSince: day(2026, 3, 2), SentBefore: day(2026, 3, 3)}, []uint32{1}},
		{"sentsince", SearchCriteria{SentSince: day(2026, 3, 5)}, []uint32{2, 3}},
		{"sentbefore counts a missing date as old", SearchCriteria{SentBefore: day(2026, 3, 5)}, []uint32{1, 4}},

		{"larger", SearchCriteria{Larger: 100000}, []uint32{3}},
		{"smaller", SearchCriteria{Smaller: 100000}, []uint32{1, 2, 4}},

		{"seen", SearchCriteria{Flags: []string{FlagSeen}}, []uint32{1}},
		{"seen in any case", SearchCriteria{Flags: []string{`\SEEN`}}, []uint32{1}},
		{"unseen", SearchCriteria{NotFlags: []string{FlagSeen}}, []uint32{2, 3, 4}},
		{"answered and flagged", SearchCriteria{Flags: []string{FlagAnswered, FlagFlagged}}, []uint32{2}},
		{"deleted", SearchCriteria{Flags: []string{FlagDeleted}}, []uint32{4}},
		{"draft", SearchCriteria{Flags: []string{FlagDraft}}, []uint32{4}},
		{"undeleted", SearchCriteria{NotFlags: []string{FlagDeleted}}, []uint32{1, 2, 3}},
		{"keyword", SearchCriteria{Flags: []string{"work"}}, []uint32{1}},
		{"keyword in any case", SearchCriteria{Flags: []string{"WORK"}}, []uint32{1}},
		{"keyword with $", SearchCriteria{Flags: []string{"$Forwarded"}}, []uint32{3}},
		{"keyword is not a substring", SearchCriteria{Flags: []string{"wor"}}, nil},
		{"unkeyword", SearchCriteria{NotFlags: []string{"$Important"}}, []uint32{1, 3, 4}},
		{"recent is never set", SearchCriteria{Flags: []string{`\Recent`}}, nil},
		{"not recent is everything", SearchCriteria{NotFlags: []string{`\Recent`}}, all},

		{"subject", SearchCriteria{Header: hdr("Subject", "REPORT")}, []uint32{1}},
		{"subject decoded", SearchCriteria{Header: hdr("subject", "Grüße from")}, []uint32{2}},
		{"subject escapes LIKE wildcards", SearchCriteria{Header: hdr("Subject", "_")}, nil},
		{"subject empty matches all", SearchCriteria{Header: hdr("Subject", "")}, all},
		{"from name", SearchCriteria{Header: hdr("From", "alice exam")}, []uint32{1}},
		{"from address", SearchCriteria{Header: hdr("FROM", "DAVE@example.test")}, []uint32{2}},
		{"to", SearchCriteria{Header: hdr("To", "bob@example.test")}, all},
		{"to does not see cc", SearchCriteria{Header: hdr("To", "carol")}, nil},
		{"cc name", SearchCriteria{Header: hdr("Cc", "jones")}, []uint32{1}},
		{"cc angle address", SearchCriteria{Header: hdr("Cc", "<carol@")}, []uint32{1}},
		{"bcc", SearchCriteria{Header: hdr("Bcc", "secret")}, []uint32{2}},
		{"message-id", SearchCriteria{Header: hdr("Message-ID", "<r1@example.test>")}, []uint32{1}},
		{"other header", SearchCriteria{Header: hdr("X-Priority", "1")}, []uint32{1}},
		{"other header in a large message, folded", SearchCriteria{Header: hdr("list-id", "news <NEWS.example")}, []uint32{3}},
		{"other header present", SearchCriteria{Header: hdr("List-ID", "")}, []uint32{3}},
		{"other header absent", SearchCriteria{Header: hdr("X-Nothing", "")}, nil},
		{"header name is not a prefix", SearchCriteria{Header: hdr("X-Prio", "")}, nil},
		{"header in the body does not count", SearchCriteria{Header: hdr("Content-Type", "html")}, nil},

		{"body", SearchCriteria{Body: []string{"numbers"}}, []uint32{1}},
		{"body phrase", SearchCriteria{Body: []string{"numbers look"}}, []uint32{1}},
		{"body phrase in order", SearchCriteria{Body: []string{"look numbers"}}, nil},
		{"body prefix", SearchCriteria{Body: []string{"meet"}}, []uint32{2}},
		{"body html text", SearchCriteria{Body: []string{"tomorrow at noon"}}, []uint32{2}},
		{"body skips scripts", SearchCriteria{Body: []string{"hidden"}}, nil},
		{"body ignores diacritics", SearchCriteria{Body: []string{"cafe"}}, []uint32{1}},
		{"body attachment name", SearchCriteria{Body: []string{"agenda"}}, []uint32{2}},
		{"body is not the subject", SearchCriteria{Body: []string{"quarterly"}}, nil},
		{"body all strings", SearchCriteria{Body: []string{"numbers", "tomorrow"}}, nil},
		{"body FTS syntax is literal", SearchCriteria{Body: []string{`numbers" OR "tomorrow`}}, nil},
		{"body FTS operators are words", SearchCriteria{Body: []string{`NEAR(numbers) *`}}, nil},
		{"body empty matches all", SearchCriteria{Body: []string{""}}, all},
		{"body punctuation only matches all", SearchCriteria{Body: []string{"%!"}}, all},
		{"text covers subject", SearchCriteria{Text: []string{"quarterly"}}, []uint32{1}},
		{"text covers addresses", SearchCriteria{Text: []string{"secret@example.test"}}, []uint32{2}},
		{"text covers body", SearchCriteria{Text: []string{"filler"}}, []uint32{3}},

		{"modseq", SearchCriteria{ModSeq: f.modseq}, []uint32{2}},
		{"modseq 1", SearchCriteria{ModSeq: 1}, all},

		{"not", SearchCriteria{Not: []SearchCriteria{{Flags: []string{FlagSeen}}}}, []uint32{2, 3, 4}},
		{"not not", SearchCriteria{Not: []SearchCriteria{{Not: []SearchCriteria{{Flags: []string{FlagSeen}}}}}}, []uint32{1}},
		{"not empty", SearchCriteria{Not: []SearchCriteria{{}}}, nil},
		{"or", SearchCriteria{Or: [][2]SearchCriteria{{{Header: hdr("Subject", "report")}, {Flags: []string{FlagDeleted}}}}}, []uint32{1, 4}},
		{"two ors", SearchCriteria{Or: [][2]SearchCriteria{
			{{UIDs: []UIDSet{{{1, 1}}}}, {UIDs: []UIDSet{{{2, 2}}}}},
			{{UIDs: []UIDSet{{{2, 2}}}}, {UIDs: []UIDSet{{{3, 3}}}}},
		}}, []uint32{2}},
		{"combined", SearchCriteria{
			UIDs:     []UIDSet{{{1, 0}}},
			NotFlags: []string{FlagDeleted},
			Not:      []SearchCriteria{{Body: []string{"numbers"}}},
			Or:       [][2]SearchCriteria{{{Header: hdr("List-Id", "news")}, {Text: []string{"berlin"}}}},
		}, []uint32{2, 3}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.acct.Search(ctx, f.inbox, tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSearchErrors(t *testing.T) {
	f := newSearchFixture(t)
	ctx := context.Background()
	other, err := f.st.CreateAccount(ctx, "eve@example.test", "another password")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Search(ctx, f.inbox, SearchCriteria{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("search of another account's mailbox: %v, want ErrNotFound", err)
	}
	deep := SearchCriteria{Flags: []string{FlagSeen}}
	for range maxSearchDepth + 1 {
		deep = SearchCriteria{Not: []SearchCriteria{deep}}
	}
	if _, err := f.acct.Search(ctx, f.inbox, deep); !errors.Is(err, ErrInvalid) {
		t.Errorf("too deep: %v, want ErrInvalid", err)
	}
	wide := SearchCriteria{}
	for i := range maxSearchTerms + 1 {
		wide.Flags = append(wide.Flags, fmt.Sprintf("kw%d", i))
	}
	if _, err := f.acct.Search(ctx, f.inbox, wide); !errors.Is(err, ErrInvalid) {
		t.Errorf("too wide: %v, want ErrInvalid", err)
	}
}

// TestSearchAtTheLimits runs the largest criteria the limits allow: SQLite
// must accept the query.
func TestSearchAtTheLimits(t *testing.T) {
	f := newSearchFixture(t)
	ctx := context.Background()
	// Deepest nesting, each level as wide as the term budget allows.
	leaf := SearchCriteria{Flags: []string{"a", "b"}, Body: []string{"x"}, Header: []HeaderMatch{{"X-Y", "z"}}}
	c := leaf
	for range maxSearchDepth {
		c = SearchCriteria{Or: [][2]SearchCriteria{{c, leaf}}, NotFlags: []string{"q"}}
	}
	if err := checkCriteria(&c); err != nil {
		t.Fatalf("deep criteria rejected: %v", err)
	}
	if _, err := f.acct.Search(ctx, f.inbox, c); err != nil {
		t.Errorf("deepest search: %v", err)
	}
	// Widest flat search, with a UID set of many ranges.
	var wide SearchCriteria
	var set UIDSet
	for i := range 5000 {
		set = append(set, UIDRange{uint32(2*i + 1), uint32(2*i + 1)})
	}
	wide.UIDs = []UIDSet{set}
	for len(wide.Flags)+len(wide.UIDs)+7 < maxSearchTerms {
		wide.Flags = append(wide.Flags, `\Seen`)
	}
	got, err := f.acct.Search(ctx, f.inbox, wide)
	if err != nil {
		t.Fatalf("widest search: %v", err)
	}
	if !slices.Equal(got, []uint32{1}) {
		t.Errorf("widest search = %v, want [1]", got)
	}
}

// criteriaFromBytes builds a search tree from fuzz input: each byte picks
// a condition, the following bytes give its values.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) uint32() uint32 {
	return uint32(r.byte()) | uint32(r.byte())<<8 | uint32(r.byte())<<16 | uint32(r.byte())<<24
}

func (r *fuzzReader) string() string {
	n := int(r.byte() % 32)
	n = min(n, len(r.b))
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *fuzzReader) time() time.Time {
	return time.Unix(int64(int32(r.uint32()))*64, 0).In(time.FixedZone("", (int(r.byte())-128)*600))
}

var fuzzFlags = []string{FlagSeen, FlagAnswered, FlagFlagged, FlagDeleted, FlagDraft, `\Recent`, `\Other`, "$Forwarded", "work", "a_b%", ""}
var fuzzHeaders = []string{"Subject", "From", "To", "Cc", "Bcc", "Message-ID", "X-Priority", "List-Id", "", "Content-Type"}

func (r *fuzzReader) criteria(depth int) SearchCriteria {
	var c SearchCriteria
	for len(r.b) > 0 {
		switch op := r.byte() % 17; op {
		case 0:
			var set UIDSet
			for range r.byte() % 4 {
				set = append(set, UIDRange{r.uint32() % 8, r.uint32() % 8})
			}
			c.UIDs = append(c.UIDs, set)
		case 1:
			c.Since = r.time()
		case 2:
			c.Before = r.time()
		case 3:
			c.SentSince = r.time()
		case 4:
			c.SentBefore = r.time()
		case 5:
			c.Larger = int64(r.uint32())
		case 6:
			c.Smaller = int64(r.uint32())
		case 7:
			c.Flags = append(c.Flags, fuzzFlags[int(r.byte())%len(fuzzFlags)])
		case 8:
			c.NotFlags = append(c.NotFlags, r.string())
		case 9:
			c.Header = append(c.Header, HeaderMatch{fuzzHeaders[int(r.byte())%len(fuzzHeaders)], r.string()})
		case 10:
			c.Header = append(c.Header, HeaderMatch{r.string(), r.string()})
		case 11:
			c.Body = append(c.Body, r.string())
		case 12:
			c.Text = append(c.Text, r.string())
		case 13:
			c.ModSeq = int64(r.uint32()) - 1<<31
		case 14:
			if depth < maxSearchDepth+3 {
				c.Not = append(c.Not, r.criteria(depth+1))
			}
		case 15:
			if depth < maxSearchDepth+3 {
				c.Or = append(c.Or, [2]SearchCriteria{r.criteria(depth + 1), r.criteria(depth + 1)})
			}
		case 16:
			return c // end of this level
		}
	}
	return c
}

func FuzzSearchCriteria(f *testing.F) {
	fx := newSearchFixture(f)
	f.Add([]byte{})
	f.Add([]byte{0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0})
	f.Add([]byte("\x0b\x05a\" OR\x0c\x03x*)\x0e\x07\x01\x10\x0f\x09\x02\x03abc\x10\x0b\x02\x00\x00"))
	f.Add([]byte("\x0a\x04X-Pr\x011\x09\x06\x10<r1@ex\x0e\x0e\x0e\x0e\x07\x00\x10\x10\x10"))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzReader{b: data}
		c := r.criteria(0)
		headers := map[HeaderMatch][]uint32{}
		for i, h := range rawHeaderMatches(&c, nil) {
			headers[h] = []uint32{uint32(i + 1)}
		}
		query, args, err := searchQuery(fx.inbox, &c, headers)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || checkCriteria(&c) == nil {
				t.Fatalf("translation failed: %v", err)
			}
			return
		}
		if n := strings.Count(query, "?"); n != len(args) {
			t.Fatalf("%d placeholders, %d arguments in\n%s", n, len(args), query)
		}
		rows, err := fx.st.reader.QueryContext(ctx, query, args...)
		if err != nil {
			t.Fatalf("SQLite rejects the query: %v\n%s\n%v", err, query, args)
		}
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("query failed: %v\n%s\n%v", err, query, args)
		}
		rows.Close()
		if _, err := fx.acct.Search(ctx, fx.inbox, c); err != nil {
			t.Fatalf("search: %v", err)
		}
	})
}

func BenchmarkExtractText(b *testing.B) {
	inputs := map[string][]byte{
		"alternative.eml": readMIME(b, "alternative.eml"),
		"1MB text": []byte("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
			strings.Repeat("Caf=E9 au lait, s'il vous pla=EEt. The quick brown fox jumps over the lazy dog.\r\n", 1<<20/80)),
		"1MB html": []byte("Content-Type: text/html; charset=utf-8\r\n\r\n" +
			strings.Repeat("<div class=\"x\"><p>The <b>quick</b> brown fox &amp; the lazy dog.</p></div>\r\n", 1<<20/75)),
	}
	for name, raw := range inputs {
		m := parseMessage(raw)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				extractText(raw, &m)
			}
		})
	}
}
