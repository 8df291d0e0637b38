package imap

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store/storetest"
)

func readMail(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "mail", name))
	if err != nil {
		t.Fatal(err)
	}
	return storetest.CRLF(string(b))
}

func TestCapabilitiesAfterLogin(t *testing.T) {
	ts := newTestServer(t, nil, func(o *Options) { o.AppendLimit = 1 << 20 })
	c := ts.login(t, alice, alicePass)
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []imap.Cap{
		imap.CapIMAP4rev2, imap.CapIMAP4rev1, imap.CapNamespace, imap.CapUIDPlus, imap.CapESearch,
		imap.CapSearchRes, imap.CapListExtended, imap.CapListStatus, imap.CapMove, imap.CapStatusSize,
		imap.CapChildren, imap.CapSpecialUse, imap.CapCreateSpecialUse, imap.CapBinary, "APPENDLIMIT=1048576",
		imap.CapLiteralPlus, imap.CapUnauthenticate, imap.CapIdle, imap.CapEnable, imap.CapUnselect, imap.CapSASLIR,
		imap.CapUTF8Accept,
	} {
		if !caps.Has(want) {
			t.Errorf("capability %s missing", want)
		}
	}
}

// NAMESPACE (RFC 2342): one personal namespace, "/" separator.
func TestNamespace(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.login(t, alice, alicePass)
	ns, err := c.Namespace().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Personal) != 1 || ns.Personal[0].Prefix != "" || ns.Personal[0].Delim != '/' || ns.Other != nil || ns.Shared != nil {
		t.Fatalf("NAMESPACE = %+v", ns)
	}
}

