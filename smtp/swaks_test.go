package smtp

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestSwaks drives the server with swaks, a real third-party SMTP client
// (Debian package swaks): plain delivery to the MX, submission with
// STARTTLS and AUTH LOGIN and PLAIN, and implicit TLS on 465. It skips
// only where swaks is not installed; CI installs it.
func TestSwaks(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks not installed")
	}
	swaks := func(h *harness, args ...string) string {
		t.Helper()
		host, port, _ := strings.Cut(h.addr, ":")
		args = append([]string{"--server", host, "--port", port, "--ehlo", "client.test",
			"--header", "Subject: from swaks", "--body", "hello from swaks", "--timeout", "20"}, args...)
		out, err := exec.Command("swaks", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	mx := start(t, Options{})
	swaks(mx, "--from", "someone@remote.test", "--to", bob)
	sub := start(t, Options{Mode: ModeSubmission, Store: mx.st})
	for _, mech := range []string{"LOGIN", "PLAIN"} {
		out := swaks(sub, "--tls", "--auth", mech, "--auth-user", alice, "--auth-password", password,
			"--from", alice, "--to", bob)
		if !strings.Contains(out, "235 2.0.0") {
			t.Fatalf("AUTH %s not accepted:\n%s", mech, out)
		}
	}
	subs := start(t, Options{Mode: ModeSubmissions, Store: mx.st})
	swaks(subs, "--tlsc", "--auth", "LOGIN", "--auth-user", alice, "--auth-password", password,
		"--from", alice, "--to", bob)
	got := mx.inbox(bob)
	if len(got) != 4 {
		t.Fatalf("bob has %d messages, want 4", len(got))
	}
	for i, proto := range []string{" with ESMTP id ", " with ESMTPSA id ", " with ESMTPSA id ", " with ESMTPSA id "} {
		if !bytes.Contains(got[i], []byte(proto)) || !bytes.Contains(got[i], []byte("\r\n\r\nhello from swaks")) {
			t.Errorf("message %d:\n%s", i+1, got[i])
		}
	}
	// A wrong password is refused with 535 and swaks fails.
	host, port, _ := strings.Cut(sub.addr, ":")
	out, err := exec.Command("swaks", "--server", host, "--port", port, "--tls", "--auth", "LOGIN",
		"--auth-user", alice, "--auth-password", "wrong", "--from", alice, "--to", bob, "--timeout", "20").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "535 5.7.8 authentication failed") {
		t.Fatalf("wrong password: %v\n%s", err, out)
	}
}
