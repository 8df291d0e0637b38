package store

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
)

// POP3 deletion modes, per account.
const (
	// POP3Expunge removes a message deleted over POP3 (RFC 1939).
	POP3Expunge = "expunge"
	// POP3Trash moves a message deleted over POP3 to the Trash mailbox, so
	// IMAP or the webmail can still recover it.
	POP3Trash = "trash"
)

// Mailbox roles (special-use, RFC 6154). Every new account gets one
// mailbox of each.
const (
	RoleInbox   = "inbox"
	RoleSent    = "sent"
	RoleDrafts  = "drafts"
	RoleTrash   = "trash"
	RoleJunk    = "junk"
	RoleArchive = "archive"
)

// defaultMailboxes are created for every new account, INBOX first.
var defaultMailboxes = []struct{ name, role string }{
	{"INBOX", RoleInbox},
	{"Sent", RoleSent},
	{"Drafts", RoleDrafts},
	{"Trash", RoleTrash},
	{"Junk", RoleJunk},
	{"Archive", RoleArchive},
}

// argon2id parameters: one of OWASP's equivalent recommended sets (7 MiB,
// t=5, p=1). The low-memory set is chosen because a small VPS keeps what a
// burst of logins allocated; hashSlots bounds how many run at once.
const (
	argonTime    = 5
	argonMemKiB  = 7 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// AccountInfo describes an account for listings and admin commands.
type AccountInfo struct {
	ID         int64
	Address    string
	QuotaBytes int64 // 0: no limit
	UsedBytes  int64
	Messages   int64
	POP3Delete string // POP3Expunge or POP3Trash
	Created    time.Time
}

// Account is a logged-in (or admin-selected) account: the handle every
// protocol uses to reach its mail. It is safe for concurrent use.
type Account struct {
	st      *Store
	ID      int64
	Address string
}

// NormalizeAddress lower-cases an address and checks it has the form
// local@domain with no spaces or control characters.
func NormalizeAddress(addr string) (string, error) {
	addr = strings.ToLower(strings.TrimSpace(addr))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("%w: address %q is not local@domain", ErrInvalid, addr)
	}
	for _, r := range addr {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == ',' || r == '"' || r == '\\' {
			return "", fmt.Errorf("%w: address %q has a character that is not allowed", ErrInvalid, addr)
		}
	}
	if strings.Count(addr, "@") != 1 {
		return "", fmt.Errorf("%w: address %q has more than one @", ErrInvalid, addr)
	}
	return addr, nil
}

func splitAddress(addr string) (local, domain string) {
	at := strings.LastIndexByte(addr, '@')
	return addr[:at], addr[at+1:]
}

// CreateAccount adds an account with the default mailboxes. Its domain
// must exist. Returns ErrExists if the address is taken (by an account or
// an alias).
func (st *Store) CreateAccount(ctx context.Context, addr, password string) (*Account, error) {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return nil, err
	}
	if password == "" {
		return nil, fmt.Errorf("%w: empty password", ErrInvalid)
	}
	var hash string
	st.withHashSlot(func() { hash, err = hashPassword(password) })
	if err != nil {
		return nil, err
	}
	_, domain := splitAddress(addr)
	var id int64
	err = st.write(ctx, func(tx *txn) error {
		var domainID int64
		err := tx.QueryRow("SELECT id FROM domains WHERE name = ?", domain).Scan(&domainID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("create account %s: domain %s: %w", addr, domain, ErrNotFound)
		} else if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow("SELECT count(*) FROM aliases WHERE address = ?", addr).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("create account %s: an alias has this address: %w", addr, ErrExists)
		}
		res, err := tx.Exec(`INSERT INTO accounts(address, domain_id, password_hash, created)
			VALUES (?, ?, ?, ?) ON CONFLICT(address) DO NOTHING`, addr, domainID, hash, st.now().Unix())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("create account %s: %w", addr, ErrExists)
		}
		id, err = res.LastInsertId()
		if err != nil {
			return err
		}
		for _, mb := range defaultMailboxes {
			if _, err := insertMailbox(tx, id, mb.name, mb.role, st.now()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Account{st: st, ID: id, Address: addr}, nil
}

// DeleteAccount removes an account with all its mailboxes and messages.
func (st *Store) DeleteAccount(ctx context.Context, addr string) error {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		var id int64
		err := tx.QueryRow("SELECT id FROM accounts WHERE address = ?", addr).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delete account %s: %w", addr, ErrNotFound)
		} else if err != nil {
			return err
		}
		rows, err := tx.Query("SELECT id, name FROM mailboxes WHERE account_id = ?", id)
		if err != nil {
			return err
		}
		type mbox struct {
			id   int64
			name string
		}
		var mbs []mbox
		for rows.Next() {
			var m mbox
			if err := rows.Scan(&m.id, &m.name); err != nil {
				rows.Close()
				return err
			}
			mbs = append(mbs, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Messages and mailboxes go by ON DELETE CASCADE; the triggers keep
		// blob reference counts right.
		if _, err := tx.Exec("DELETE FROM accounts WHERE id = ?", id); err != nil {
			return err
		}
		for _, m := range mbs {
			tx.publish(Event{Kind: MailboxDeleted, AccountID: id, MailboxID: m.id})
		}
		return st.dropUnreferencedBlobs(tx)
	})
}

