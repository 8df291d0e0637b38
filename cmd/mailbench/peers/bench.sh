#!/bin/bash
# bench.sh runs the figures of issue 2 against one server and prints one
# summary line per run (also appended to $OUT):
#   - SMTP ingest, end to end over POP3: 4 KiB and 100 KiB, 8 and 64 conns
#   - POP3 download of the pre-filled $DL_USER mailbox, $REPEAT sessions
#
#   peers/bench.sh LABEL SMTP_ADDR POP3_ADDR
#   peers/bench.sh postfix+dovecot 127.0.0.1:2526 127.0.0.1:1101
#   peers/bench.sh mailbox         127.0.0.1:2525 127.0.0.1:1100
#
# Each ingest run empties $USER_ADDR afterwards (-cleanup).
# The accounts must exist on the server: $USER_ADDR (ingest) and $DL_USER
# (download, pre-filled with peers/fill.sh for Dovecot or with
# "mailbench smtp -count 10000" for any server), password $PASS.
# Run from the repository root or set MAILBENCH to a built binary.
set -u

LABEL=${1:?usage: bench.sh LABEL SMTP_ADDR POP3_ADDR}
SMTP_ADDR=${2:?usage: bench.sh LABEL SMTP_ADDR POP3_ADDR}
POP3_ADDR=${3:?usage: bench.sh LABEL SMTP_ADDR POP3_ADDR}
USER_ADDR=${USER_ADDR:-bench@bench.test}
DL_USER=${DL_USER:-dl@bench.test}
PASS=${PASS:-benchpass}
SIZES=${SIZES:-4096 102400}
CONNS=${CONNS:-8 64}
COUNT=${COUNT:-2000}       # messages per ingest run
REPEAT=${REPEAT:-3}        # POP3 download sessions
TIMEOUT=${TIMEOUT:-10m}    # bound on each run
OUT=${OUT:-/tmp/mailbench-results.txt}
MAILBENCH=${MAILBENCH:-go run ./cmd/mailbench}
PID_ARGS=${PID_ARGS:-}     # e.g. "-pid 1234", or "-pid 1,2 -pid-tree": adds cpu= and rss_*=

status=0
for size in $SIZES; do
	for conns in $CONNS; do
		$MAILBENCH smtp -label "$LABEL" -addr "$SMTP_ADDR" -conns "$conns" -count "$COUNT" -size "$size" \
			-rcpt "$USER_ADDR" -verify-pop3 "$POP3_ADDR" -pop3-pass "$PASS" -cleanup -timeout "$TIMEOUT" $PID_ARGS |
			tee -a "$OUT"
		[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
	done
done
$MAILBENCH pop3 -label "$LABEL" -addr "$POP3_ADDR" -user "$DL_USER" -pass "$PASS" -repeat "$REPEAT" -timeout "$TIMEOUT" $PID_ARGS |
	tee -a "$OUT"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit "$status"
