package pop3

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"
	"testing/iotest"
)

func TestUIDL(t *testing.T) {
	tests := []struct {
		uidvalidity, uid uint32
		want             string
	}{
		{0x5f3e2a10, 1, "000000015F3E2A10"},
		{1, 0xabcdef, "00ABCDEF00000001"},
		{0xffffffff, 0xffffffff, "FFFFFFFFFFFFFFFF"},
	}
	for _, tt := range tests {
		if got := UIDL(tt.uidvalidity, tt.uid); got != tt.want {
			t.Errorf("UIDL(%#x, %d) = %q, want %q", tt.uidvalidity, tt.uid, got, tt.want)
		}
	}
}

func TestWriteStuffed(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		bodyLines int
		want      string
	}{
		{name: "plain", input: "a\r\nb\r\n", bodyLines: -1, want: "a\r\nb\r\n.\r\n"},
		{name: "dots", input: ".a\r\n..\r\n.\r\nx.\r\n", bodyLines: -1, want: "..a\r\n...\r\n..\r\nx.\r\n.\r\n"},
		{name: "no final CRLF", input: "a\r\nb", bodyLines: -1, want: "a\r\nb\r\n.\r\n"},
		{name: "no final CRLF, dot", input: "a\r\n.", bodyLines: -1, want: "a\r\n..\r\n.\r\n"},
		{name: "empty", input: "", bodyLines: -1, want: ".\r\n"},
		{name: "bare LF kept, still stuffed", input: "a\n.b\n", bodyLines: -1, want: "a\n..b\n.\r\n"},
		{name: "top 0", input: "H: 1\r\n\r\nb1\r\nb2\r\n", bodyLines: 0, want: "H: 1\r\n\r\n.\r\n"},
		{name: "top 1", input: "H: 1\r\n\r\nb1\r\nb2\r\n", bodyLines: 1, want: "H: 1\r\n\r\nb1\r\n.\r\n"},
		{name: "top more than there is", input: "H: 1\r\n\r\nb1", bodyLines: 9, want: "H: 1\r\n\r\nb1\r\n.\r\n"},
		{name: "top header only", input: "H: 1\r\nI: 2\r\n", bodyLines: 0, want: "H: 1\r\nI: 2\r\n.\r\n"},
		{name: "top dot in body", input: "H: 1\r\n\r\n.x\r\ny\r\n", bodyLines: 1, want: "H: 1\r\n\r\n..x\r\n.\r\n"},
		{name: "top bare LF blank line", input: "H: 1\n\nb\n", bodyLines: 0, want: "H: 1\n\n.\r\n"},
		{name: "top header line of two bytes is not blank", input: "X\n\r\nb\r\n", bodyLines: 0, want: "X\n\r\n.\r\n"},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 4096} {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			// One byte per Read exercises every boundary.
			r := iotest.OneByteReader(strings.NewReader(tt.input))
			sent, err := writeStuffed(w, r, make([]byte, chunk), tt.bodyLines)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			w.Flush()
			if out.String() != tt.want {
				t.Errorf("%s (chunk %d): got %q, want %q", tt.name, chunk, out.String(), tt.want)
			}
			if tt.bodyLines < 0 && sent != int64(len(tt.input)) {
				t.Errorf("%s: sent %d, want %d", tt.name, sent, len(tt.input))
			}
		}
	}
}

func TestNumber(t *testing.T) {
	tests := []struct {
		input  string
		want   int
		wantOK bool
	}{
		{"1", 1, true},
		{"007", 7, true},
		{"0", 0, true},
		{"999999999", 999999999, true},
		{"99999999999999999999", int(^uint(0) >> 1), true},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1a", 0, false},
		{" 1", 0, false},
		{"１", 0, false}, // full-width digit
	}
	for _, tt := range tests {
		got, ok := number(tt.input)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("number(%q) = %d, %v; want %d, %v", tt.input, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct {
		addr string
		want string
		loop bool
	}{
		{"127.0.0.1:110", "127.0.0.1", true},
		{"127.0.0.2:110", "127.0.0.2", true},
		{"192.0.2.7:40000", "192.0.2.7", false},
		{"[::1]:110", "::/64", true},
		{"[2001:db8:1:2:3:4:5:6]:110", "2001:db8:1:2::/64", false},
		{"[::ffff:192.0.2.7]:110", "192.0.2.7", false},
		{"[::ffff:127.0.0.1]:110", "127.0.0.1", true},
	}
	for _, tt := range tests {
		a, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := clientKey(a); got != tt.want {
			t.Errorf("clientKey(%s) = %q, want %q", tt.addr, got, tt.want)
		}
		if got := isLoopback(a); got != tt.loop {
			t.Errorf("isLoopback(%s) = %v, want %v", tt.addr, got, tt.loop)
		}
	}
}
