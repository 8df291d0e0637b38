// Package transcript replays a written exchange of a line protocol (lines the
// client sends, lines the server must answer) against a live server over a
// real socket, and reports the first difference with the file and line it
// came from and the exchange so far. It knows nothing about any protocol:
// setup lines ("@user ...") are handed to the caller, who also says how to
// dial the server.
//
// A transcript is a text file of lines, each starting with a two-character
// operator:
//
//	# a comment (and blank lines) are ignored
//	@name arg "quoted arg"   setup: Runner.Setup(name, args), in file order
//	C: text                  send text followed by CRLF
//	C! "raw\r\n" "x"*1000    send the concatenation of Go-quoted strings,
//	                         each optionally repeated *N; nothing is added
//	S: text                  the next server line is exactly text
//	S~ regexp                the next server line matches regexp
//	S* regexp                skip server lines until one matches regexp
//	-- close                 the client closes the current connection
//	-- eof                   the server must close the connection now
//	-- conn NAME             talk on connection NAME (the first one is "1")
//	-- tls                   start TLS (client side) on the current connection
//	-- sleep 100ms           pause
//
// A connection is dialed when the script first sends or expects on it, so
// a script can talk again after "-- close" (a new session) and can keep
// several connections open at once. Server lines must end in CRLF. Expected
// lines come from a person reading the specification: nothing rewrites a
// transcript from a server's output.
package transcript

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// DefaultTimeout bounds each wait for a server line, a dial and a TLS
	// handshake.
	DefaultTimeout = 5 * time.Second
	// DefaultQuiet is how long the runner listens after the last step for
	// server output nobody expected.
	DefaultQuiet = 50 * time.Millisecond
	// maxLineBytes bounds one server line, so a server that never sends a
	// line end cannot make the runner buffer without limit.
	maxLineBytes = 1 << 20
	// shownBytes is how much of a long line the exchange shows.
	shownBytes = 160
)

// Op is what one step of a script does.
type Op int

const (
	Send   Op = iota + 1 // C: line, sent with CRLF
	Raw                  // C! bytes, sent as they are
	Expect               // S: exact line
	Match                // S~ regexp
	Skip                 // S* skip to a matching line
	Setup                // @name args
	Close                // -- close
	EOF                  // -- eof
	Conn                 // -- conn NAME
	TLS                  // -- tls
	Sleep                // -- sleep DURATION
)

// Step is one line of a script.
type Step struct {
	Line int // 1-based line number in the file
	Op   Op
	// Text is the line to send or expect (without CRLF), the regexp of
	// Match and Skip, the directive name of Setup (without "@"), the
	// connection name of Conn.
	Text string
	// Data is what Send and Raw write, CRLF included for Send.
	Data []byte
	// Args are the arguments of Setup, quotes removed.
	Args  []string
	Delay time.Duration // Sleep
	re    *regexp.Regexp
}

// Script is a parsed transcript.
type Script struct {
	Name  string // the file it came from
	Steps []Step
}

