package smtp

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// traceRe matches the headers added at delivery on a plain MX connection.
var traceRe = regexp.MustCompile(`^Return-Path: <[^>]*>\r\nReceived: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby mx\.example\.test \(mailbox\) with ESMTP id [0-9a-f]{8}\.1\r\n(\tfor <[^>]+>)?; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n`)

func TestDeliverMX(t *testing.T) {
	h := start(t, Options{Hostname: "mx.example.test"})
	msg := "From: x@remote.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
	if err := h.send("x@remote.test", []string{bob}, msg); err != nil {
		t.Fatal(err)
	}
	got := h.inbox(bob)
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	loc := traceRe.FindIndex(got[0])
	if loc == nil {
		t.Fatalf("trace headers missing:\n%s", got[0])
	}
	if !bytes.Equal(got[0][loc[1]:], []byte(msg)) {
		t.Fatalf("body differs:\n%q\nwant\n%q", got[0][loc[1]:], msg)
	}
	if !strings.Contains(string(got[0]), "\tfor <bob@example.test>;") {
		t.Errorf("no for clause:\n%s", got[0])
	}
}
