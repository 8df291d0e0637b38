package web

import "testing"

func TestCountNoun(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{{0, "0 messages"}, {1, "1 message"}, {2, "2 messages"}, {100000, "100000 messages"}} {
		if got := countNoun(c.n, "message"); got != c.want {
			t.Errorf("countNoun(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
