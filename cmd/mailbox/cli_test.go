package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"mailbox/store"
)

// runCLI runs one command line in-process with its own data directory flag.
func runCLI(t *testing.T, data, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(string) string { return "" },
	}
	if data != "" {
		args = append(args, "--data", data)
	}
	code = c.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // regexp
		stderr string // regexp
	}{
		{args: nil, code: exitUsage, stderr: `(?s)Usage:.*user add ADDRESS`},
		{args: []string{"help"}, code: exitOK, stdout: `(?s)Commands:.*serve.*status.*alias del`},
		{args: []string{"-h"}, code: exitOK, stdout: `Usage:`},
		{args: []string{"help", "user", "add"}, code: exitOK, stdout: `(?s)Usage: mailbox user add \[flags\] ADDRESS.*-password-stdin`},
		{args: []string{"user", "add", "-h"}, code: exitOK, stdout: `(?s)Usage: mailbox user add.*-quota`},
		{args: []string{"serve", "--help"}, code: exitOK, stdout: `(?s)SIGTERM`},
		{args: []string{"help", "user"}, code: exitOK, stdout: `mailbox user passwd`},
		{args: []string{"user"}, code: exitUsage, stderr: `mailbox user list`},
		{args: []string{"user", "frobnicate"}, code: exitUsage, stderr: `unknown command "frobnicate"`},
		{args: []string{"frobnicate"}, code: exitUsage, stderr: `unknown command "frobnicate"`},
		{args: []string{"user", "add"}, code: exitUsage, stderr: `wrong number of arguments`},
		{args: []string{"user", "add", "a@b", "--bogus"}, code: exitUsage, stderr: `flag provided but not defined: -bogus`},
		{args: []string{"domain", "list", "extra"}, code: exitUsage, stderr: `wrong number of arguments`},
		{args: []string{"config", "--set", "smtp.max_message_size=25 MB"}, code: exitUsage, stderr: `config: smtp\.max_message_size: "25 MB": unknown unit`},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCLI(t, "", "", tt.args...)
		if code != tt.code {
			t.Errorf("%q: exit %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.code, stdout, stderr)
		}
		if tt.stdout != "" && !regexp.MustCompile(tt.stdout).MatchString(stdout) {
			t.Errorf("%q: stdout %q does not match %s", tt.args, stdout, tt.stdout)
		}
		if tt.stderr != "" && !regexp.MustCompile(tt.stderr).MatchString(stderr) {
			t.Errorf("%q: stderr %q does not match %s", tt.args, stderr, tt.stderr)
		}
	}
}

// The admin commands, in-process, against a store the test then opens.
func TestCLIAdmin(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	step := func(stdin string, wantCode int, want string, args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(t, data, stdin, args...)
		if code != wantCode {
			t.Fatalf("%q: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, stdout, stderr)
		}
		if !strings.Contains(stdout+stderr, want) {
			t.Fatalf("%q: output lacks %q\nstdout: %s\nstderr: %s", args, want, stdout, stderr)
		}
		return stdout
	}

	step("", exitError, "no mailbox database in", "user", "list")
	step("", exitOK, "added domain example.org", "domain", "add", "Example.ORG")
	step("", exitError, "already exists", "domain", "add", "example.org")
	step("", exitUsage, "not a valid domain name", "domain", "add", "bad domain")
	step("pass word\n", exitError, "add it first with 'mailbox domain add other.org'", "user", "add", "bob@other.org", "--password-stdin")
	step("", exitError, "no password on standard input", "user", "add", "alice@example.org", "--password-stdin")
	step("pass", exitUsage, "not a terminal", "user", "add", "alice@example.org")
	step("pass word\r\n", exitOK, "created account alice@example.org", "user", "add", "--password-stdin", "alice@example.org", "--quota", "1MiB")
	step("x\n", exitError, "already exists", "user", "add", "alice@example.org", "--password-stdin")
	step("", exitOK, "quota of alice@example.org is 2.0 MiB", "user", "quota", "alice@example.org", "2MiB")
	step("", exitUsage, "unknown unit", "user", "quota", "alice@example.org", "2 MiB")
	step("", exitOK, "move messages to Trash", "user", "pop3-delete", "alice@example.org", "trash")
	step("", exitUsage, "want expunge or trash", "user", "pop3-delete", "alice@example.org", "keep")
	step("", exitError, "no account nobody@example.org", "user", "pop3-delete", "nobody@example.org", "trash")
	step("", exitOK, "now goes to alice@example.org", "alias", "add", "@example.org", "alice@example.org")
	step("", exitOK, "now goes to alice@example.org", "alias", "add", "info@example.org", "alice@example.org")
	step("", exitOK, "@example.org", "alias", "list")
	list := step("", exitOK, "alice@example.org", "user", "list")
	if !regexp.MustCompile(`alice@example\.org\s+0\s+0 B\s+2\.0 MiB\s+trash`).MatchString(list) {
		t.Errorf("user list:\n%s", list)
	}
	step("", exitError, "still has accounts or aliases", "domain", "del", "example.org")

	st, err := store.Open(context.Background(), store.Options{Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Login(context.Background(), "alice@example.org", "pass word"); err != nil {
		t.Errorf("login with the password from stdin (CRLF stripped, space kept): %v", err)
	}
	if keys, err := st.DKIMKeys(context.Background(), "example.org"); err != nil || len(keys) != 2 {
		t.Errorf("domain add made %d DKIM keys (%v), want Ed25519 and RSA", len(keys), err)
	}
	got, err := st.Resolve(context.Background(), "whoever@example.org")
	if err != nil || len(got) != 1 || got[0] != "alice@example.org" {
		t.Errorf("catch-all: %v %v", got, err)
	}
	st.Close()

	step("new\n", exitOK, "changed the password", "user", "passwd", "alice@example.org", "--password-stdin")
	step("new\n", exitError, "no account x@example.org", "user", "passwd", "x@example.org", "--password-stdin")
	step("", exitOK, "deleted alias info@example.org", "alias", "del", "info@example.org")
	step("", exitError, "no alias info@example.org", "alias", "del", "info@example.org")
	step("", exitOK, "deleted alias @example.org alice@example.org", "alias", "del", "@example.org", "alice@example.org")
	status := step("", exitOK, "Accounts (1)", "status")
	if !strings.Contains(status, "Domains (1): example.org") {
		t.Errorf("status:\n%s", status)
	}
	step("", exitOK, "deleted account alice@example.org", "user", "del", "alice@example.org")
	step("", exitOK, "deleted domain example.org", "domain", "del", "example.org")
	step("", exitError, "no domain example.org", "domain", "del", "example.org")

	pem := step("", exitOK, "-----BEGIN CERTIFICATE-----", "tls", "ca")
	if !strings.HasSuffix(pem, "-----END CERTIFICATE-----\n") {
		t.Errorf("tls ca: %q", pem)
	}
}
