// Package storetest builds real stores for tests: a store in a temporary
// directory with domains, accounts and messages, in one call. It is for
// tests only; nothing in the server imports it.
package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"mailbox/store"
)

// Fixture describes what New puts in the store.
type Fixture struct {
	// Users maps address to password; their domains are added.
	Users map[string]string
	// Messages maps address to raw messages delivered to its INBOX in
	// order.
	Messages map[string][]string
	// Options are passed to store.Open (Dir is set by New if empty).
	Options store.Options
}

// New opens a store in t.TempDir() (or f.Options.Dir) filled with the
// fixture, and closes it when the test ends.
func New(t testing.TB, f Fixture) *store.Store {
	t.Helper()
	ctx := context.Background()
	opts := f.Options
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	st, err := store.Open(ctx, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	domains := map[string]bool{}
	for addr, pass := range f.Users {
		d := addr[strings.LastIndexByte(addr, '@')+1:]
		if !domains[d] {
			if err := st.AddDomain(ctx, d); err != nil {
				t.Fatalf("add domain %s: %v", d, err)
			}
			domains[d] = true
		}
		if _, err := st.CreateAccount(ctx, addr, pass); err != nil {
			t.Fatalf("create account %s: %v", addr, err)
		}
	}
	for addr, msgs := range f.Messages {
		for _, m := range msgs {
			Deliver(t, st, addr, m)
		}
	}
	return st
}

// Deliver stores one raw message (LF line ends become CRLF) in addr's INBOX.
func Deliver(t testing.TB, st *store.Store, addr, raw string) store.Delivered {
	t.Helper()
	d, err := st.Deliver(context.Background(), store.Delivery{Recipients: []string{addr}, Data: []byte(CRLF(raw))})
	if err != nil {
		t.Fatalf("deliver to %s: %v", addr, err)
	}
	return d[0]
}

// CRLF turns bare LF line ends into CRLF.
func CRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// Message returns a small valid message with the given subject and body.
func Message(from, to, subject, body string) string {
	return fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d.%s>\r\n\r\n%s\r\n",
		from, to, subject, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC1123Z),
		time.Now().UnixNano(), strings.ReplaceAll(from, "@", "."), CRLF(body))
}