// SetPassword replaces an account's password.
func (st *Store) SetPassword(ctx context.Context, addr, password string) error {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	if password == "" {
		return fmt.Errorf("%w: empty password", ErrInvalid)
	}
	var hash string
	st.withHashSlot(func() { hash, err = hashPassword(password) })
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec("UPDATE accounts SET password_hash = ? WHERE address = ?", hash, addr)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("set password of %s: %w", addr, ErrNotFound)
		}
		return nil
	})
}

// SetQuota sets an account's storage limit in bytes (0: no limit).
func (st *Store) SetQuota(ctx context.Context, addr string, bytes int64) error {
	if bytes < 0 {
		return fmt.Errorf("%w: negative quota", ErrInvalid)
	}
	return st.updateAccount(ctx, addr, "quota_bytes", bytes)
}

// SetPOP3Delete chooses what a POP3 deletion does for an account:
// POP3Expunge or POP3Trash.
func (st *Store) SetPOP3Delete(ctx context.Context, addr, mode string) error {
	if mode != POP3Expunge && mode != POP3Trash {
		return fmt.Errorf("%w: pop3 delete mode %q is not %q or %q", ErrInvalid, mode, POP3Expunge, POP3Trash)
	}
	return st.updateAccount(ctx, addr, "pop3_delete", mode)
}

// updateAccount sets one column; column is a constant of this package,
// never user input.
func (st *Store) updateAccount(ctx context.Context, addr, column string, value any) error {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	return st.write(ctx, func(tx *txn) error {
		res, err := tx.Exec("UPDATE accounts SET "+column+" = ? WHERE address = ?", value, addr)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("update account %s: %w", addr, ErrNotFound)
		}
		return nil
	})
}

const accountInfoSQL = `
SELECT a.id, a.address, a.quota_bytes, a.used_bytes, a.pop3_delete, a.created,
       (SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = a.id)
  FROM accounts a`

func scanAccountInfo(sc interface{ Scan(...any) error }) (AccountInfo, error) {
	var ai AccountInfo
	var created int64
	err := sc.Scan(&ai.ID, &ai.Address, &ai.QuotaBytes, &ai.UsedBytes, &ai.POP3Delete, &created, &ai.Messages)
	ai.Created = time.Unix(created, 0)
	return ai, err
}

// Accounts lists all accounts ordered by address.
func (st *Store) Accounts(ctx context.Context) ([]AccountInfo, error) {
	rows, err := st.readRows(ctx, accountInfoSQL+" ORDER BY a.address")
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	var out []AccountInfo
	for rows.Next() {
		ai, err := scanAccountInfo(rows)
		if err != nil {
			return nil, fmt.Errorf("list accounts: %w", err)
		}
		out = append(out, ai)
	}
	return out, rows.Err()
}

// AccountInfo describes one account.
func (st *Store) AccountInfo(ctx context.Context, addr string) (AccountInfo, error) {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return AccountInfo{}, err
	}
	ai, err := scanAccountInfo(st.readRow(ctx, accountInfoSQL+" WHERE a.address = ?", addr))
	if errors.Is(err, sql.ErrNoRows) {
		return ai, fmt.Errorf("account %s: %w", addr, ErrNotFound)
	}
	return ai, err
}

// Info describes this account now.
func (a *Account) Info(ctx context.Context) (AccountInfo, error) {
	return a.st.AccountInfo(ctx, a.Address)
}

// Account returns the handle of an existing account without checking a
// password (admin commands, or after authentication by other means).
func (st *Store) Account(ctx context.Context, addr string) (*Account, error) {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return nil, err
	}
	var id int64
	err = st.readRow(ctx, "SELECT id FROM accounts WHERE address = ?", addr).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("account %s: %w", addr, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("account %s: %w: %w", addr, ErrTemporary, err)
	}
	return &Account{st: st, ID: id, Address: addr}, nil
}

// Login checks a password and returns the account. Any failure to match,
// including an unknown or malformed address, is ErrAuthFailed and costs
// the same time, so a caller cannot learn whether an account exists.
func (st *Store) Login(ctx context.Context, addr, password string) (*Account, error) {
	norm, err := NormalizeAddress(addr)
	var id int64
	hash := dummyHash
	if err == nil {
		err = st.readRow(ctx, "SELECT id, password_hash FROM accounts WHERE address = ?", norm).Scan(&id, &hash)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("login: %w: %w", ErrTemporary, err)
		}
		if err != nil {
			hash = dummyHash
		}
	}
	var match bool
	st.withHashSlot(func() { match = checkPassword(hash, password) })
	if err != nil || !match {
		return nil, ErrAuthFailed
	}
	return &Account{st: st, ID: id, Address: norm}, nil
}

