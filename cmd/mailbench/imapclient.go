package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// imapReadBuffer is the read buffer of an IMAP connection: large enough
// that a FETCH of many small messages costs few read calls.
const imapReadBuffer = 256 << 10

// imapClient is a minimal IMAP4rev1 client for measuring: it sends one
// tagged command at a time and reads the responses without building a model
// of them (it counts untagged responses and skips literals), so the client
// side costs as little CPU as possible on a machine it shares with the
// server under test.
type imapClient struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	tag     int
	line    []byte // scratch: the current response line, literals left out
}

// imapError is a tagged NO or BAD.
type imapError struct{ cmd, reply string }

func (e *imapError) Error() string {
	return fmt.Sprintf("%s: %s", e.cmd, truncate(e.reply, 120))
}

// imapResult is what one command's untagged responses held.
type imapResult struct {
	Fetches  int   // "* n FETCH" responses
	Search   []int // numbers of "* SEARCH"
	Exists   int   // the last "* n EXISTS", -1 if none
	Literals int64 // bytes of literals read
}

func dialIMAP(ctx context.Context, addr string, timeout time.Duration) (*imapClient, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	c := &imapClient{conn: conn, r: bufio.NewReaderSize(conn, imapReadBuffer), timeout: timeout}
	if err := c.deadline(); err != nil {
		conn.Close()
		return nil, err
	}
	greeting, err := c.readLine()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if !bytes.HasPrefix(greeting, []byte("* OK")) {
		conn.Close()
		return nil, fmt.Errorf("greeting: %s", truncate(string(greeting), 120))
	}
	return c, nil
}

func (c *imapClient) Close() error { return c.conn.Close() }

func (c *imapClient) deadline() error {
	return c.conn.SetDeadline(time.Now().Add(c.timeout))
}

// readLine reads one response line without CRLF, literals included as
// their {n} marker only (their bytes are counted into lit and dropped).
func (c *imapClient) readLineLit(lit *int64) ([]byte, error) {
	c.line = c.line[:0]
	for {
		part, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			c.line = append(c.line, part...)
			continue
		}
		if err != nil {
			return nil, err
		}
		c.line = append(c.line, part...)
		c.line = bytes.TrimRight(c.line, "\r\n")
		n, ok := literalSize(c.line)
		if !ok {
			return c.line, nil
		}
		if _, err := c.r.Discard(int(n)); err != nil {
			return nil, fmt.Errorf("literal of %d bytes: %w", n, err)
		}
		if lit != nil {
			*lit += n
		}
	}
}

func (c *imapClient) readLine() ([]byte, error) { return c.readLineLit(nil) }

// literalSize parses a trailing "{n}" or "{n+}".
func literalSize(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false
	}
	num := bytes.TrimSuffix(line[open+1:len(line)-1], []byte("+"))
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// send writes one tagged command and returns its tag.
func (c *imapClient) send(cmd string) (string, error) {
	c.tag++
	tag := "b" + strconv.Itoa(c.tag)
	if err := c.deadline(); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c.conn, tag+" "+cmd+"\r\n"); err != nil {
		return "", fmt.Errorf("%s: %w", firstWord(cmd), err)
	}
	return tag, nil
}

// cmd sends a command and reads its responses up to the tagged reply,
// which must be OK.
func (c *imapClient) cmd(cmd string) (imapResult, error) {
	tag, err := c.send(cmd)
	if err != nil {
		return imapResult{}, err
	}
	return c.wait(tag, firstWord(cmd))
}

// wait reads responses until the one tagged tag.
func (c *imapClient) wait(tag, what string) (imapResult, error) {
	res := imapResult{Exists: -1}
	prefix := []byte(tag + " ")
	for {
		// A large response renews the deadline as it goes, so -cmd-timeout
		// bounds silence, not the length of a FETCH of everything.
		if err := c.deadline(); err != nil {
			return res, err
		}
		line, err := c.readLineLit(&res.Literals)
		if err != nil {
			return res, fmt.Errorf("%s: %w", what, err)
		}
		if rest, ok := bytes.CutPrefix(line, prefix); ok {
			if !bytes.HasPrefix(rest, []byte("OK")) {
				return res, &imapError{cmd: what, reply: string(rest)}
			}
			return res, nil
		}
		untagged(line, &res)
	}
}

// untagged counts one untagged response into res.
func untagged(line []byte, res *imapResult) {
	rest, ok := bytes.CutPrefix(line, []byte("* "))
	if !ok {
		return
	}
	if s, ok := bytes.CutPrefix(rest, []byte("SEARCH")); ok {
		for f := range strings.FieldsSeq(string(s)) {
			if n, err := strconv.Atoi(f); err == nil {
				res.Search = append(res.Search, n)
			}
		}
		return
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return
	}
	n, err := strconv.Atoi(string(rest[:sp]))
	if err != nil {
		return
	}
	kind := rest[sp+1:]
	switch {
	case bytes.HasPrefix(kind, []byte("FETCH")):
		res.Fetches++
	case bytes.Equal(kind, []byte("EXISTS")):
		res.Exists = n
	}
}

// login sends LOGIN with both arguments quoted.
func (c *imapClient) login(user, pass string) error {
	_, err := c.cmd("LOGIN " + imapQuote(user) + " " + imapQuote(pass))
	return err
}

// selectInbox selects INBOX and returns its message count.
func (c *imapClient) selectInbox() (int, error) {
	res, err := c.cmd("SELECT INBOX")
	if err != nil {
		return 0, err
	}
	if res.Exists < 0 {
		return 0, errors.New("SELECT: no EXISTS")
	}
	return res.Exists, nil
}

// idle starts IDLE and waits for the continuation; the tag is needed to
// end it with done.
func (c *imapClient) idle() (string, error) {
	tag, err := c.send("IDLE")
	if err != nil {
		return "", err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return "", fmt.Errorf("IDLE: %w", err)
		}
		if bytes.HasPrefix(line, []byte("+")) {
			return tag, nil
		}
		if bytes.HasPrefix(line, []byte(tag+" ")) {
			return "", &imapError{cmd: "IDLE", reply: string(line)}
		}
	}
}

// done ends IDLE started with tag.
func (c *imapClient) done(tag string) error {
	if err := c.deadline(); err != nil {
		return err
	}
	if _, err := io.WriteString(c.conn, "DONE\r\n"); err != nil {
		return fmt.Errorf("DONE: %w", err)
	}
	_, err := c.wait(tag, "IDLE")
	return err
}

func (c *imapClient) logout() error {
	_, err := c.cmd("LOGOUT")
	return err
}

// imapQuote returns s as an IMAP quoted string.
func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func firstWord(s string) string {
	if w, _, ok := strings.Cut(s, " "); ok {
		if w == "UID" {
			if w2, _, ok := strings.Cut(s[4:], " "); ok {
				return "UID " + w2
			}
		}
		return w
	}
	return s
}
