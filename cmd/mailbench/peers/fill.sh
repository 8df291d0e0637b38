#!/bin/bash
# fill.sh pre-fills a Dovecot Maildir of the peers for the POP3 download
# benchmark: COUNT messages (default 10000) of SIZE bytes (default 4096,
# CRLF) for USER (default dl@bench.test), written straight into the Maildir
# by "mailbench maildir-fill" (seconds instead of minutes through Postfix),
# then handed to the mail user and indexed by one POP3 login so that the
# first measured session does not pay for Dovecot's initial scan.
#
#   peers/fill.sh [COUNT [SIZE [USER]]]
#
# Run from the repository root (it uses "go run ./cmd/mailbench") or set
# MAILBENCH to a built binary. Existing mail of USER is removed first.
set -eu

COUNT=${1:-10000}
SIZE=${2:-4096}
USER_ADDR=${3:-dl@bench.test}
PEERS_DIR=${PEERS_DIR:-/tmp/mailbench-peers}
PEER_POP3_PORT=${PEER_POP3_PORT:-1101}
PEER_PASS=${PEER_PASS:-benchpass}
MAIL_USER=${MAIL_USER:-nobody}
MAIL_GROUP=${MAIL_GROUP:-nogroup}
MAILBENCH=${MAILBENCH:-go run ./cmd/mailbench}

local_part=${USER_ADDR%@*}
domain=${USER_ADDR#*@}
home="$PEERS_DIR/mail/$domain/$local_part"
maildir="$home/Maildir"

# Start from an empty mailbox: Dovecot's index and uidlist go too.
rm -rf "$maildir"
$MAILBENCH maildir-fill -dir "$maildir" -count "$COUNT" -size "$SIZE" -rcpt "$USER_ADDR"
chown -R "$MAIL_USER:$MAIL_GROUP" "$PEERS_DIR/mail/$domain"
# One login builds Dovecot's index of the new messages (not measured).
$MAILBENCH pop3 -addr "127.0.0.1:$PEER_POP3_PORT" -user "$USER_ADDR" -pass "$PEER_PASS" -count 1 -label warmup >/dev/null
echo "fill.sh: $COUNT messages of $SIZE bytes in $maildir"
