package imap

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mailbox/store"
	"mailbox/store/storetest"
)

// rawConn is a minimal IMAP client on a socket, for tests that need many
// connections or exact control over reading.
type rawConn struct {
	net.Conn
	r       *bufio.Reader
	timeout time.Duration // for expect; 0 means 10s
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{Conn: c, r: bufio.NewReaderSize(c, 512)}
	rc.expect(t, "* OK")
	return rc
}

// expect reads lines until one starts with prefix.
func (c *rawConn) expect(t testing.TB, prefix string) string {
	t.Helper()
	timeout := c.timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
}

func (c *rawConn) send(t testing.TB, line string) {
	t.Helper()
	if _, err := c.Write([]byte(line + "\r\n")); err != nil {
		t.Fatal(err)
	}
}

// Shutdown says BYE to idle and IDLEing sessions and returns once they
// are gone.
func TestShutdownSaysBye(t *testing.T) {
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{alice: alicePass}})
	srv := New(Options{Store: st, Logger: testLogger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fresh := dialRaw(t, ln.Addr().String())
	idler := dialRaw(t, ln.Addr().String())
	idler.send(t, `a LOGIN alice@example.test "alice secret"`)
	idler.expect(t, "a OK")
	idler.send(t, "b SELECT INBOX")
	idler.expect(t, "b OK")
	idler.send(t, "c IDLE")
	idler.expect(t, "+")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
	for _, c := range []*rawConn{fresh, idler} {
		c.expect(t, "* BYE")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

// A client that stops reading in the middle of a big FETCH blocks only
// itself: deliveries still reach an IDLE session at once.
func TestSlowReaderBlocksOnlyItself(t *testing.T) {
	big := storetest.Message("x@y.test", alice, "big", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 40000))
	ts := newTestServer(t, []string{big, big, big, big})
	slow := dialRaw(t, ts.addr)
	slow.send(t, `a LOGIN alice@example.test "alice secret"`)
	slow.expect(t, "a OK")
	slow.send(t, "b SELECT INBOX")
	slow.expect(t, "b OK")
	slow.send(t, "c FETCH 1:* (BODY[])") // and never read the 10 MB answer
	time.Sleep(200 * time.Millisecond)

	idler := ts.login(t, alice, alicePass)
	idler.mustSelect(t, "INBOX")
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	storetest.Deliver(t, ts.st, alice, storetest.Message("x@y.test", alice, "small", "hi"))
	idler.up.wait(t, "EXISTS 5", 5*time.Second)
	if d := time.Since(start); d > time.Second {
		t.Errorf("EXISTS took %v while a client was stuck", d)
	}
	idle.Close()
}

// Deep MIME nesting is cut by the store's parser; FETCH BODYSTRUCTURE
// and sections of the deepest part still work.
func TestDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: a@b.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n")
	const depth = 200
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"bnd%04d=\"\r\n\r\n--bnd%04d=\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\ninnermost\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--bnd%04d=--\r\n", i)
	}
	ts := newTestServer(t, []string{b.String()})
	c := ts.login(t, alice, alicePass)
	c.mustSelect(t, "INBOX")
	msgs := c.fetch(t, imap.SeqSetNum(1), &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, Envelope: true})
	if len(msgs) != 1 || msgs[0].BodyStructure == nil || msgs[0].Envelope.Subject != "deep" {
		t.Fatalf("FETCH = %+v", msgs)
	}
	levels := 0
	var walk func(bs imap.BodyStructure)
	walk = func(bs imap.BodyStructure) {
		if mp, ok := bs.(*imap.BodyStructureMultiPart); ok {
			levels++
			walk(mp.Children[0])
		}
	}
	walk(msgs[0].BodyStructure)
	if levels == 0 || levels >= depth {
		t.Fatalf("BODYSTRUCTURE has %d multipart levels; want the parser's cap, below %d", levels, depth)
	}
	path := make([]int, levels)
	for i := range path {
		path[i] = 1
	}
	msgs = c.fetch(t, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Part: path, Peek: true}}})
	if len(msgs[0].BodySection) != 1 || len(msgs[0].BodySection[0].Bytes) == 0 {
		t.Fatalf("BODY[1.1...1] = %+v", msgs[0].BodySection)
	}
}