// ParseFile reads and parses one transcript file.
func ParseFile(path string) (*Script, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Glob parses every file matching pattern, in name order.
func Glob(pattern string) ([]*Script, error) {
	names, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("transcript: no files match %s", pattern)
	}
	var out []*Script
	for _, name := range names {
		s, err := ParseFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Parse parses a transcript; name is used in error messages.
func Parse(name string, data []byte) (*Script, error) {
	s := &Script{Name: name}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		st, err := parseStep(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		st.Line = n
		s.Steps = append(s.Steps, st)
	}
	return s, nil
}

func parseStep(line string) (Step, error) {
	if line[0] == '@' {
		fields, err := splitArgs(line[1:])
		if err != nil {
			return Step{}, err
		}
		if len(fields) == 0 || fields[0] == "" {
			return Step{}, errors.New("@ without a name")
		}
		return Step{Op: Setup, Text: fields[0], Args: fields[1:]}, nil
	}
	if len(line) < 2 {
		return Step{}, fmt.Errorf("unknown line %q", line)
	}
	op, rest := line[:2], line[2:]
	// One space separates the operator from its text; more belong to it.
	rest = strings.TrimPrefix(rest, " ")
	switch op {
	case "C:":
		return Step{Op: Send, Text: rest, Data: []byte(rest + "\r\n")}, nil
	case "C!":
		data, err := parseRaw(rest)
		if err != nil {
			return Step{}, fmt.Errorf("C!: %w", err)
		}
		return Step{Op: Raw, Text: rest, Data: data}, nil
	case "S:":
		return Step{Op: Expect, Text: rest}, nil
	case "S~", "S*":
		re, err := regexp.Compile(rest)
		if err != nil {
			return Step{}, fmt.Errorf("%s: %w", op, err)
		}
		o := Match
		if op == "S*" {
			o = Skip
		}
		return Step{Op: o, Text: rest, re: re}, nil
	case "--":
		verb, arg, _ := strings.Cut(strings.TrimSpace(rest), " ")
		arg = strings.TrimSpace(arg)
		switch verb {
		case "close", "eof", "tls":
			if arg != "" {
				return Step{}, fmt.Errorf("-- %s takes no argument", verb)
			}
			return Step{Op: map[string]Op{"close": Close, "eof": EOF, "tls": TLS}[verb]}, nil
		case "conn":
			if arg == "" {
				return Step{}, errors.New("-- conn needs a name")
			}
			return Step{Op: Conn, Text: arg}, nil
		case "sleep":
			d, err := time.ParseDuration(arg)
			if err != nil || d < 0 {
				return Step{}, fmt.Errorf("-- sleep %q: want a duration like 100ms", arg)
			}
			return Step{Op: Sleep, Delay: d}, nil
		}
		return Step{}, fmt.Errorf("unknown directive -- %s", verb)
	}
	return Step{}, fmt.Errorf("unknown line %q", line)
}

// splitArgs splits on spaces; a token starting with a double quote is a Go
// string literal and may hold spaces.
func splitArgs(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if s[0] == '"' {
			lit, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("bad quoted argument in %q", s)
			}
			v, _ := strconv.Unquote(lit)
			out = append(out, v)
			s = s[len(lit):]
			if s != "" && s[0] != ' ' && s[0] != '\t' {
				return nil, fmt.Errorf("no space after %s", lit)
			}
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		out = append(out, s[:end])
		s = s[end:]
	}
}

// parseRaw reads `"abc" "x"*10 "\r\n"`: quoted strings, each optionally
// repeated.
func parseRaw(s string) ([]byte, error) {
	var out []byte
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("nothing to send")
	}
	for s != "" {
		lit, err := strconv.QuotedPrefix(s)
		if err != nil {
			return nil, fmt.Errorf("want a quoted string at %q", s)
		}
		v, _ := strconv.Unquote(lit)
		s = s[len(lit):]
		count := 1
		if strings.HasPrefix(s, "*") {
			end := 1
			for end < len(s) && s[end] >= '0' && s[end] <= '9' {
				end++
			}
			count, err = strconv.Atoi(s[1:end])
			if err != nil || count < 0 || count > 100<<20 {
				return nil, fmt.Errorf("bad repeat count at %q", s)
			}
			s = s[end:]
		}
		if s != "" && s[0] != ' ' && s[0] != '\t' {
			return nil, fmt.Errorf("want a space at %q", s)
		}
		out = append(out, bytes.Repeat([]byte(v), count)...)
		s = strings.TrimLeft(s, " \t")
	}
	return out, nil
}

// Runner replays scripts against one server.
type Runner struct {
	// Dial opens a new connection to the server. Required.
	Dial func() (net.Conn, error)
	// Setup runs an @ line. Nil makes any @ line an error.
	Setup func(name string, args []string) error
	// TLS is the client configuration for "-- tls". Nil makes it an error.
	TLS *tls.Config
	// Timeout bounds each wait (default DefaultTimeout).
	Timeout time.Duration
	// Quiet is how long to listen for unexpected output after the last
	// step (default DefaultQuiet; negative: do not listen).
	Quiet time.Duration
}

