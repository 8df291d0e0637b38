package imap

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// readResponse reads one command's response up to its tagged line, raw,
// literals included.
func (c *rawConn) readResponse(t *testing.T, tag string) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out bytes.Buffer
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading %s: %v", tag, err)
		}
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				t.Fatalf("%s: %s", tag, line)
			}
			return out.Bytes()
		}
		out.WriteString(line)
		if i := strings.LastIndexByte(line, '{'); i >= 0 && strings.HasSuffix(line, "}\r\n") {
			var n int
			fmt.Sscanf(line[i+1:], "%d}", &n)
			lit := make([]byte, n)
			if _, err := io.ReadFull(c.r, lit); err != nil {
				t.Fatal(err)
			}
			out.Write(lit)
		}
	}
}

// The responses wireWriter writes for UID, FLAGS, INTERNALDATE,
// RFC822.SIZE and ENVELOPE are byte for byte what the library writes for
// them: the same FETCH with BODYSTRUCTURE added goes through the library
// and must start with them.
func TestWireWriterMatchesLibrary(t *testing.T) {
	long := strings.Repeat("long subject ", 400) // over 4096: a literal
	msgs := []string{
		"From: Plain Sender <plain@example.test>\r\nTo: alice@example.test\r\nSubject: plain\r\nDate: Mon, 2 Jan 2006 15:04:05 -0700\r\nMessage-ID: <id1@example.test>\r\n\r\nbody\r\n",
		"From: =?utf-8?q?J=C3=BCrgen?= \"the \\\"quoted\\\"\" <j@example.test>\r\nSender: s@example.test\r\nReply-To: undisclosed-recipients:;\r\nTo: group: a@x.test, b@y.test;, nohost\r\nCc: \"back\\\\slash\" <c@example.test>\r\nBcc: <@>\r\nSubject: =?utf-8?b?w6nDqMOgIHRhYgl0ZXN0?=\r\nIn-Reply-To: <a@b> <c@d>\r\n\r\nbody\r\n",
		"From: x@example.test\r\nSubject: " + long + "\r\n\r\nno date, no id\r\n",
		"Subject: \r\n\r\nnothing at all\r\n",
	}
	ts := newTestServer(t, msgs)
	for _, rev2 := range []bool{false, true} {
		c := dialRaw(t, ts.addr)
		c.send(t, `l LOGIN alice@example.test "alice secret"`)
		c.readResponse(t, "l")
		if rev2 {
			c.send(t, "e ENABLE IMAP4rev2")
			c.readResponse(t, "e")
		}
		c.send(t, "s SELECT INBOX")
		c.readResponse(t, "s")
		c.send(t, `f STORE 2 +FLAGS.SILENT (\Seen $Label1 \Flagged)`)
		c.readResponse(t, "f")
		for n := 1; n <= len(msgs); n++ {
			for _, items := range []string{"UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE", "UID FLAGS", "FLAGS", "ENVELOPE"} {
				c.send(t, fmt.Sprintf("a UID FETCH %d (%s)", n, items))
				wire := c.readResponse(t, "a")
				c.send(t, fmt.Sprintf("b UID FETCH %d (%s BODYSTRUCTURE)", n, items))
				lib := c.readResponse(t, "b")
				if !bytes.HasSuffix(wire, []byte(")\r\n")) {
					t.Fatalf("rev2=%v message %d (%s): %q", rev2, n, items, wire)
				}
				prefix := wire[:len(wire)-3]
				if !bytes.HasPrefix(lib, append(prefix, " BODYSTRUCTURE "...)) {
					t.Errorf("rev2=%v message %d (%s):\nwire    %q\nlibrary %q", rev2, n, items, wire, lib)
				}
			}
		}
	}
}

// A FETCH ENVELOPE of more messages than one state chunk reads the next
// chunk's envelopes while it writes the current one; every message must
// come once, in order, with its own envelope.
func TestFetchEnvelopeAcrossChunks(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("fills 2.5 chunks of messages; run without -short and -race")
	}
	n := stateChunk*2 + stateChunk/2
	ts := newTestServer(t, nil)
	fillInbox(t, ts.st, n)
	c := ts.login(t, alice, alicePass)
	c.mustSelect(t, "INBOX")
	msgs := c.fetch(t, imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, Envelope: true})
	if len(msgs) != n {
		t.Fatalf("%d messages, want %d", len(msgs), n)
	}
	seen := map[string]bool{}
	for i, m := range msgs {
		if m.SeqNum != uint32(i+1) || m.UID != imap.UID(i+1) || m.Envelope == nil || !strings.HasPrefix(m.Envelope.Subject, "Message number ") {
			t.Fatalf("message %d: seq %d uid %d envelope %+v", i+1, m.SeqNum, m.UID, m.Envelope)
		}
		if seen[m.Envelope.Subject] {
			t.Fatalf("message %d: subject %q twice", i+1, m.Envelope.Subject)
		}
		seen[m.Envelope.Subject] = true
	}
}
