#!/bin/bash
# mailbox-users.sh creates the benchmark accounts of the peers in a mailbox
# data directory, so the same mailbench commands run against both: domain
# bench.test, bench@ (ingest), dl@ (download) and user0..user$((N-1))@ (idle
# sessions), password $PASS. Accounts that exist already are skipped. It uses
# mailbox's own admin commands, which work while the server runs.
#
#   peers/mailbox-users.sh DATA_DIR [N]      (N defaults to 1000)
#
# MAILBOX names the binary (default: go run ./cmd/mailbox, from the
# repository root; a built binary is much faster for 1,000 accounts).
set -eu

DATA=${1:?usage: mailbox-users.sh DATA_DIR [N]}
N=${2:-1000}
PASS=${PASS:-benchpass}
DOMAIN=${PEER_DOMAIN:-bench.test}
MAILBOX=${MAILBOX:-go run ./cmd/mailbox}

existing=$($MAILBOX user list --data "$DATA" 2>/dev/null || true)
if ! $MAILBOX domain list --data "$DATA" 2>/dev/null | grep -qwF "$DOMAIN"; then
	$MAILBOX domain add --data "$DATA" "$DOMAIN"
fi
users="bench dl"
for ((i = 0; i < N; i++)); do users="$users user$i"; done
created=0
for u in $users; do
	if grep -qwF "$u@$DOMAIN" <<<"$existing"; then
		continue
	fi
	printf '%s\n' "$PASS" | $MAILBOX user add --data "$DATA" --password-stdin "$u@$DOMAIN" >/dev/null
	created=$((created + 1))
done
echo "mailbox-users.sh: $created accounts created in $DATA (bench, dl, user0..user$((N - 1)) @$DOMAIN, password $PASS)"
