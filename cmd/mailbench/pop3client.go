package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// pop3ReadBuffer is the reader size of a POP3 connection. Lines longer than
// this are still read correctly, in pieces.
const pop3ReadBuffer = 64 << 10

// pop3Error is a -ERR reply; Text is what followed "-ERR ".
type pop3Error struct {
	Cmd  string // the verb that failed, never its arguments (PASS)
	Text string
}

func (e *pop3Error) Error() string {
	return fmt.Sprintf("pop3 %s: -ERR %s", e.Cmd, e.Text)
}

// pop3Options says how to reach and log in to a POP3 server.
type pop3Options struct {
	Addr      string
	TLS       bool          // implicit TLS (POP3S)
	STLS      bool          // RFC 2595 STLS after the greeting
	Insecure  bool          // skip certificate verification (self-signed test servers)
	SASLPlain bool          // RFC 5034 AUTH PLAIN instead of USER/PASS
	Timeout   time.Duration // per command and reply
}

// pop3Client is a minimal RFC 1939 client: one command at a time, exact
// octet counting of multi-line replies, byte-stuffing removed. It is not
// safe for concurrent use.
type pop3Client struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

// dialPOP3 connects and reads the greeting.
func dialPOP3(ctx context.Context, o pop3Options) (*pop3Client, error) {
	d := net.Dialer{Timeout: o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(o.Addr)
	tlsConf := &tls.Config{ServerName: host, InsecureSkipVerify: o.Insecure} //nolint:gosec // opt-in for self-signed test servers
	if o.TLS {
		conn = tls.Client(conn, tlsConf)
	}
	c := newPOP3Client(conn, o.Timeout)
	if _, err := c.reply("greeting"); err != nil {
		conn.Close()
		return nil, err
	}
	if o.STLS {
		if _, err := c.cmd("STLS"); err != nil {
			conn.Close()
			return nil, err
		}
		c.setConn(tls.Client(conn, tlsConf))
	}
	return c, nil
}

func newPOP3Client(conn net.Conn, timeout time.Duration) *pop3Client {
	c := &pop3Client{timeout: timeout}
	c.setConn(conn)
	return c
}

func (c *pop3Client) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReaderSize(conn, pop3ReadBuffer)
	c.w = bufio.NewWriter(conn)
}

// Close drops the connection without QUIT: the server must not enter the
// UPDATE state, so nothing is deleted.
func (c *pop3Client) Close() error { return c.conn.Close() }

// cmd sends one command line and reads its single-line reply; it returns the
// text after "+OK" (without the leading space).
func (c *pop3Client) cmd(line string) (string, error) {
	verb, _, _ := strings.Cut(line, " ")
	if err := c.send(line); err != nil {
		return "", fmt.Errorf("pop3 %s: %w", verb, err)
	}
	return c.reply(verb)
}

func (c *pop3Client) send(line string) error {
	if c.timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(c.timeout))
	}
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	return c.w.Flush()
}

// reply reads one status line.
func (c *pop3Client) reply(verb string) (string, error) {
	if c.timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(c.timeout))
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("pop3 %s: read reply: %w", verb, err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+OK"):
		return strings.TrimPrefix(line[3:], " "), nil
	case strings.HasPrefix(line, "-ERR"):
		return "", &pop3Error{Cmd: verb, Text: strings.TrimPrefix(line[4:], " ")}
	case strings.HasPrefix(line, "+ "), line == "+":
		return strings.TrimPrefix(line[1:], " "), errContinuation
	default:
		return "", fmt.Errorf("pop3 %s: malformed reply %q", verb, truncate(line, 80))
	}
}

// errContinuation reports a SASL "+ " continuation where a status was due.
var errContinuation = errors.New("pop3: unexpected continuation")