// Many IDLE sessions: memory per connection stays small, and one
// delivery reaches every session.
func TestManyIdleConnections(t *testing.T) {
	n := 500
	switch {
	case raceEnabled:
		n = 30 // argon2id logins crawl under the race detector
	case testing.Short():
		n = 100
	}
	ts := newTestServer(t, testMessages(100), func(o *Options) { o.MaxConnsPerIP = 2 * n })
	// Log in through a few sessions first (argon2id is deliberately slow),
	// then open the rest.
	conns := make([]*rawConn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var failed error
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
				return
			}
			rc := &rawConn{Conn: c, r: bufio.NewReaderSize(c, 512), timeout: 3 * time.Minute}
			conns[i] = rc
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := conns[i]
			c.expect(t, "* OK")
			c.send(t, `a LOGIN alice@example.test "alice secret"`)
			c.expect(t, "a OK")
			c.send(t, "b SELECT INBOX")
			c.expect(t, "b OK")
			c.send(t, "c IDLE")
			c.expect(t, "+")
		}()
	}
	wg.Wait()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perConn := (int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)) / int64(n)
	t.Logf("%d IDLE sessions: %d bytes per connection (server and raw client, heap+stacks)", n, perConn)
	if perConn > 96<<10 {
		t.Errorf("%d bytes per IDLE connection", perConn)
	}

	start := time.Now()
	if _, err := ts.st.Deliver(context.Background(), store.Delivery{Recipients: []string{alice}, Data: []byte(storetest.CRLF(storetest.Message("x@y.test", alice, "push", "x")))}); err != nil {
		t.Fatal(err)
	}
	delivered := time.Since(start)
	lat := make([]time.Duration, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.expect(t, "* 101 EXISTS")
			lat[i] = time.Since(start) - delivered
		}()
	}
	wg.Wait()
	var worst time.Duration
	for _, d := range lat {
		worst = max(worst, d)
	}
	t.Logf("EXISTS reached all %d sessions within %v of the delivery's return", n, worst)
	if worst > 2*time.Second {
		t.Errorf("slowest EXISTS after %v", worst)
	}
}

// A selected session that never reads its updates (no IDLE, no command)
// is disconnected with BYE once its backlog passes MaxPendingUpdates and
// it has been silent for PendingGrace; an IDLE session in the same
// mailbox gets every update and stays, and so does the session whose own
// STOREs made the changes.
func TestSilentSessionBacklogIsBounded(t *testing.T) {
	const limit = 40
	ts := newTestServer(t, testMessages(10), func(o *Options) {
		o.MaxPendingUpdates = limit
		o.PendingGrace = 200 * time.Millisecond
	})
	open := func() *rawConn {
		c := dialRaw(t, ts.addr)
		c.send(t, `a LOGIN alice@example.test "alice secret"`)
		c.expect(t, "a OK")
		c.send(t, "b SELECT INBOX")
		c.expect(t, "b OK")
		return c
	}
	silent, idle, storer := open(), open(), open()
	idle.send(t, "c IDLE")
	idle.expect(t, "+")
	time.Sleep(300 * time.Millisecond) // past the grace for the silent one

	// 12 STOREs of 10 messages: 120 FETCH updates for each other session,
	// three times the limit, and each STORE's own FETCH for the storer.
	for i := range 12 {
		op := "+"
		if i%2 == 1 {
			op = "-"
		}
		storer.send(t, fmt.Sprintf("s%d STORE 1:10 %sFLAGS.SILENT (\\Flagged)", i, op))
		storer.expect(t, fmt.Sprintf("s%d OK", i))
		if i == 0 {
			// The IDLE session reads as it goes (its read resets the count).
			for range 10 {
				idle.expect(t, "* ")
			}
		}
	}
	line := silent.expect(t, "* BYE")
	if !strings.Contains(line, "reconnect") {
		t.Errorf("BYE line %q", line)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.r.ReadString('\n'); err == nil {
		t.Error("connection still open after BYE")
	}

	// The IDLE session saw the last change, and both others still work.
	idle.expect(t, `* 10 FETCH (UID 10 FLAGS ())`)
	idle.send(t, "DONE")
	idle.expect(t, "c OK")
	idle.send(t, "d NOOP")
	idle.expect(t, "d OK")
	storer.send(t, "n NOOP")
	storer.expect(t, "n OK")
}
