package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are the schema steps, applied in order; step i brings the
// database from user_version i to i+1 in one transaction. Never edit a
// step that has shipped: append a new one.
var migrations = []string{
	// 1: the first schema.
	`
-- settings holds server-wide values such as the last UIDVALIDITY handed out.
CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE domains (
	id      INTEGER PRIMARY KEY,
	name    TEXT NOT NULL UNIQUE,
	created INTEGER NOT NULL
);

CREATE TABLE accounts (
	id            INTEGER PRIMARY KEY,
	address       TEXT NOT NULL UNIQUE,
	domain_id     INTEGER NOT NULL REFERENCES domains(id),
	password_hash TEXT NOT NULL,
	quota_bytes   INTEGER NOT NULL DEFAULT 0,
	used_bytes    INTEGER NOT NULL DEFAULT 0,
	pop3_delete   TEXT NOT NULL DEFAULT 'expunge',
	created       INTEGER NOT NULL
);

CREATE TABLE aliases (
	id        INTEGER PRIMARY KEY,
	address   TEXT NOT NULL,
	domain_id INTEGER NOT NULL REFERENCES domains(id),
	target    TEXT NOT NULL,
	UNIQUE (address, target)
);

CREATE TABLE mailboxes (
	id             INTEGER PRIMARY KEY,
	account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
	name           TEXT NOT NULL,
	role           TEXT NOT NULL DEFAULT '',
	uidvalidity    INTEGER NOT NULL,
	uidnext        INTEGER NOT NULL DEFAULT 1,
	highest_modseq INTEGER NOT NULL DEFAULT 1,
	subscribed     INTEGER NOT NULL DEFAULT 1,
	UNIQUE (account_id, name)
);

-- blobs are message bytes by SHA-256. data holds small bodies; NULL means
-- the body is a file under blobs/ named by the hash. refs counts messages.
CREATE TABLE blobs (
	id   INTEGER PRIMARY KEY,
	hash BLOB NOT NULL UNIQUE,
	size INTEGER NOT NULL,
	refs INTEGER NOT NULL DEFAULT 0,
	data BLOB
);

CREATE INDEX blobs_unref ON blobs(refs) WHERE refs <= 0;

-- meta is what listing and IMAP FETCH need, parsed once per blob.
CREATE TABLE meta (
	blob_id     INTEGER PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE,
	subject     TEXT NOT NULL DEFAULT '',
	from_addr   TEXT NOT NULL DEFAULT '',
	to_addr     TEXT NOT NULL DEFAULT '',
	date        INTEGER NOT NULL DEFAULT 0,
	message_id  TEXT NOT NULL DEFAULT '',
	attachments INTEGER NOT NULL DEFAULT 0,
	lines       INTEGER NOT NULL DEFAULT 0,
	envelope    TEXT NOT NULL,
	structure   TEXT NOT NULL
);

CREATE TABLE messages (
	id            INTEGER PRIMARY KEY,
	mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
	uid           INTEGER NOT NULL,
	modseq        INTEGER NOT NULL,
	blob_id       INTEGER NOT NULL REFERENCES blobs(id),
	size          INTEGER NOT NULL,
	internal_date INTEGER NOT NULL,
	flags         INTEGER NOT NULL DEFAULT 0,
	keywords      TEXT NOT NULL DEFAULT '',
	UNIQUE (mailbox_id, uid)
);
CREATE INDEX messages_blob ON messages(blob_id);
CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);

-- Reference counts and quota usage follow message rows, including rows
-- removed by ON DELETE CASCADE, so no code path can forget them.
CREATE TRIGGER messages_ins AFTER INSERT ON messages BEGIN
	UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id;
	UPDATE accounts SET used_bytes = used_bytes + NEW.size
	 WHERE id = (SELECT account_id FROM mailboxes WHERE id = NEW.mailbox_id);
END;
CREATE TRIGGER messages_del AFTER DELETE ON messages BEGIN
	UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id;
	UPDATE accounts SET used_bytes = used_bytes - OLD.size
	 WHERE id = (SELECT account_id FROM mailboxes WHERE id = OLD.mailbox_id);
END;

-- expunged remembers removed UIDs with their modseq (for IMAP QRESYNC).
CREATE TABLE expunged (
	mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
	uid        INTEGER NOT NULL,
	modseq     INTEGER NOT NULL,
	PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;

-- blob_text is the full-text index of decoded headers and text parts;
-- rowid is blobs.id.
CREATE VIRTUAL TABLE blob_text USING fts5(
	subject, addresses, body,
	content='', contentless_delete=1,
	tokenize='unicode61 remove_diacritics 2'
);
`,
	// 2: sign-in sessions (webmail) and the addresses an account sent to
	// (address completion).
	`
-- sessions are signed-in clients; only the SHA-256 of the token is kept.
CREATE TABLE sessions (
	token_hash BLOB PRIMARY KEY,
	account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
	csrf       TEXT NOT NULL,
	created    INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_account ON sessions(account_id);
CREATE INDEX sessions_seen ON sessions(last_seen);

-- contacts are the addresses an account has sent mail to.
CREATE TABLE contacts (
	account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
	address    TEXT NOT NULL,
	name       TEXT NOT NULL DEFAULT '',
	uses       INTEGER NOT NULL DEFAULT 1,
	last_used  INTEGER NOT NULL,
	PRIMARY KEY (account_id, address)
) WITHOUT ROWID;
`,
	// 3: per-mailbox counters kept by triggers, so listing folders with
	// their counts (webmail, IMAP STATUS) does not scan the messages.
	`
ALTER TABLE mailboxes ADD COLUMN n_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN n_unseen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN n_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN n_deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN n_deleted_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE mailboxes SET
	n_messages = (SELECT count(*) FROM messages WHERE mailbox_id = mailboxes.id),
	n_unseen = (SELECT count(*) FROM messages WHERE mailbox_id = mailboxes.id AND flags & 1 = 0),
	n_bytes = (SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox_id = mailboxes.id),
	n_deleted = (SELECT count(*) FROM messages WHERE mailbox_id = mailboxes.id AND flags & 8 != 0),
	n_deleted_bytes = (SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox_id = mailboxes.id AND flags & 8 != 0);
CREATE TRIGGER messages_count_ins AFTER INSERT ON messages BEGIN
	UPDATE mailboxes SET n_messages = n_messages + 1, n_unseen = n_unseen + (NEW.flags & 1 = 0),
		n_bytes = n_bytes + NEW.size, n_deleted = n_deleted + (NEW.flags & 8 != 0),
		n_deleted_bytes = n_deleted_bytes + CASE WHEN NEW.flags & 8 != 0 THEN NEW.size ELSE 0 END
	 WHERE id = NEW.mailbox_id;
END;
CREATE TRIGGER messages_count_del AFTER DELETE ON messages BEGIN
	UPDATE mailboxes SET n_messages = n_messages - 1, n_unseen = n_unseen - (OLD.flags & 1 = 0),
		n_bytes = n_bytes - OLD.size, n_deleted = n_deleted - (OLD.flags & 8 != 0),
		n_deleted_bytes = n_deleted_bytes - CASE WHEN OLD.flags & 8 != 0 THEN OLD.size ELSE 0 END
	 WHERE id = OLD.mailbox_id;
END;
CREATE TRIGGER messages_count_upd AFTER UPDATE OF flags, size, mailbox_id ON messages
	WHEN (OLD.flags & 9) != (NEW.flags & 9) OR OLD.size != NEW.size OR OLD.mailbox_id != NEW.mailbox_id
BEGIN
	UPDATE mailboxes SET n_messages = n_messages - 1, n_unseen = n_unseen - (OLD.flags & 1 = 0),
		n_bytes = n_bytes - OLD.size, n_deleted = n_deleted - (OLD.flags & 8 != 0),
		n_deleted_bytes = n_deleted_bytes - CASE WHEN OLD.flags & 8 != 0 THEN OLD.size ELSE 0 END
	 WHERE id = OLD.mailbox_id;
	UPDATE mailboxes SET n_messages = n_messages + 1, n_unseen = n_unseen + (NEW.flags & 1 = 0),
		n_bytes = n_bytes + NEW.size, n_deleted = n_deleted + (NEW.flags & 8 != 0),
		n_deleted_bytes = n_deleted_bytes + CASE WHEN NEW.flags & 8 != 0 THEN NEW.size ELSE 0 END
	 WHERE id = NEW.mailbox_id;
END;
`,
	// 4: sending: messages waiting for other servers (outbound, one queue
	// row per remote recipient), each account's recent submissions (sending
	// limits) and the domains' DKIM signing keys.
	`
-- outbound is a message waiting for delivery to other servers. Its bytes
-- are a blob, counted in refs like a stored message's.
CREATE TABLE outbound (
	id         INTEGER PRIMARY KEY,
	account_id INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
	sender     TEXT NOT NULL, -- envelope sender; '' is the null sender (bounces)
	blob_id    INTEGER NOT NULL REFERENCES blobs(id),
	created    INTEGER NOT NULL
);
CREATE TRIGGER outbound_ins AFTER INSERT ON outbound BEGIN
	UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id;
END;
CREATE TRIGGER outbound_del AFTER DELETE ON outbound BEGIN
	UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id;
END;

-- queue has one row per remote recipient of an outbound message. sending
-- is the start (unix time) of the attempt in progress, 0 when none is.
CREATE TABLE queue (
	id           INTEGER PRIMARY KEY,
	outbound_id  INTEGER NOT NULL REFERENCES outbound(id) ON DELETE CASCADE,
	rcpt         TEXT NOT NULL,
	domain       TEXT NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL,
	last_attempt INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT '',
	sending      INTEGER NOT NULL DEFAULT 0,
	warned       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_due ON queue(next_attempt) WHERE sending = 0;
CREATE INDEX queue_outbound ON queue(outbound_id);

-- sent_log counts each account's submissions for its sending limits.
CREATE TABLE sent_log (
	account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
	at         INTEGER NOT NULL,
	rcpts      INTEGER NOT NULL
);
CREATE INDEX sent_log_at ON sent_log(account_id, at);

-- dkim_keys are the domains' signing keys (PKCS #8 DER); the selector
-- names the DNS record that publishes the public half.
CREATE TABLE dkim_keys (
	domain_id   INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
	selector    TEXT NOT NULL,
	algorithm   TEXT NOT NULL,
	private_key BLOB NOT NULL,
	created     INTEGER NOT NULL,
	PRIMARY KEY (domain_id, selector)
) WITHOUT ROWID;
`,
	// 5: recipient domains' MTA-STS policies (RFC 8461 §5.1: a sender
	// caches a policy until max_age, across restarts, so that an attacker
	// who later blocks the TXT lookup or the HTTPS fetch cannot downgrade
	// delivery to plain text).
	`
-- mta_sts is the last valid MTA-STS policy fetched for a domain. policy_id
-- is the id of the _mta-sts TXT record it was fetched under; mx holds the
-- policy's mx patterns, one per line; expires is fetched + max_age.
CREATE TABLE mta_sts (
	domain    TEXT PRIMARY KEY,
	policy_id TEXT NOT NULL,
	mode      TEXT NOT NULL,
	mx        TEXT NOT NULL,
	max_age   INTEGER NOT NULL,
	fetched   INTEGER NOT NULL,
	expires   INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 6: full-text indexing after delivery. A delivery records its new
	// blob here in its own transaction; the indexer adds the blob's text to
	// blob_text later, many blobs per transaction, and removes the row in
	// the same transaction. Rows left by a crash are indexed at the next
	// start, so no message stays unsearchable. Blobs from before this step
	// are indexed already.
	`
CREATE TABLE IF NOT EXISTS unindexed (
	blob_id INTEGER PRIMARY KEY REFERENCES blobs(id) ON DELETE CASCADE
);
`,
}

// schemaVersion is the user_version a fully migrated database has.
var schemaVersion = len(migrations)

// migrate brings db up to schemaVersion, one transaction per step.
func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("database schema version %d is newer than this program (%d)", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		if err := migrateStep(ctx, db, v); err != nil {
			return fmt.Errorf("schema step %d: %w", v+1, err)
		}
	}
	return nil
}

func migrateStep(ctx context.Context, db *sql.DB, v int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return err
	}
	return tx.Commit()
}