// Failure is the first difference between a script and a server.
type Failure struct {
	File     string
	Line     int
	Want     string
	Got      string
	Exchange []string // what was sent and received so far, oldest first
}

func (f *Failure) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:\n  want: %s\n  got:  %s\nexchange so far:\n", f.File, f.Line, f.Want, f.Got)
	for _, l := range f.Exchange {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// Test runs s and fails t with the Failure if there is one.
func (r *Runner) Test(t testing.TB, s *Script) {
	t.Helper()
	if err := r.Run(s); err != nil {
		t.Fatal(err)
	}
}

type conn struct {
	name string
	c    net.Conn
	r    *bufio.Reader
}

type run struct {
	*Runner
	script   *Script
	conns    map[string]*conn
	cur      string
	exchange []string
	multi    bool
}

// Run replays s. It returns a *Failure for the first mismatch and closes
// every connection it opened.
func (r *Runner) Run(s *Script) error {
	x := &run{Runner: r, script: s, conns: map[string]*conn{}, cur: "1"}
	defer func() {
		for _, c := range x.conns {
			c.c.Close()
		}
	}()
	for i := range s.Steps {
		if err := x.step(&s.Steps[i]); err != nil {
			return err
		}
	}
	return x.quiet()
}

func (x *run) timeout() time.Duration {
	if x.Timeout > 0 {
		return x.Timeout
	}
	return DefaultTimeout
}

func (x *run) fail(st *Step, want, got string) *Failure {
	return &Failure{File: x.script.Name, Line: st.Line, Want: want, Got: got, Exchange: x.exchange}
}

func (x *run) note(format string, args ...any) {
	l := fmt.Sprintf(format, args...)
	if x.multi {
		l = "[" + x.cur + "] " + l
	}
	x.exchange = append(x.exchange, l)
}

// show shortens a long line for the exchange and error messages.
func show(s string) string {
	if len(s) <= shownBytes {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:shownBytes], len(s))
}

func showQuoted(b []byte) string {
	if len(b) <= shownBytes {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(string(b[:shownBytes])), len(b))
}

// current returns the current connection, dialing it if needed.
func (x *run) current(st *Step) (*conn, error) {
	if c := x.conns[x.cur]; c != nil {
		return c, nil
	}
	if x.Dial == nil {
		return nil, x.fail(st, "a connection", "Runner.Dial is nil")
	}
	nc, err := x.Dial()
	if err != nil {
		return nil, x.fail(st, "a connection", "dial: "+err.Error())
	}
	c := &conn{name: x.cur, c: nc, r: bufio.NewReader(nc)}
	x.conns[x.cur] = c
	return c, nil
}