// dummyHash is compared against when an account does not exist, so a
// wrong address costs the same time as a wrong password. Its parameters
// must equal the current ones (TestDummyHashMatchesParameters).
const dummyHash = "$argon2id$v=19$m=7168,t=5,p=1$bWFpbGJveC1kdW1teS1zbA$o3WvNYE03r/ri4G1pGCsn4iJjmg6Dln6DDfh50JTCkE"

// withHashSlot runs fn, an argon2 computation, once one of the store's
// hashing slots is free: each takes argonMemKiB of memory, so a flood of
// logins queues here instead of growing the process.
func (st *Store) withHashSlot(fn func()) {
	st.hashSlots <- struct{}{}
	st.hashMem.begin()
	defer func() {
		st.hashMem.end()
		<-st.hashSlots
	}()
	fn()
}

// DefaultHashMemoryRelease is how long password hashing must have been
// quiet before the store hands its memory back (Options.HashMemoryRelease).
const DefaultHashMemoryRelease = time.Second

// hashMemory returns the memory of password hashing to the operating
// system once no hash has run for a while. Each argon2id computation
// allocates argonMemKiB afresh; after a burst of logins the Go heap kept
// that garbage, and then the free pages, as headroom for minutes: 1,000
// IMAP logins two at a time left ~40 MiB resident beyond what the
// sessions used. A release is a forced GC plus giving free pages back
// (debug.FreeOSMemory): a few milliseconds of CPU, at most once per
// quiet period, never while logins keep coming (their memory is reused
// then). A nil *hashMemory does nothing.
type hashMemory struct {
	quiet   time.Duration
	release func() // debug.FreeOSMemory; tests count calls instead

	mu       sync.Mutex
	inFlight int
	last     time.Time   // when the last hash ended
	timer    *time.Timer // armed while a release is pending
	stopped  bool
}

// newHashMemory returns a releaser waiting quiet (0: the default) after
// the last hash; negative means never.
func newHashMemory(quiet time.Duration) *hashMemory {
	if quiet < 0 {
		return nil
	}
	if quiet == 0 {
		quiet = DefaultHashMemoryRelease
	}
	return &hashMemory{quiet: quiet, release: debug.FreeOSMemory}
}

func (h *hashMemory) begin() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.inFlight++
	h.mu.Unlock()
}

func (h *hashMemory) end() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inFlight--
	h.last = time.Now()
	if h.timer == nil && !h.stopped {
		h.timer = time.AfterFunc(h.quiet, h.check)
	}
}

// check releases the memory if hashing has been quiet long enough, or
// waits for the rest of the quiet period.
func (h *hashMemory) check() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	if wait := h.quiet - time.Since(h.last); h.inFlight > 0 || wait > 0 {
		h.timer.Reset(max(wait, h.quiet/4))
		h.mu.Unlock()
		return
	}
	h.timer = nil
	h.mu.Unlock()
	h.release()
}

// stop cancels a pending release (Store.Close).
func (h *hashMemory) stop() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	if h.timer != nil {
		h.timer.Stop()
		h.timer = nil
	}
}

// hashPassword returns an argon2id hash in the PHC string format.
func hashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemKiB, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemKiB, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// checkPassword compares a password with a PHC argon2id hash in constant
// time. Malformed hashes never match.
func checkPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	var mem uint32
	var iters uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &iters, &threads); err != nil {
		return false
	}
	if mem == 0 || mem > 1<<20 || iters == 0 || iters > 16 || threads == 0 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 128 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, iters, mem, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// LockMaildrop gives one POP3 session exclusive access to the account's
// maildrop (RFC 1939 §8). It returns ErrLocked if another holds it. The
// returned release func must be called exactly once.
func (a *Account) LockMaildrop() (release func(), err error) {
	st := a.st
	st.locksMu.Lock()
	defer st.locksMu.Unlock()
	if st.locks[a.ID] {
		return nil, fmt.Errorf("maildrop of %s: %w", a.Address, ErrLocked)
	}
	st.locks[a.ID] = true
	return func() {
		st.locksMu.Lock()
		delete(st.locks, a.ID)
		st.locksMu.Unlock()
	}, nil
}

// POP3Delete reports the account's POP3 deletion mode.
func (a *Account) POP3Delete(ctx context.Context) (string, error) {
	var mode string
	err := a.st.readRow(ctx, "SELECT pop3_delete FROM accounts WHERE id = ?", a.ID).Scan(&mode)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("account %s: %w", a.Address, ErrNotFound)
	} else if err != nil {
		return "", fmt.Errorf("account %s: %w: %w", a.Address, ErrTemporary, err)
	}
	return mode, nil
}
