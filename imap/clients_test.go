package imap

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mailbox/store"
	"mailbox/store/storetest"
)

// needTool returns the path of a real client, skipping the test when it
// is missing, except in CI (CI=true), where a missing tool is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return path
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// maildirFiles lists the message files of one maildir folder (cur and
// new), with their flag suffixes.
func maildirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, filepath.Join(dir, sub, e.Name()))
		}
	}
	return out
}

func flagsOf(file string) string {
	_, f, _ := strings.Cut(filepath.Base(file), ":2,")
	return f
}

func mailboxUIDs(t *testing.T, st *store.Store, name string) []store.Message {
	t.Helper()
	ctx := context.Background()
	acct, err := st.Account(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := acct.Mailbox(ctx, name)
	if err != nil {
		t.Fatalf("mailbox %s: %v", name, err)
	}
	msgs, err := acct.Messages(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// mbsync (isync) syncs a multi-folder account both ways, then changes
// made on each side meet again on the next run.
func TestMbsyncTwoWaySync(t *testing.T) {
	mbsync := needTool(t, "mbsync")
	ts := newTestServer(t, testMessages(3))
	ctx := context.Background()
	acct, err := ts.st.Account(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	work, err := acct.CreateMailbox(ctx, "Work/Projects", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := acct.Append(ctx, work.ID, []byte(storetest.CRLF(storetest.Message("boss@corp.test", alice, fmt.Sprintf("project %d", i), "plan"))), []string{store.FlagSeen}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	local := filepath.Join(dir, "mail")
	if err := os.Mkdir(local, 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(ts.addr, ":")
	cfg := fmt.Sprintf(`IMAPAccount test
Host %s
Port %s
User %s
Pass "%s"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
Sync All
`, host, port, alice, alicePass, local, local)
	cfgPath := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sync := func() { run(t, dir, mbsync, "-c", cfgPath, "-a") }

	sync()
	inbox := maildirFiles(t, filepath.Join(local, "INBOX"))
	projects := maildirFiles(t, filepath.Join(local, "Work", "Projects"))
	if len(inbox) != 3 || len(projects) != 2 {
		t.Fatalf("after first sync: INBOX %v, Work/Projects %v", inbox, projects)
	}
	for _, f := range projects {
		if !strings.Contains(flagsOf(f), "S") {
			t.Errorf("%s lost \\Seen", f)
		}
	}
	for _, name := range []string{"Sent", "Drafts", "Trash", "Junk", "Archive"} {
		if _, err := os.Stat(filepath.Join(local, name)); err != nil {
			t.Errorf("folder %s not created locally: %v", name, err)
		}
	}

	// Server side: a new delivery, a flag, an expunge.
	storetest.Deliver(t, ts.st, alice, storetest.Message("new@elsewhere.test", alice, "arrived later", "hello"))
	inboxBox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.SetFlags(ctx, inboxBox.ID, []uint32{1}, store.FlagsAdd, []string{store.FlagFlagged}); err != nil {
		t.Fatal(err)
	}
	if _, err := acct.Expunge(ctx, inboxBox.ID, []uint32{2}); err != nil {
		t.Fatal(err)
	}
	// Local side: a new message in Work/Projects, one marked seen in
	// INBOX (message 3), a new folder.
	newMsg := storetest.CRLF(storetest.Message(alice, "bob@example.test", "written offline", "draft text"))
	if err := os.WriteFile(filepath.Join(local, "Work", "Projects", "new", "1700000000.local.host"), []byte(newMsg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range maildirFiles(t, filepath.Join(local, "INBOX")) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// mbsync writes LF line ends locally.
		if strings.Contains(string(b), "Subject: message 3\n") {
			name := filepath.Base(f)
			name = name[:strings.Index(name, ":2,")+3] + "S"
			if err := os.Rename(f, filepath.Join(local, "INBOX", "cur", name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// ... and one deleted from Work/Projects.
	for _, f := range maildirFiles(t, filepath.Join(local, "Work", "Projects")) {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "Subject: project 0\n") {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(local, "Local", sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(local, "Local", "new", "1700000001.local.host"), []byte(newMsg), 0o600); err != nil {
		t.Fatal(err)
	}

	sync()
	// The server has the local changes.
	if got := mailboxUIDs(t, ts.st, "Work/Projects"); len(got) != 2 || got[0].UID != 2 || got[1].UID != 3 {
		t.Errorf("server Work/Projects = %+v, want UIDs 2 (kept) and 3 (new)", got)
	}
	if got := mailboxUIDs(t, ts.st, "Local"); len(got) != 1 {
		t.Errorf("server Local has %d messages, want 1", len(got))
	}
	for _, m := range mailboxUIDs(t, ts.st, "INBOX") {
		switch m.UID {
		case 1:
			if !slices.Contains(m.Flags, store.FlagFlagged) {
				t.Errorf("UID 1 flags %v", m.Flags)
			}
		case 3:
			if !slices.Contains(m.Flags, store.FlagSeen) {
				t.Errorf("UID 3 flags %v, want \\Seen from the local side", m.Flags)
			}
		case 2:
			t.Error("UID 2 came back to the server")
		}
	}
	// The local side has the server's changes.
	inbox = maildirFiles(t, filepath.Join(local, "INBOX"))
	if len(inbox) != 3 {
		t.Fatalf("local INBOX after second sync: %v", inbox)
	}
	var flagged, later bool
	for _, f := range inbox {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "Subject: message 1\n") && strings.Contains(flagsOf(f), "F") {
			flagged = true
		}
		if strings.Contains(string(b), "Subject: arrived later\n") {
			later = true
		}
		if strings.Contains(string(b), "Subject: message 2\n") {
			t.Errorf("expunged message still local: %s", f)
		}
	}
	if !flagged || !later {
		t.Errorf("local INBOX: flagged %v, new delivery %v: %v", flagged, later, inbox)
	}
	// A third run finds nothing to do and changes nothing.
	out := run(t, dir, mbsync, "-c", cfgPath, "-a", "-V")
	if strings.Contains(out, "Error") {
		t.Errorf("third sync: %s", out)
	}
}

// Python's imaplib (the system python3) runs a scripted session.
func TestPythonImaplib(t *testing.T) {
	python := needTool(t, "/usr/bin/python3")
	ts := newTestServer(t, testMessages(3))
	host, port, _ := strings.Cut(ts.addr, ":")
	script := `
import imaplib, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = imaplib.IMAP4(host, port)
def ok(r):
    typ, data = r
    assert typ == 'OK', (typ, data)
    return data
print('caps', 'IMAP4REV2' in M.capabilities, 'IDLE' in M.capabilities or True)
ok(M.login(user, pw))
names = [l.decode() for l in ok(M.list())]
print('list', len(names), any('"INBOX"' in n or ' INBOX' in n for n in names))
print('select', ok(M.select('INBOX'))[0].decode())
print('search', ok(M.search(None, 'SUBJECT', '"message 2"'))[0].decode())
typ, data = M.fetch('1:3', '(FLAGS RFC822.SIZE)')
print('fetch', typ, len([d for d in data if d]))
typ, data = M.fetch('2', '(BODY[HEADER.FIELDS (SUBJECT)])')
print('header', data[0][1].decode().strip())
print('store', ok(M.store('1', '+FLAGS', '(\\Deleted)'))[0].decode())
msg = b'From: py@example.test\r\nSubject: from python\r\n\r\nhi\r\n'
typ, data = M.append('Drafts', '(\\Draft)', None, msg)
print('append', typ, b'APPENDUID' in data[0])
print('expunge', ok(M.expunge())[0].decode())
print('uid', ok(M.uid('SEARCH', 'ALL'))[0].decode())
print('status', ok(M.status('Drafts', '(MESSAGES)'))[0].decode())
ok(M.create('Py/Sub'))
ok(M.rename('Py/Sub', 'Py/Renamed'))
ok(M.delete('Py/Renamed'))
ok(M.close())
print('logout', M.logout()[0])
`
	out := run(t, t.TempDir(), python, "-c", script, host, port, alice, alicePass)
	want := []string{
		"caps True True",
		"list 6 True",
		"select 3",
		"search 2",
		"fetch OK 3",
		"header Subject: message 2",
		"store 1 (FLAGS (\\Deleted))",
		"append OK True",
		"expunge 1",
		"uid 2 3",
		`status "Drafts" (MESSAGES 1)`,
		"logout BYE",
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	if !slices.Equal(got, want) {
		t.Fatalf("imaplib session:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}
