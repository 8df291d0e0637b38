package smtp

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"
)

// maxHeloBytes bounds the client's EHLO name as copied into Received:.
const maxHeloBytes = 255

// traceHeaders returns the header lines added in front of a message at
// delivery: Return-Path (RFC 5321 §4.4: the final delivery MUST add it)
// and Received, e.g.
//
//	Return-Path: <alice@example.org>
//	Received: from client.example ([192.0.2.1])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
//		by mail.example.org (mailbox) with ESMTPSA id 1f2e3d4c.1
//		for <bob@example.org>; Sun, 22 Nov 2026 03:38:57 +0000
//
// "for" appears only with exactly one recipient, so a Bcc recipient is
// never named to the others. The bytes are the same for every recipient
// of the transaction: one copy is stored for all.
func (sess *session) traceHeaders(tx transaction, msgid string, now time.Time) string {
	var b strings.Builder
	if sess.srv.opts.Mode == ModeMX {
		// Submitted mail travels on; the final delivery adds Return-Path.
		fmt.Fprintf(&b, "Return-Path: %s\r\n", renderPath(tx.from))
	}
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n", cleanHelo(sess.lib.Hostname()), addressLiteral(sess.conn))
	proto := "ESMTP"
	if cs, ok := sess.lib.TLSConnectionState(); ok {
		proto += "S"
		fmt.Fprintf(&b, "\t(using %s with cipher %s)\r\n", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	}
	sess.mu.Lock()
	if sess.user != "" {
		proto += "A" // RFC 3848; the account itself is not disclosed
	}
	sess.mu.Unlock()
	fmt.Fprintf(&b, "\tby %s (mailbox) with %s id %s", sess.srv.opts.Hostname, proto, msgid)
	if len(tx.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor %s", renderPath(tx.rcpts[0]))
	}
	fmt.Fprintf(&b, "; %s\r\n", now.Format(time.RFC1123Z))
	return b.String()
}

// addressLiteral is the client's address as RFC 5321 §4.1.3 writes it.
func addressLiteral(c *conn) string {
	if c.ip.Is6() {
		return "[IPv6:" + c.ip.String() + "]"
	}
	return "[" + c.ip.String() + "]"
}

// cleanHelo makes the client's EHLO argument safe inside a header: it is
// whatever the client sent, so anything outside printable ASCII, and the
// characters that would end a comment or the clause, become '_'.
func cleanHelo(helo string) string {
	if len(helo) > maxHeloBytes {
		helo = helo[:maxHeloBytes]
	}
	b := []byte(helo)
	for i, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()\";`, c) >= 0 {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}
