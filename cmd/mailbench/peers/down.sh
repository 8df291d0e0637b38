#!/bin/bash
# down.sh stops the peers that up.sh started, by their own pid files, and
# nothing else. Mail and configuration stay in $PEERS_DIR (remove it by hand
# for a fresh start).
set -u

PEERS_DIR=${PEERS_DIR:-/tmp/mailbench-peers}
PF="$PEERS_DIR/postfix"
DC="$PEERS_DIR/dovecot"

if [ -s "$PF/queue/pid/master.pid" ] && kill -0 "$(awk '{print $1}' "$PF/queue/pid/master.pid")" 2>/dev/null; then
	postfix -c "$PF/conf" stop && echo "down.sh: postfix stopped"
else
	echo "down.sh: postfix is not running"
fi

if [ -s "$DC/run/master.pid" ]; then
	pid=$(cat "$DC/run/master.pid")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		echo "down.sh: dovecot stopped (pid $pid)"
	else
		echo "down.sh: dovecot is not running"
	fi
else
	echo "down.sh: dovecot is not running"
fi