func (x *run) step(st *Step) error {
	switch st.Op {
	case Setup:
		x.note("@%s %s", st.Text, strings.Join(st.Args, " "))
		if x.Setup == nil {
			return x.fail(st, "no @ lines", "@"+st.Text+" (Runner.Setup is nil)")
		}
		if err := x.Setup(st.Text, st.Args); err != nil {
			return x.fail(st, "@"+st.Text+" to succeed", err.Error())
		}
		return nil
	case Sleep:
		x.note("-- sleep %s", st.Delay)
		time.Sleep(st.Delay)
		return nil
	case Conn:
		x.cur = st.Text
		x.multi = true
		return nil
	case Close:
		x.note("-- close")
		if c := x.conns[x.cur]; c != nil {
			c.c.Close()
			delete(x.conns, x.cur)
		}
		return nil
	}
	c, err := x.current(st)
	if err != nil {
		return err
	}
	switch st.Op {
	case Send, Raw:
		if st.Op == Send {
			x.note("C: %s", show(st.Text))
		} else {
			x.note("C! %s", showQuoted(st.Data))
		}
		c.c.SetWriteDeadline(time.Now().Add(x.timeout()))
		if _, err := c.c.Write(st.Data); err != nil {
			return x.fail(st, "to send", "write: "+err.Error())
		}
		return nil
	case Expect, Match:
		line, err := x.readLine(c)
		if err != nil {
			return x.fail(st, x.want(st), err.Error())
		}
		x.note("S: %s", show(line))
		if st.Op == Expect && line != st.Text || st.Op == Match && !st.re.MatchString(line) {
			return x.fail(st, x.want(st), "S: "+show(line))
		}
		return nil
	case Skip:
		for skipped := 0; ; skipped++ {
			line, err := x.readLine(c)
			if err != nil {
				return x.fail(st, x.want(st), fmt.Sprintf("%v (after skipping %d lines)", err, skipped))
			}
			if st.re.MatchString(line) {
				if skipped > 0 {
					x.note("S* (%d lines skipped)", skipped)
				}
				x.note("S: %s", show(line))
				return nil
			}
		}
	case EOF:
		x.note("-- eof")
		line, err := x.readLine(c)
		if err == nil {
			return x.fail(st, "the server to close the connection", "S: "+show(line))
		}
		if !errors.Is(err, errClosed) {
			return x.fail(st, "the server to close the connection", err.Error())
		}
		c.c.Close()
		delete(x.conns, x.cur)
		return nil
	case TLS:
		x.note("-- tls")
		if x.TLS == nil {
			return x.fail(st, "a TLS handshake", "Runner.TLS is nil")
		}
		if n := c.r.Buffered(); n > 0 {
			early, _ := c.r.Peek(n)
			return x.fail(st, "nothing before the TLS handshake", "S: "+showQuoted(early))
		}
		tc := tls.Client(c.c, x.TLS.Clone())
		tc.SetDeadline(time.Now().Add(x.timeout()))
		if err := tc.Handshake(); err != nil {
			return x.fail(st, "a TLS handshake", err.Error())
		}
		tc.SetDeadline(time.Time{})
		c.c = tc
		c.r = bufio.NewReader(tc)
		return nil
	}
	return x.fail(st, "a known step", fmt.Sprintf("op %d", st.Op))
}

func (x *run) want(st *Step) string {
	switch st.Op {
	case Expect:
		return "S: " + show(st.Text)
	case Match:
		return "S~ " + st.Text
	case Skip:
		return "S* " + st.Text
	}
	return ""
}

// errClosed says the server closed the connection between lines.
var errClosed = errors.New("connection closed by the server")

// readLine reads one CRLF-terminated server line and returns it without
// the CRLF.
func (x *run) readLine(c *conn) (string, error) {
	c.c.SetReadDeadline(time.Now().Add(x.timeout()))
	var line []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		line = append(line, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > maxLineBytes {
				return "", fmt.Errorf("line longer than %d bytes", maxLineBytes)
			}
			continue
		}
		if len(line) > 0 {
			return "", fmt.Errorf("%w in the middle of a line: %s", err, showQuoted(line))
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", fmt.Errorf("no line within %s", x.timeout())
		}
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return "", errClosed
		}
		return "", err
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return "", fmt.Errorf("line ends in a bare LF: %s", showQuoted(line))
	}
	return string(line[:len(line)-2]), nil
}

// isReset reports a connection reset, which is how a server's close looks
// when it had unread input from us.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// quiet checks that no open connection has output nobody expected.
func (x *run) quiet() error {
	d := x.Quiet
	if d == 0 {
		d = DefaultQuiet
	}
	if d < 0 {
		return nil
	}
	end := &Step{Line: lastLine(x.script)}
	for name, c := range x.conns {
		if c.r.Buffered() == 0 {
			c.c.SetReadDeadline(time.Now().Add(d))
			if _, err := c.r.Peek(1); err != nil {
				continue
			}
		}
		x.cur = name
		line, err := x.readLine(c)
		if err != nil {
			line = err.Error()
		}
		return x.fail(end, "no more output at the end of the script", "S: "+show(line))
	}
	return nil
}

func lastLine(s *Script) int {
	if len(s.Steps) == 0 {
		return 0
	}
	return s.Steps[len(s.Steps)-1].Line
}
