package transcript

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    []Step
		wantErr string
	}{
		{
			name:  "send and expect",
			input: "# comment\n\nC: USER a b\r\nS: +OK\nS:\nC:\n",
			want: []Step{
				{Line: 3, Op: Send, Text: "USER a b", Data: []byte("USER a b\r\n")},
				{Line: 4, Op: Expect, Text: "+OK"},
				{Line: 5, Op: Expect, Text: ""},
				{Line: 6, Op: Send, Text: "", Data: []byte("\r\n")},
			},
		},
		{
			name:  "spaces after the first belong to the text",
			input: "C:  x \n",
			want:  []Step{{Line: 1, Op: Send, Text: " x ", Data: []byte(" x \r\n")}},
		},
		{
			name:  "raw with repeats",
			input: `C! "A\x00" "b"*3 "\r\n"` + "\n",
			want:  []Step{{Line: 1, Op: Raw, Text: `"A\x00" "b"*3 "\r\n"`, Data: []byte("A\x00bbb\r\n")}},
		},
		{
			name:  "setup with quoted arguments",
			input: `@user alice@example.test "secret pass" x` + "\n",
			want:  []Step{{Line: 1, Op: Setup, Text: "user", Args: []string{"alice@example.test", "secret pass", "x"}}},
		},
		{
			name:  "directives",
			input: "-- close\n-- eof\n-- tls\n-- conn two\n-- sleep 10ms\n",
			want: []Step{
				{Line: 1, Op: Close}, {Line: 2, Op: EOF}, {Line: 3, Op: TLS},
				{Line: 4, Op: Conn, Text: "two"}, {Line: 5, Op: Sleep, Delay: 10 * time.Millisecond},
			},
		},
		{name: "unknown operator", input: "X: hi\n", wantErr: `t.txt:1: unknown line "X: hi"`},
		{name: "bad regexp", input: "\nS~ (\n", wantErr: "t.txt:2: S~"},
		{name: "raw without quotes", input: "C! abc\n", wantErr: "t.txt:1: C!: want a quoted string"},
		{name: "raw bad repeat", input: `C! "a"*x` + "\n", wantErr: "t.txt:1: C!: bad repeat count"},
		{name: "raw nothing", input: "C!\n", wantErr: "nothing to send"},
		{name: "unknown directive", input: "-- jump\n", wantErr: "unknown directive -- jump"},
		{name: "bad sleep", input: "-- sleep soon\n", wantErr: "-- sleep"},
		{name: "conn without name", input: "-- conn\n", wantErr: "-- conn needs a name"},
		{name: "close with argument", input: "-- close now\n", wantErr: "takes no argument"},
		{name: "empty setup", input: "@\n", wantErr: "@ without a name"},
		{name: "unterminated quote", input: `@user "abc` + "\n", wantErr: "bad quoted argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("t.txt", []byte(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range s.Steps {
				s.Steps[i].re = nil
			}
			if !slices.EqualFunc(s.Steps, tt.want, stepEqual) {
				t.Fatalf("steps\n got %+v\nwant %+v", s.Steps, tt.want)
			}
		})
	}
}

func stepEqual(a, b Step) bool {
	return a.Line == b.Line && a.Op == b.Op && a.Text == b.Text && string(a.Data) == string(b.Data) &&
		slices.Equal(a.Args, b.Args) && a.Delay == b.Delay
}

// lineServer is a toy line protocol for the runner's own tests:
//
//	PING -> +OK PONG          LIST -> +OK, a, b, .
//	BYE -> +OK bye, close     TLS -> +OK, then a TLS handshake
//	LF -> "bare" with LF only  EXTRA -> two lines
//	anything else -> -ERR <line>
type lineServer struct {
	ln   net.Listener
	tls  *tls.Config
	wg   sync.WaitGroup
	mu   sync.Mutex
	seen []string
}

func startLineServer(t *testing.T, conf *tls.Config) *lineServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{ln: ln, tls: conf}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *lineServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	c.Write([]byte("+OK ready\r\n"))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.seen = append(s.seen, line)
		s.mu.Unlock()
		switch line {
		case "PING":
			c.Write([]byte("+OK PONG\r\n"))
		case "LIST":
			c.Write([]byte("+OK\r\na\r\nb\r\n.\r\n"))
		case "BYE":
			c.Write([]byte("+OK bye\r\n"))
			return
		case "LF":
			c.Write([]byte("bare\n"))
		case "EXTRA":
			c.Write([]byte("+OK one\r\n+OK two\r\n"))
		case "TLS":
			c.Write([]byte("+OK go\r\n"))
			tc := tls.Server(c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			c, r = tc, bufio.NewReader(tc)
		default:
			c.Write([]byte("-ERR " + line + "\r\n"))
		}
	}
}