// readMulti copies the body of a multi-line reply to w: byte-stuffing
// removed (RFC 1939 §3), CRLF kept, the terminating "." line dropped. It
// returns the number of bytes written, which for RETR must equal the
// message's octet count.
func (c *pop3Client) readMulti(w io.Writer) (int64, error) {
	var n int64
	atLineStart := true
	for {
		if c.timeout > 0 {
			c.conn.SetDeadline(time.Now().Add(c.timeout))
		}
		chunk, err := c.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return n, fmt.Errorf("read multi-line reply: %w", err)
		}
		if atLineStart && len(chunk) > 0 && chunk[0] == '.' {
			if bytes.Equal(chunk, []byte(".\r\n")) {
				return n, nil
			}
			chunk = chunk[1:]
		}
		atLineStart = err == nil // a full buffer means the line goes on
		m, werr := w.Write(chunk)
		n += int64(m)
		if werr != nil {
			return n, werr
		}
	}
}

// login authenticates with USER/PASS, or AUTH PLAIN when sasl is set.
func (c *pop3Client) login(user, pass string, sasl bool) error {
	if sasl {
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		if err := c.send("AUTH PLAIN " + ir); err != nil {
			return fmt.Errorf("pop3 AUTH: %w", err)
		}
		_, err := c.reply("AUTH")
		return err
	}
	if _, err := c.cmd("USER " + user); err != nil {
		return err
	}
	if err := c.send("PASS " + pass); err != nil {
		return fmt.Errorf("pop3 PASS: %w", err)
	}
	_, err := c.reply("PASS")
	return err
}

// stat returns the message count and total size of the maildrop.
func (c *pop3Client) stat() (count int, size int64, err error) {
	text, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(text)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("pop3 STAT: malformed reply %q", truncate(text, 80))
	}
	count, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || count < 0 || size < 0 {
		return 0, 0, fmt.Errorf("pop3 STAT: malformed reply %q", truncate(text, 80))
	}
	return count, size, nil
}

// list returns the size of every message, indexed by message number (index
// 0 is unused). Deleted messages (absent from LIST) have size -1.
func (c *pop3Client) list(count int) ([]int64, error) {
	if _, err := c.cmd("LIST"); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := c.readMulti(&buf); err != nil {
		return nil, fmt.Errorf("pop3 LIST: %w", err)
	}
	sizes := make([]int64, count+1)
	for i := range sizes {
		sizes[i] = -1
	}
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\r\n"), "\r\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("pop3 LIST: malformed line %q", truncate(line, 80))
		}
		num, err1 := strconv.Atoi(f[0])
		size, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || num < 1 || num > count || size < 0 {
			return nil, fmt.Errorf("pop3 LIST: malformed line %q", truncate(line, 80))
		}
		sizes[num] = size
	}
	return sizes, nil
}

// retr downloads message num into w and returns its size in bytes.
func (c *pop3Client) retr(num int, w io.Writer) (int64, error) {
	if _, err := c.cmd("RETR " + strconv.Itoa(num)); err != nil {
		return 0, err
	}
	n, err := c.readMulti(w)
	if err != nil {
		return n, fmt.Errorf("pop3 RETR %d: %w", num, err)
	}
	return n, nil
}

// quit ends the session politely (the server enters UPDATE) and closes.
func (c *pop3Client) quit() error {
	_, err := c.cmd("QUIT")
	c.conn.Close()
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// pop3Count logs in, reads STAT and quits: the number of messages a new
// POP3 session would see.
func pop3Count(ctx context.Context, o pop3Options, user, pass string) (int, error) {
	c, err := dialPOP3(ctx, o)
	if err != nil {
		return 0, err
	}
	if err := c.login(user, pass, o.SASLPlain); err != nil {
		c.Close()
		return 0, err
	}
	n, _, err := c.stat()
	if err != nil {
		c.Close()
		return 0, err
	}
	return n, c.quit()
}

// pop3DeleteAll logs in, marks every message deleted and quits, so the
// server removes them in its UPDATE state.
func pop3DeleteAll(ctx context.Context, o pop3Options, user, pass string) error {
	c, err := dialPOP3(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.login(user, pass, o.SASLPlain); err != nil {
		return err
	}
	n, _, err := c.stat()
	if err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		if _, err := c.cmd("DELE " + strconv.Itoa(i)); err != nil {
			return err
		}
	}
	return c.quit()
}