// UIDPLUS (RFC 4315): APPENDUID, COPYUID and UID EXPUNGE, which leaves
// \Deleted messages outside its set alone.
func TestUIDPlusAndMove(t *testing.T) {
	ts := newTestServer(t, testMessages(4))
	c := ts.login(t, alice, alicePass)
	c.mustSelect(t, "INBOX")
	archive, err := c.Status("Archive", &imap.StatusOptions{UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	cd, err := c.Copy(imap.SeqSetNum(1, 3), "Archive").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if cd.UIDValidity != archive.UIDValidity || cd.SourceUIDs.String() != "1,3" || cd.DestUIDs.String() != "1:2" {
		t.Fatalf("COPYUID = %+v", cd)
	}
	var ie *imap.Error
	if _, err := c.Copy(imap.SeqSetNum(1), "NoSuch").Wait(); !errors.As(err, &ie) || ie.Code != imap.ResponseCodeTryCreate {
		t.Fatalf("COPY to a missing mailbox: %v, want NO [TRYCREATE]", err)
	}

	if err := c.Store(imap.SeqSetNum(1, 2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	exp, err := c.UIDExpunge(imap.UIDSetNum(2)).Collect()
	if err != nil || !slices.Equal(exp, []uint32{2}) {
		t.Fatalf("UID EXPUNGE 2 = %v, %v", exp, err)
	}
	msgs := c.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true})
	if len(msgs) != 3 || msgs[0].UID != 1 || flagStrings(msgs[0].Flags) != `\Deleted` {
		t.Fatalf("after UID EXPUNGE: %+v", msgs)
	}

	// MOVE (RFC 6851): COPYUID, then EXPUNGE for the moved messages.
	md, err := c.Move(imap.UIDSetNum(3, 4), "Archive").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if md.UIDValidity != archive.UIDValidity || md.SourceUIDs.String() != "3:4" || md.DestUIDs.String() != "3:4" {
		t.Fatalf("MOVE COPYUID = %+v", md)
	}
	if n := c.Mailbox().NumMessages; n != 1 {
		t.Fatalf("after MOVE the client counts %d messages, want 1", n)
	}
	st, err := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 4 {
		t.Fatalf("Archive after MOVE: %+v, %v", st, err)
	}
}

// LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), CHILDREN (RFC 3348),
// SPECIAL-USE and CREATE-SPECIAL-USE (RFC 6154), subscriptions,
// STATUS=SIZE (RFC 8438), CREATE/RENAME/DELETE with hierarchy.
func TestMailboxesListStatus(t *testing.T) {
	ts := newTestServer(t, testMessages(2))
	c := ts.login(t, alice, alicePass)
	if err := c.Create("Work/2026/Q1", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Work", nil).Wait(); err == nil {
		t.Fatal("CREATE of an existing mailbox succeeded")
	}
	if err := c.Create("Old Sent", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrSent}}).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Weird", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrFlagged}}).Wait(); err == nil {
		t.Fatal("CREATE with an unsupported special use succeeded")
	}
	if err := c.Unsubscribe("Work/2026").Wait(); err != nil {
		t.Fatal(err)
	}

	list := func(ref, pattern string, opts *imap.ListOptions) map[string]*imap.ListData {
		t.Helper()
		l, err := c.List(ref, pattern, opts).Collect()
		if err != nil {
			t.Fatalf("LIST %q %q: %v", ref, pattern, err)
		}
		m := map[string]*imap.ListData{}
		for _, d := range l {
			m[d.Mailbox] = d
		}
		return m
	}
	has := func(d *imap.ListData, a imap.MailboxAttr) bool { return d != nil && slices.Contains(d.Attrs, a) }

	all := list("", "Work*", nil)
	if len(all) != 3 || !has(all["Work"], imap.MailboxAttrHasChildren) || !has(all["Work/2026/Q1"], imap.MailboxAttrHasNoChildren) {
		t.Fatalf("LIST Work* = %v", all)
	}
	if top := list("", "%", nil); top["Work"] == nil || top["Work/2026"] != nil || top["INBOX"] == nil {
		t.Fatalf("LIST %% = %v", top)
	}
	if sub := list("Work/", "%", nil); len(sub) != 1 || sub["Work/2026"] == nil {
		t.Fatalf("LIST Work/ %% = %v", sub)
	}
	if special := list("", "*", &imap.ListOptions{SelectSpecialUse: true}); len(special) != 6 || !has(special["Old Sent"], imap.MailboxAttrSent) {
		t.Fatalf("LIST (SPECIAL-USE) = %v", special)
	}
	subs := list("", "Work*", &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true})
	if subs["Work/2026"] == nil || subs["Work/2026"].ChildInfo == nil || !subs["Work/2026"].ChildInfo.Subscribed || !has(subs["Work"], imap.MailboxAttrSubscribed) {
		t.Fatalf("LIST (SUBSCRIBED RECURSIVEMATCH) = %+v", subs)
	}
	lsub, err := c.List("", "Work*", &imap.ListOptions{SelectSubscribed: true}).Collect()
	if err != nil || len(lsub) != 2 {
		t.Fatalf("LIST (SUBSCRIBED) = %v, %v", lsub, err)
	}
	withStatus := list("", "INBOX", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, NumUnseen: true, Size: true}})
	st := withStatus["INBOX"].Status
	if st == nil || *st.NumMessages != 2 || *st.NumUnseen != 2 || st.Size == nil || *st.Size == 0 {
		t.Fatalf("LIST RETURN (STATUS) = %+v", withStatus["INBOX"])
	}
	if d := list("", "", nil); len(d) != 1 || d[""] == nil || d[""].Delim != '/' {
		t.Fatalf(`LIST "" "" = %v`, d)
	}

	sd, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true, NumDeleted: true, Size: true, AppendLimit: true}).Wait()
	if err != nil || *sd.NumMessages != 2 || sd.UIDNext != 3 || sd.UIDValidity == 0 || *sd.NumDeleted != 0 || *sd.Size == 0 || *sd.AppendLimit != DefaultAppendLimit {
		t.Fatalf("STATUS = %+v, %v", sd, err)
	}

	// RENAME keeps UIDVALIDITY and takes the children along.
	before, err := c.Status("Work/2026/Q1", &imap.StatusOptions{UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rename("Work", "Jobs/Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	after, err := c.Status("Jobs/Work/2026/Q1", &imap.StatusOptions{UIDValidity: true}).Wait()
	if err != nil || after.UIDValidity != before.UIDValidity {
		t.Fatalf("after RENAME: %+v, %v (was %d)", after, err, before.UIDValidity)
	}
	var ie *imap.Error
	if err := c.Delete("Jobs/Work").Wait(); !errors.As(err, &ie) || ie.Code != imap.ResponseCodeHasChildren {
		t.Fatalf("DELETE of a parent: %v, want NO [HASCHILDREN]", err)
	}
	if err := c.Delete("INBOX").Wait(); err == nil {
		t.Fatal("DELETE INBOX succeeded")
	}
	if err := c.Delete("Jobs/Work/2026/Q1").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status("Jobs/Work/2026/Q1", &imap.StatusOptions{UIDValidity: true}).Wait(); !errors.As(err, &ie) || ie.Code != imap.ResponseCodeNonExistent {
		t.Fatalf("STATUS of a deleted mailbox: %v", err)
	}

	// RENAME INBOX moves its messages and leaves it empty (RFC 9051 §6.3.6).
	if err := c.Rename("INBOX", "Old Inbox", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	old, err := c.Status("Old Inbox", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *old.NumMessages != 2 {
		t.Fatalf("Old Inbox: %+v, %v", old, err)
	}
	inbox, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *inbox.NumMessages != 0 {
		t.Fatalf("INBOX after RENAME: %+v, %v", inbox, err)
	}
}

// BODYSTRUCTURE, body sections of nested parts and BINARY (RFC 3516).
func TestFetchStructureSectionsBinary(t *testing.T) {
	ts := newTestServer(t, []string{readMail(t, "mixed-attachment.eml"), readMail(t, "rfc822.eml")})
	c := ts.login(t, alice, alicePass)
	c.mustSelect(t, "INBOX")
	msgs := c.fetch(t, imap.SeqSetNum(1), &imap.FetchOptions{
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection: []*imap.FetchItemBodySection{
			{Part: []int{1}, Peek: true},
			{Part: []int{2}, Specifier: imap.PartSpecifierMIME, Peek: true},
			{Part: []int{2}, Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: 8}},
		},
		BinarySection:     []*imap.FetchItemBinarySection{{Part: []int{2}, Peek: true}},
		BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}},
	})
	m := msgs[0]
	mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || mp.Subtype != "mixed" || len(mp.Children) != 2 {
		t.Fatalf("BODYSTRUCTURE = %#v", m.BodyStructure)
	}
	pdf := mp.Children[1].(*imap.BodyStructureSinglePart)
	if pdf.MediaType() != "application/pdf" || pdf.Encoding != "base64" || pdf.Params["name"] != "report.pdf" ||
		pdf.ID != "<report@example.test>" || pdf.Description != "Quarterly report" ||
		pdf.Extended == nil || pdf.Extended.Disposition == nil || pdf.Extended.Disposition.Value != "attachment" {
		t.Fatalf("pdf part = %#v ext %#v", pdf, pdf.Extended)
	}
	sec := func(i int) string { return string(m.BodySection[i].Bytes) }
	if sec(0) != "Please find the report attached." {
		t.Errorf("BODY[1] = %q", sec(0))
	}
	if !strings.HasPrefix(sec(1), "Content-Type: application/pdf") || !strings.HasSuffix(sec(1), "\r\n\r\n") {
		t.Errorf("BODY[2.MIME] = %q", sec(1))
	}
	if sec(2) != "JVBERi0x" {
		t.Errorf("BODY[2]<0.8> = %q", sec(2))
	}
	want, _ := base64.StdEncoding.DecodeString("JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K")
	if len(m.BinarySection) != 1 || !bytes.Equal(m.BinarySection[0].Bytes, want) {
		t.Errorf("BINARY[2] = %+v, want %q", m.BinarySection, want)
	}
	if len(m.BinarySectionSize) != 1 || m.BinarySectionSize[0].Size != uint32(len(want)) {
		t.Errorf("BINARY.SIZE[2] = %+v, want %d", m.BinarySectionSize, len(want))
	}

	// A forwarded message: its part 2 is message/rfc822 with its own
	// envelope and parts.
	msgs = c.fetch(t, imap.SeqSetNum(2), &imap.FetchOptions{
		BodyStructure: &imap.FetchItemBodyStructure{Extended: false},
		BodySection: []*imap.FetchItemBodySection{
			{Part: []int{2}, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "message-id"}, Peek: true},
			{Part: []int{2, 1}, Peek: true},
			{Part: []int{2, 2}, Peek: true},
			{Part: []int{2}, Specifier: imap.PartSpecifierText, Peek: true},
			{Part: []int{9}, Peek: true},
		},
	})
	m = msgs[0]
	fwd := m.BodyStructure.(*imap.BodyStructureMultiPart).Children[1].(*imap.BodyStructureSinglePart)
	if fwd.MessageRFC822 == nil || fwd.MessageRFC822.Envelope.Subject != "Lunch" || fwd.MessageRFC822.Envelope.MessageID != "lunch.1@example.test" {
		t.Fatalf("message/rfc822 part = %#v", fwd)
	}
	inner := fwd.MessageRFC822.BodyStructure.(*imap.BodyStructureMultiPart)
	if inner.Subtype != "alternative" || len(inner.Children) != 2 {
		t.Fatalf("inner structure = %#v", inner)
	}
	if got := string(m.BodySection[0].Bytes); got != "Subject: Lunch\r\nMessage-ID: <lunch.1@example.test>\r\n\r\n" {
		t.Errorf("BODY[2.HEADER.FIELDS] = %q", got)
	}
	if got := string(m.BodySection[1].Bytes); got != "Lunch on Friday?" {
		t.Errorf("BODY[2.1] = %q", got)
	}
	if got := string(m.BodySection[2].Bytes); got != "<b>Lunch</b> on Friday?" {
		t.Errorf("BODY[2.2] = %q", got)
	}
	if got := string(m.BodySection[3].Bytes); !strings.HasPrefix(got, "--sub\r\n") {
		t.Errorf("BODY[2.TEXT] = %q", got)
	}
	if got := m.BodySection[4].Bytes; len(got) != 0 {
		t.Errorf("BODY[9] = %q, want empty", got)
	}
}