func (s *lineServer) runner() *Runner {
	return &Runner{
		Dial:    func() (net.Conn, error) { return net.Dial("tcp", s.ln.Addr().String()) },
		Timeout: 2 * time.Second,
	}
}

func mustParse(t *testing.T, text string) *Script {
	t.Helper()
	s, err := Parse("t.txt", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRunPasses(t *testing.T) {
	serverTLS, clientTLS := TLSPair(t)
	srv := startLineServer(t, serverTLS)
	var setups []string
	r := srv.runner()
	r.TLS = clientTLS
	r.Setup = func(name string, args []string) error {
		setups = append(setups, name+":"+strings.Join(args, ","))
		return nil
	}
	s := mustParse(t, `
@user alice "two words"
S: +OK ready
C: PING
S~ ^\+OK P.NG$
C! "LIST\r\nPING\r\n"
S: +OK
S* ^\.$
S: +OK PONG
C! "NUL\x00" "x"*3 "\r\n"
S: -ERR NUL`+"\x00"+`xxx
-- conn 2
S: +OK ready
C: BYE
S: +OK bye
-- eof
-- conn 1
C: TLS
S: +OK go
-- tls
C: PING
S: +OK PONG
-- close
S: +OK ready
-- sleep 1ms
`)
	r.Test(t, s)
	if want := []string{"user:alice,two words"}; !slices.Equal(setups, want) {
		t.Errorf("setups = %q, want %q", setups, want)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !slices.Contains(srv.seen, "NUL\x00xxx") {
		t.Errorf("server saw %q, want the raw line", srv.seen)
	}
}

func TestRunFailures(t *testing.T) {
	srv := startLineServer(t, nil)
	tests := []struct {
		name   string
		script string
		want   []string // substrings of the error
	}{
		{
			name:   "exact mismatch names file, line, want, got and the exchange",
			script: "S: +OK ready\nC: PING\nS: +OK PING\n",
			want:   []string{"t.txt:3:", "want: S: +OK PING", "got:  S: +OK PONG", "C: PING", "S: +OK ready"},
		},
		{
			name:   "regexp mismatch",
			script: "S~ ^-ERR\n",
			want:   []string{"t.txt:1:", `want: S~ ^-ERR`, "got:  S: +OK ready"},
		},
		{
			name:   "skip reaches the end of the connection",
			script: "S: +OK ready\nC: BYE\nS* ^never$\n",
			want:   []string{"t.txt:3:", "connection closed by the server", "after skipping 1 lines"},
		},
		{
			name:   "bare LF",
			script: "S: +OK ready\nC: LF\nS: bare\n",
			want:   []string{"t.txt:3:", "bare LF"},
		},
		{
			name:   "expected close but got a line",
			script: "S: +OK ready\nC: PING\n-- eof\n",
			want:   []string{"t.txt:3:", "the server to close", "S: +OK PONG"},
		},
		{
			name:   "unexpected output at the end",
			script: "S: +OK ready\nC: EXTRA\nS: +OK one\n",
			want:   []string{"t.txt:3:", "no more output", "S: +OK two"},
		},
		{
			name:   "timeout",
			script: "S: +OK ready\nS: more\n",
			want:   []string{"t.txt:2:", "no line within"},
		},
		{
			name:   "setup without a handler",
			script: "@user x\n",
			want:   []string{"t.txt:1:", "Runner.Setup is nil"},
		},
		{
			name:   "tls without a config",
			script: "S: +OK ready\n-- tls\n",
			want:   []string{"t.txt:2:", "Runner.TLS is nil"},
		},
		{
			name:   "long lines are shortened in the report",
			script: "S: +OK ready\nC! \"" + strings.Repeat("y", 400) + "\\r\\n\"\nS: nope\n",
			want:   []string{"t.txt:3:", "... (405 bytes)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := srv.runner()
			r.Timeout = 300 * time.Millisecond
			err := r.Run(mustParse(t, tt.script))
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("err = %v, want a *Failure", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestSetupError(t *testing.T) {
	r := &Runner{Setup: func(string, []string) error { return errors.New("no such file") }}
	err := r.Run(mustParse(t, "\n@deliver x y.eml\n"))
	if err == nil || !strings.Contains(err.Error(), "t.txt:2:") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func TestDialError(t *testing.T) {
	r := &Runner{Dial: func() (net.Conn, error) { return nil, errors.New("refused") }}
	err := r.Run(mustParse(t, "S: hi\n"))
	if err == nil || !strings.Contains(err.Error(), "dial: refused") {
		t.Fatalf("err = %v", err)
	}
}

func TestGlob(t *testing.T) {
	if _, err := Glob(t.TempDir() + "/*.txt"); err == nil {
		t.Fatal("Glob of an empty directory: want an error")
	}
}
