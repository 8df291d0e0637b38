package imap

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestLoginListSelectFetch(t *testing.T) {
	ts := newTestServer(t, testMessages(3))
	c := ts.dial(t)
	if err := c.Login(alice, "wrong").Wait(); err == nil {
		t.Fatal("login with a wrong password succeeded")
	} else {
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeAuthenticationFailed {
			t.Fatalf("wrong password: %v, want NO [AUTHENTICATIONFAILED]", err)
		}
	}
	if err := c.Login(alice, alicePass).Wait(); err != nil {
		t.Fatal(err)
	}

	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range list {
		var attrs []string
		for _, a := range l.Attrs {
			attrs = append(attrs, string(a))
		}
		got[l.Mailbox] = strings.Join(attrs, " ")
		if l.Delim != '/' {
			t.Errorf("%s: delimiter %q", l.Mailbox, l.Delim)
		}
	}
	for name, attr := range map[string]string{"INBOX": "", "Sent": `\Sent`, "Drafts": `\Drafts`, "Trash": `\Trash`, "Junk": `\Junk`, "Archive": `\Archive`} {
		a, ok := got[name]
		if !ok || !strings.Contains(a, attr) || !strings.Contains(a, `\HasNoChildren`) {
			t.Errorf("LIST %s = %q (present %v), want %s", name, a, ok, attr)
		}
	}

	sel := c.mustSelect(t, "INBOX")
	if sel.NumMessages != 3 || sel.UIDNext != 4 || sel.UIDValidity == 0 {
		t.Fatalf("SELECT = %+v", sel)
	}
	msgs := c.fetch(t, imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
	})
	if len(msgs) != 3 {
		t.Fatalf("fetched %d messages", len(msgs))
	}
	for i, m := range msgs {
		if m.SeqNum != uint32(i+1) || m.UID != imap.UID(i+1) {
			t.Errorf("message %d: seq %d uid %d", i, m.SeqNum, m.UID)
		}
		if m.Envelope == nil || m.Envelope.Subject != "message "+string(rune('1'+i)) {
			t.Errorf("message %d envelope = %+v", i, m.Envelope)
		}
		if len(m.Envelope.From) != 1 || m.Envelope.From[0].Addr() != "carol@elsewhere.test" {
			t.Errorf("message %d from = %+v", i, m.Envelope.From)
		}
		if m.RFC822Size == 0 || m.InternalDate.IsZero() {
			t.Errorf("message %d size %d date %v", i, m.RFC822Size, m.InternalDate)
		}
		if bs, ok := m.BodyStructure.(*imap.BodyStructureSinglePart); !ok || bs.MediaType() != "text/plain" {
			t.Errorf("message %d structure = %#v", i, m.BodyStructure)
		}
		if len(m.Flags) != 0 {
			t.Errorf("message %d flags = %v", i, m.Flags)
		}
	}

	// BODY.PEEK[] leaves \Seen alone; BODY[TEXT] sets it.
	msgs = c.fetch(t, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	raw := msgs[0].BodySection[0].Bytes
	if !bytes.HasPrefix(raw, []byte("From: carol@elsewhere.test\r\n")) || !bytes.HasSuffix(raw, []byte("body of message 1\r\n")) {
		t.Fatalf("BODY.PEEK[] = %q", raw)
	}
	msgs = c.fetch(t, imap.SeqSetNum(1), &imap.FetchOptions{Flags: true})
	if len(msgs[0].Flags) != 0 {
		t.Fatalf("PEEK set flags %v", msgs[0].Flags)
	}
	msgs = c.fetch(t, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierText}}})
	if got := string(msgs[0].BodySection[0].Bytes); got != "body of message 1\r\n" {
		t.Fatalf("BODY[TEXT] = %q", got)
	}
	if flagStrings(msgs[0].Flags) != `\Seen` {
		t.Fatalf("BODY[TEXT] response flags %v, want \\Seen", msgs[0].Flags)
	}

	// STORE, then EXPUNGE of a \Deleted message.
	st, err := c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted, "$Work"}}, nil).Collect()
	if err != nil || len(st) != 1 || flagStrings(st[0].Flags) != `\Deleted $Work` {
		t.Fatalf("STORE = %+v, %v", st, err)
	}
	exp, err := c.Expunge().Collect()
	if err != nil || len(exp) != 1 || exp[0] != 2 {
		t.Fatalf("EXPUNGE = %v, %v; want [2]", exp, err)
	}
	msgs = c.fetch(t, imap.SeqSetNum(1, 2), &imap.FetchOptions{UID: true})
	if len(msgs) != 2 || msgs[1].UID != 3 {
		t.Fatalf("after expunge: %+v", msgs)
	}

	// APPEND with flags and date returns APPENDUID; EXISTS follows.
	body := storetest.CRLF(storetest.Message("dave@elsewhere.test", alice, "appended", "hello"))
	date := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	ap := c.Append("INBOX", int64(len(body)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagFlagged}, Time: date})
	ap.Write([]byte(body))
	ap.Close()
	ad, err := ap.Wait()
	if err != nil || ad.UID != 4 || ad.UIDValidity != sel.UIDValidity {
		t.Fatalf("APPEND = %+v, %v", ad, err)
	}
	msgs = c.fetch(t, imap.UIDSetNum(4), &imap.FetchOptions{Flags: true, InternalDate: true})
	if len(msgs) != 1 || flagStrings(msgs[0].Flags) != `\Flagged` || !msgs[0].InternalDate.Equal(date) {
		t.Fatalf("appended = %+v", msgs)
	}
	if c.Mailbox().NumMessages != 3 {
		t.Fatalf("client count %d after APPEND, want 3", c.Mailbox().NumMessages)
	}
}

func TestIdleSeesDeliveryFlagsAndExpunge(t *testing.T) {
	ts := newTestServer(t, testMessages(2))
	idler := ts.login(t, alice, alicePass)
	idler.mustSelect(t, "INBOX")
	other := ts.login(t, alice, alicePass)
	other.mustSelect(t, "INBOX")

	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	// A delivery (as SMTP does it) shows up as EXISTS.
	storetest.Deliver(t, ts.st, alice, storetest.Message("x@elsewhere.test", alice, "new", "new mail"))
	idler.up.wait(t, "EXISTS 3", 5*time.Second)
	// A flag set by another session shows up as FETCH FLAGS.
	if err := other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	idler.up.wait(t, `FETCH 1 FLAGS (\Seen)`, 5*time.Second)
	// A store-level expunge (as POP3 does it) shows up as EXPUNGE.
	acct, err := ts.st.Account(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.MailboxByRole(context.Background(), store.RoleInbox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Expunge(context.Background(), inbox.ID, []uint32{2}); err != nil {
		t.Fatal(err)
	}
	idler.up.wait(t, "EXPUNGE 2", 5*time.Second)
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	msgs := idler.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true})
	if len(msgs) != 2 || msgs[0].UID != 1 || msgs[1].UID != 3 {
		t.Fatalf("after updates: %+v", msgs)
	}
	// The other session hears of the expunge at its next command.
	if err := other.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	other.up.wait(t, "EXISTS 3", time.Second)
	other.up.wait(t, "EXPUNGE 2", time.Second)
	// Its own STORE .SILENT was not echoed back to it.
	for _, u := range other.up.take() {
		if strings.HasPrefix(u, "FETCH 1") {
			t.Errorf("session got its own silent STORE back: %s", u)
		}
	}
}
