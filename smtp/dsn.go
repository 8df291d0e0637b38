package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// maxReturnedHeaderBytes bounds the original header returned in a bounce.
const maxReturnedHeaderBytes = 64 << 10

// dsn builds a delivery status notification (RFC 3464) for the sender of
// j about the recipients in os: a bounce (failed) or a delay warning. It
// is a multipart/report (RFC 6522) with a human-readable part, the
// machine-readable message/delivery-status, and the original header
// (text/rfc822-headers: enough to identify the message, without sending
// its body back).
func (r *Runner) dsn(ctx context.Context, j *job, os []outcome, host string, failed bool) []byte {
	now := r.opts.Now()
	host = strings.TrimSpace(host)
	boundary := randomToken()
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }

	subject, action := "Undelivered Mail Returned to Sender", "failed"
	if !failed {
		subject, action = "Delayed Mail (still being retried)", "delayed"
	}
	w("From: Mail Delivery System <MAILER-DAEMON@%s>", r.opts.Hostname)
	w("To: <%s>", j.sender)
	w("Subject: %s", subject)
	w("Date: %s", now.Format(time.RFC1123Z))
	w("Message-ID: <%s@%s>", randomToken(), r.opts.Hostname)
	w("Auto-Submitted: auto-replied") // RFC 3834: no auto-reply to this
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	w("")
	w("This is a MIME-encapsulated message.")
	w("")
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=utf-8")
	w("Content-Description: Notification")
	w("")
	w("This is the mail system at %s.", r.opts.Hostname)
	w("")
	if failed {
		w("Your message could not be delivered to one or more recipients.")
		w("It was not delivered and will not be retried.")
	} else {
		w("Your message has not been delivered yet to one or more recipients.")
		w("It was sent %s ago; delivery will be retried until %s,", now.Sub(j.created).Round(time.Minute),
			j.created.Add(r.opts.QueueLifetime).Format(time.RFC1123Z))
		w("and you will be told if it fails for good. You do not need to resend it.")
	}
	w("")
	for _, o := range os {
		w("<%s>: %s", o.entry.Recipient, errText(o.err))
	}
	w("")
	w("--%s", boundary)
	w("Content-Type: message/delivery-status")
	w("Content-Description: Delivery report")
	w("")
	w("Reporting-MTA: dns; %s", r.opts.Hostname)
	w("X-Mailbox-Queue-ID: %d", j.msgID)
	w("Arrival-Date: %s", j.created.Format(time.RFC1123Z))
	for _, o := range os {
		w("")
		w("Final-Recipient: rfc822; %s", o.entry.Recipient)
		w("Action: %s", action)
		w("Status: %s", statusCode(o.err, failed))
		if host != "" {
			w("Remote-MTA: dns; %s", host)
		}
		var re *remoteError
		if errors.As(o.err, &re) {
			w("Diagnostic-Code: smtp; %s", re.reply())
		} else {
			w("Diagnostic-Code: X-mailbox; %s", oneLine(errText(o.err)))
		}
		w("Last-Attempt-Date: %s", now.Format(time.RFC1123Z))
		if !failed {
			w("Will-Retry-Until: %s", j.created.Add(r.opts.QueueLifetime).Format(time.RFC1123Z))
		}
	}
	w("")
	w("--%s", boundary)
	w("Content-Type: text/rfc822-headers")
	w("Content-Description: Undelivered message header")
	w("")
	b.Write(r.originalHeader(ctx, j))
	w("")
	w("--%s--", boundary)
	return b.Bytes()
}

// originalHeader returns the header of the queued message (CRLF line
// ends, at most maxReturnedHeaderBytes).
func (r *Runner) originalHeader(ctx context.Context, j *job) []byte {
	rc, err := r.st.OpenQueued(ctx, j.msgID)
	if err != nil {
		return nil
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, maxReturnedHeaderBytes))
	var out bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		out.Write(line)
		if err != nil {
			break
		}
	}
	return out.Bytes()
}

// statusCode is the RFC 3463 status for a DSN: the remote server's
// enhanced code when it gave one, else one that fits the class.
func statusCode(err error, failed bool) string {
	var re *remoteError
	if errors.As(err, &re) {
		if c := re.err.EnhancedCode; c[0] >= 2 {
			return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
		}
		if re.err.Code >= 500 {
			return "5.0.0"
		}
		return "4.0.0"
	}
	var pe *permanentError
	var se *stsError
	switch {
	case errors.As(err, &pe):
		return "5.1.2" // bad destination system address
	case errors.As(err, &se) && !failed:
		return "4.7.5" // cryptographic failure: no acceptable TLS (RFC 3463 §3.8)
	case failed:
		return "4.4.7" // delivery time expired (RFC 3463 §3.5)
	}
	return "4.4.1" // no answer from host
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func randomToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