// UNSELECT leaves \Deleted messages; CLOSE expunges them, but not in a
// mailbox opened with EXAMINE, where STORE is refused.
func TestUnselectCloseExamine(t *testing.T) {
	ts := newTestServer(t, testMessages(3))
	c := ts.login(t, alice, alicePass)
	c.mustSelect(t, "INBOX")
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err == nil {
		t.Fatal("STORE in an EXAMINEd mailbox succeeded")
	}
	// Fetching a body in read-only mode does not set \Seen.
	msgs := c.fetch(t, imap.SeqSetNum(2), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}})
	if len(msgs[0].Flags) != 0 {
		t.Fatalf("EXAMINE fetch set flags %v", msgs[0].Flags)
	}
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumDeleted: true}).Wait()
	if err != nil || *st.NumMessages != 3 || *st.NumDeleted != 1 {
		t.Fatalf("after CLOSE of EXAMINE: %+v, %v", st, err)
	}
	c.mustSelect(t, "INBOX")
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Fatal(err)
	}
	st, err = c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumDeleted: true}).Wait()
	if err != nil || *st.NumMessages != 2 || *st.NumDeleted != 0 {
		t.Fatalf("after CLOSE: %+v, %v", st, err)
	}
}

// UTF8=ACCEPT (RFC 6855): after ENABLE, mailbox names travel as UTF-8.
func TestUTF8Accept(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.login(t, alice, alicePass)
	if err := c.Create("Reçus/Été", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enable(imap.CapUTF8Accept).Wait(); err != nil {
		t.Fatal(err)
	}
	l, err := c.List("", "Re*", nil).Collect()
	if err != nil || len(l) != 2 || l[1].Mailbox != "Reçus/Été" {
		t.Fatalf("LIST after ENABLE UTF8=ACCEPT: %+v, %v", l, err)
	}
	if _, err := c.Select("Reçus/Été", nil).Wait(); err != nil {
		t.Fatal(err)
	}
}

// A session whose selected mailbox is deleted by another gets BYE
// (RFC 9051 §7.1.5 allows it; the mailbox and its UIDs are gone).
func TestSelectedMailboxDeletedElsewhere(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.login(t, alice, alicePass)
	if err := a.Create("Doomed", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	a.mustSelect(t, "Doomed")
	b := ts.login(t, alice, alicePass)
	if err := b.Delete("Doomed").Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("session on a deleted mailbox still open")
	}
	// A new mailbox of the same name starts afresh.
	if err := b.Create("Doomed", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if sel := b.mustSelect(t, "Doomed"); sel.NumMessages != 0 {
		t.Fatalf("recreated mailbox: %+v", sel)
	}
}

// INBOX is case-insensitive, also as a parent name and in LIST patterns.
func TestInboxAnyCase(t *testing.T) {
	ts := newTestServer(t, testMessages(1))
	c := ts.login(t, alice, alicePass)
	if err := c.Create("inbox/Receipts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	l, err := c.List("", "inbox*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range l {
		names = append(names, d.Mailbox)
	}
	if !slices.Equal(names, []string{"INBOX", "INBOX/Receipts"}) {
		t.Fatalf(`LIST "" "inbox*" = %v`, names)
	}
	if sel := c.mustSelect(t, "Inbox"); sel.NumMessages != 1 {
		t.Fatalf("SELECT Inbox = %+v", sel)
	}
}
