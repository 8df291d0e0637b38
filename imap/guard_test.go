package imap

import "testing"

// TestLiteralGuard feeds client input (and the server's replies, where
// the framing depends on them) through the guard in chunks and checks
// where it cuts the input, if anywhere.
func TestLiteralGuard(t *testing.T) {
	type step struct {
		in    string // client bytes
		reply string // then the server writes this
	}
	tests := []struct {
		name  string
		steps []step
		cut   string // the input the library may read; "" means all
	}{
		{name: "plain commands", steps: []step{{in: "a NOOP\r\nb LIST \"\" *\r\n"}}},
		{name: "small literal+ passes, its bytes are not commands",
			steps: []step{{in: "a APPEND INBOX {10+}\r\nb APPEND I\r\n\r\nc NOOP\r\n"}}},
		{name: "append literal+ over the limit",
			steps: []step{{in: "a APPEND INBOX (\\Seen) {101+}\r\nx DELETE Trash\r\n"}},
			cut:   "a APPEND INBOX (\\Seen) {101+}\r\n"},
		{name: "append literal+ at the limit passes",
			steps: []step{{in: "a APPEND INBOX {100+}\r\n"}}},
		{name: "header split across reads",
			steps: []step{{in: "a APPEND INBOX {1"}, {in: "01+}"}, {in: "\r\nx DELETE Trash\r\n"}},
			cut:   "a APPEND INBOX {101+}\r\n"},
		{name: "mailbox literal over 4096",
			steps: []step{{in: "a APPEND {5000+}\r\nx DELETE Trash\r\n"}},
			cut:   "a APPEND {5000+}\r\n"},
		{name: "mailbox literal, then the message",
			steps: []step{{in: "a APPEND {5+}\r\nINBOX {50+}\r\n" + string(make([]byte, 50)) + "\r\nb NOOP\r\n"}}},
		{name: "other command literal+ over 4096",
			steps: []step{{in: "a SEARCH TEXT {4097+}\r\nx DELETE Trash\r\n"}},
			cut:   "a SEARCH TEXT {4097+}\r\n"},
		{name: "size that does not fit",
			steps: []step{{in: "a APPEND INBOX {99999999999999999999+}\r\nx NOOP\r\n"}},
			cut:   "a APPEND INBOX {99999999999999999999+}\r\n"},
		{name: "synchronizing literal accepted, then read as data",
			steps: []step{{in: "a APPEND INBOX {20}\r\n", reply: "+ Ready for literal data\r\n"},
				{in: "y APPEND INBOX {999+}\r\nc NOOP\r\n"}}},
		{name: "synchronizing literal refused: the next line is a command",
			steps: []step{{in: "a APPEND INBOX {5000}\r\n", reply: "a NO [TOOBIG] too big\r\n"},
				{in: "b APPEND INBOX {999+}\r\n"}},
			cut: "a APPEND INBOX {5000}\r\nb APPEND INBOX {999+}\r\n"},
		{name: "after STARTTLS the guard is off",
			steps: []step{{in: "s STARTTLS\r\n", reply: "s OK Begin TLS negotiation now\r\n"},
				{in: "a APPEND INBOX {999+}\r\n"}}},
		{name: "refused STARTTLS keeps the guard",
			steps: []step{{in: "s STARTTLS\r\n", reply: "s BAD STARTTLS not available\r\n"},
				{in: "a APPEND INBOX {999+}\r\n"}},
			cut: "s STARTTLS\r\na APPEND INBOX {999+}\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newLiteralGuard()
			g.appendLimit = func() int64 { return 100 }
			var got, all string
			cut := false
			for _, s := range tt.steps {
				all += s.in
				for in := s.in; !cut && in != ""; {
					k, stls, _ := g.scan([]byte(in))
					got += in[:k]
					cut = g.tripped
					if !stls {
						break
					}
					in = in[k:] // the library answers STARTTLS here
				}
				if s.reply != "" {
					g.reply([]byte(s.reply))
				}
			}
			want := tt.cut
			if want == "" {
				want = all
			}
			if got != want {
				t.Errorf("library reads %q, want %q", got, want)
			}
		})
	}
}
