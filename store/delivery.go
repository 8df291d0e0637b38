package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Delivery is one message for one or more local accounts, as SMTP (or a
// local submission) hands it over.
type Delivery struct {
	// Recipients are account addresses (after Resolve); duplicates are
	// delivered once.
	Recipients []string
	// Data is the whole message, headers added at delivery (Received:)
	// included. Bare CR and bare LF become CRLF (so sizes equal what POP3
	// and IMAP send); otherwise it is stored exactly as given and shared
	// by all recipients.
	Data []byte
	// Role picks the mailbox: RoleInbox if empty (RoleJunk for
	// quarantined mail).
	Role string
	// Flags are set on the new messages (e.g. \Seen for a Sent copy).
	Flags []string
	// InternalDate is the arrival time; zero means now.
	InternalDate time.Time
}

// Delivered says where one recipient's copy went.
type Delivered struct {
	Account     string
	MailboxID   int64
	UIDValidity uint32
	UID         uint32
}

// preparedBlob is a message parsed and hashed outside the write
// transaction, its large body already durable as a file.
type preparedBlob struct {
	hash   []byte
	size   int64
	inline []byte // nil when the body is a file
	meta   []byte // Meta.Envelope as JSON
	struc  []byte // Meta.Structure as JSON
	m      Meta
}

// prepare hashes and parses data and, if it is large, writes it as a
// synced file. The CPU work happens here, in the caller's goroutine, so
// concurrent deliveries parse in parallel and the writer only inserts.
func (st *Store) prepare(data []byte) (*preparedBlob, error) {
	data = NormalizeCRLF(data)
	hash := hashBytes(data)
	p := &preparedBlob{size: int64(len(data))}
	p.hash, _ = hex.DecodeString(hash)
	p.m = parseMessage(data)
	var err error
	if p.meta, err = json.Marshal(p.m.Envelope); err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	if p.struc, err = json.Marshal(p.m.Structure); err != nil {
		return nil, fmt.Errorf("encode structure: %w", err)
	}
	if p.size <= st.inlineMax {
		p.inline = data
		return p, nil
	}
	if err := st.blobs.Put(hash, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("%w: store body: %w", ErrTemporary, err)
	}
	return p, nil
}

// insertBlob finds or adds the blob row (with its meta) and returns its
// id. A new blob waits in unindexed for the indexer (indexer.go).
func (st *Store) insertBlob(tx *txn, p *preparedBlob) (int64, error) {
	var id int64
	err := tx.QueryRow("SELECT id FROM blobs WHERE hash = ?", p.hash).Scan(&id)
	if err == nil {
		return id, nil
	} else if !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	if p.inline == nil {
		// The file may have been removed after its last reference went in
		// an earlier commit; without it the row would point at nothing.
		ok, err := st.blobs.Exists(hex.EncodeToString(p.hash))
		if err != nil || !ok {
			return 0, fmt.Errorf("%w: body file vanished before commit", ErrTemporary)
		}
	}
	res, err := tx.Exec("INSERT INTO blobs(hash, size, data) VALUES (?, ?, ?)", p.hash, p.size, p.inline)
	if err != nil {
		return 0, err
	}
	if id, err = res.LastInsertId(); err != nil {
		return 0, err
	}
	env := p.m.Envelope
	var date int64
	if !env.Date.IsZero() {
		date = env.Date.Unix()
	}
	if _, err := tx.Exec(`INSERT INTO meta(blob_id, subject, from_addr, to_addr, date, message_id, attachments, lines, envelope, structure)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, env.Subject, addressText(env.From), addressText(append(slices.Clip(env.To), env.Cc...)),
		date, env.MessageID, p.m.Attachments, p.m.Lines, p.meta, p.struc); err != nil {
		return 0, err
	}
	if _, err := tx.Exec("INSERT INTO unindexed(blob_id) VALUES (?)", id); err != nil {
		return 0, err
	}
	tx.afterCommit(st.index.poke)
	return id, nil
}

// addressText renders addresses for listing and substring search:
// "Name <local@host>, ...".
func addressText(list []Address) string {
	var b bytes.Buffer
	for i, a := range list {
		if i > 0 {
			b.WriteString(", ")
		}
		if a.Name != "" {
			b.WriteString(a.Name)
			b.WriteString(" <")
		}
		b.WriteString(a.Mailbox)
		if a.Host != "" {
			b.WriteByte('@')
			b.WriteString(a.Host)
		}
		if a.Name != "" {
			b.WriteByte('>')
		}
	}
	return b.String()
}

// insertMessage appends a message to a mailbox and returns its UID.
func insertMessage(tx *txn, accountID, mailboxID, blobID, size int64, date time.Time, bits int64, kws string) (uint32, uint32, error) {
	var uidvalidity, uid uint32
	var modseq int64
	err := tx.QueryRow("SELECT uidvalidity, uidnext, highest_modseq FROM mailboxes WHERE id = ?", mailboxID).Scan(&uidvalidity, &uid, &modseq)
	if err != nil {
		return 0, 0, err
	}
	modseq++
	if _, err := tx.Exec(`INSERT INTO messages(mailbox_id, uid, modseq, blob_id, size, internal_date, flags, keywords)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, mailboxID, uid, modseq, blobID, size, date.Unix(), bits, kws); err != nil {
		return 0, 0, err
	}
	if _, err := tx.Exec("UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE id = ?", uid+1, modseq, mailboxID); err != nil {
		return 0, 0, err
	}
	tx.publish(Event{Kind: MessageAdded, AccountID: accountID, MailboxID: mailboxID, UID: uid, ModSeq: modseq, Flags: unpackFlags(bits, kws)})
	return uidvalidity, uid, nil
}

// Deliver stores a message for every recipient in one transaction: either
// all get it or none does. It returns once the transaction is committed
// and synced to disk. Errors: ErrNotFound (a recipient has no account),
// ErrOverQuota (a recipient is over quota: nobody gets it), ErrTemporary.
func (st *Store) Deliver(ctx context.Context, d Delivery) ([]Delivered, error) {
	rcpts := make([]string, 0, len(d.Recipients))
	for _, r := range d.Recipients {
		n, err := NormalizeAddress(r)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(rcpts, n) {
			rcpts = append(rcpts, n)
		}
	}
	if len(rcpts) == 0 {
		return nil, fmt.Errorf("deliver: %w: no recipients", ErrInvalid)
	}
	role := d.Role
	if role == "" {
		role = RoleInbox
	}
	date := d.InternalDate
	if date.IsZero() {
		date = st.now()
	}
	bits, kws := packFlags(d.Flags)
	p, err := st.prepare(d.Data)
	if err != nil {
		return nil, err
	}
	var out []Delivered
	err = st.write(ctx, func(tx *txn) error {
		out = out[:0]
		blobID, err := st.insertBlob(tx, p)
		if err != nil {
			return err
		}
		for _, rcpt := range rcpts {
			var acctID, mbID, quota, used int64
			err := tx.QueryRow(`SELECT a.id, b.id, a.quota_bytes, a.used_bytes
				FROM accounts a JOIN mailboxes b ON b.account_id = a.id
				WHERE a.address = ? AND b.role = ?`, rcpt, role).Scan(&acctID, &mbID, &quota, &used)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("deliver to %s: %w", rcpt, ErrNotFound)
			} else if err != nil {
				return err
			}
			if quota > 0 && used+p.size > quota {
				return fmt.Errorf("deliver to %s: %w", rcpt, ErrOverQuota)
			}
			uv, uid, err := insertMessage(tx, acctID, mbID, blobID, p.size, date, bits, kws)
			if err != nil {
				return err
			}
			out = append(out, Delivered{Account: rcpt, MailboxID: mbID, UIDValidity: uv, UID: uid})
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrOverQuota) && !errors.Is(err, ErrTemporary) {
		err = fmt.Errorf("%w: %w", ErrTemporary, err)
	}
	return out, err
}

// Append adds a message to one of the account's mailboxes (IMAP APPEND,
// a webmail draft or Sent copy) and returns its UIDVALIDITY and UID.
// Fails with ErrOverQuota if it does not fit.
func (a *Account) Append(ctx context.Context, mailboxID int64, data []byte, flags []string, date time.Time) (Delivered, error) {
	if date.IsZero() {
		date = a.st.now()
	}
	bits, kws := packFlags(flags)
	p, err := a.st.prepare(data)
	if err != nil {
		return Delivered{}, err
	}
	out := Delivered{Account: a.Address, MailboxID: mailboxID}
	err = a.st.write(ctx, func(tx *txn) error {
		if _, err := a.lockMailbox(tx, mailboxID); err != nil {
			return err
		}
		if err := a.checkQuotaTx(tx, p.size); err != nil {
			return err
		}
		blobID, err := a.st.insertBlob(tx, p)
		if err != nil {
			return err
		}
		out.UIDValidity, out.UID, err = insertMessage(tx, a.ID, mailboxID, blobID, p.size, date, bits, kws)
		return err
	})
	return out, err
}

// CheckQuota reports ErrOverQuota if a message of size bytes would not
// fit the account now (SMTP checks this at RCPT with the SIZE parameter).
// It returns ErrNotFound for an unknown account.
func (st *Store) CheckQuota(ctx context.Context, addr string, size int64) error {
	addr, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	var quota, used int64
	err = st.reader.QueryRowContext(ctx, "SELECT quota_bytes, used_bytes FROM accounts WHERE address = ?", addr).Scan(&quota, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("account %s: %w", addr, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("account %s: %w: %w", addr, ErrTemporary, err)
	}
	if quota > 0 && used+size > quota {
		return fmt.Errorf("account %s: %w", addr, ErrOverQuota)
	}
	return nil
}

// NormalizeCRLF returns data with every bare CR or bare LF turned into
// CRLF, so that line ends are canonical (RFC 5322 §2.3). It returns data
// itself, without copying, when it is already canonical.
func NormalizeCRLF(data []byte) []byte {
	if canonicalCRLF(data) {
		return data
	}
	out := make([]byte, 0, len(data)+len(data)/40)
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '\r' && i+1 < len(data) && data[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' || c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// canonicalCRLF reports whether every CR in data is followed by LF and
// every LF preceded by CR. It finds the line ends with bytes.IndexByte and
// counts the CRs with bytes.Count, both vectorised: a byte-by-byte loop
// was a twentieth of the CPU of receiving a large message.
func canonicalCRLF(data []byte) bool {
	lfs := 0
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || data[i-1] != '\r' {
			return false
		}
		lfs++
		i++
	}
	// Every LF has its own CR before it; any other CR is bare.
	return bytes.Count(data, []byte{'\r'}) == lfs
}
