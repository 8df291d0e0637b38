#!/bin/bash
# up.sh starts the reference peers for mailbench on loopback: Postfix
# (SMTP on 127.0.0.1:$PEER_SMTP_PORT) delivering over LMTP (a Unix socket) to
# Dovecot (POP3 on $PEER_POP3_PORT, IMAP on $PEER_IMAP_PORT), with Maildir
# storage under $PEERS_DIR. Both run from their own configuration written
# here; /etc/postfix and /etc/dovecot are only read (Postfix's meta files).
# Sync behaviour is left at the packages' defaults: Postfix fsyncs its queue
# file before 250, Dovecot fsyncs each delivered message before its LMTP 250.
#
# Needs root (Postfix and Dovecot drop privileges themselves) and the Debian
# packages postfix, dovecot-pop3d, dovecot-imapd and dovecot-lmtpd.
# Stop everything with down.sh. Re-running up.sh keeps existing mail.
set -eu

PEERS_DIR=${PEERS_DIR:-/tmp/mailbench-peers}
PEER_SMTP_PORT=${PEER_SMTP_PORT:-2526}
PEER_POP3_PORT=${PEER_POP3_PORT:-1101}
PEER_IMAP_PORT=${PEER_IMAP_PORT:-1431}
PEER_DOMAIN=${PEER_DOMAIN:-bench.test}
PEER_PASS=${PEER_PASS:-benchpass}
PEER_IDLE_USERS=${PEER_IDLE_USERS:-1000} # user0..user999@bench.test
MAIL_USER=${MAIL_USER:-nobody}           # owner of the Maildirs
MAIL_GROUP=${MAIL_GROUP:-nogroup}

if [ "$(id -u)" -ne 0 ]; then
	echo "up.sh: run as root (Postfix and Dovecot drop privileges themselves)" >&2
	exit 1
fi
for bin in postfix postconf dovecot doveadm; do
	command -v "$bin" >/dev/null || { echo "up.sh: $bin not found (apt-get install postfix dovecot-pop3d dovecot-imapd dovecot-lmtpd)" >&2; exit 1; }
done

PF="$PEERS_DIR/postfix"
DC="$PEERS_DIR/dovecot"
MAIL="$PEERS_DIR/mail"
mkdir -p "$PEERS_DIR" "$PF/conf" "$PF/queue" "$PF/data" "$DC/run" "$DC/state" "$MAIL"
chmod 755 "$PEERS_DIR" "$DC" "$DC/run"
chown "$MAIL_USER:$MAIL_GROUP" "$MAIL"
chown postfix "$PF/data"

# Dovecot ---------------------------------------------------------------
USERS="$DC/users"
if [ ! -s "$USERS" ]; then
	{
		echo "bench@$PEER_DOMAIN:{PLAIN}$PEER_PASS::::::"
		echo "dl@$PEER_DOMAIN:{PLAIN}$PEER_PASS::::::"
		i=0
		while [ "$i" -lt "$PEER_IDLE_USERS" ]; do
			echo "user$i@$PEER_DOMAIN:{PLAIN}$PEER_PASS::::::"
			i=$((i + 1))
		done
	} >"$USERS.tmp"
	mv "$USERS.tmp" "$USERS"
fi
chmod 644 "$USERS"

cat >"$DC/dovecot.conf" <<EOF
# Written by mailbench peers/up.sh; only for loopback benchmarks.
protocols = imap pop3 lmtp
listen = 127.0.0.1
base_dir = $DC/run
state_dir = $DC/state
log_path = $DC/dovecot.log
info_log_path = $DC/dovecot.log
ssl = no
# Loopback only: plaintext logins are fine (Dovecot treats 127.0.0.1 as
# secured anyway).
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
# Room for 1,000 idle POP3 sessions (pop3-idle); one login and one pop3
# process per session is Dovecot's default (high-security) mode.
default_process_limit = 1200
default_client_limit = 5000
mail_max_userip_connections = 1200

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $USERS
}
userdb {
  driver = passwd-file
  args = username_format=%u $USERS
  default_fields = uid=$MAIL_USER gid=$MAIL_GROUP home=$MAIL/%d/%n
}
namespace inbox {
  inbox = yes
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PEER_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $PEER_POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
protocol lmtp {
  postmaster_address = postmaster@$PEER_DOMAIN
}
EOF

if [ -s "$DC/run/master.pid" ] && kill -0 "$(cat "$DC/run/master.pid")" 2>/dev/null; then
	echo "up.sh: dovecot already running (pid $(cat "$DC/run/master.pid"))"
else
	# Room for many sessions; Dovecot checks the limit against its config.
	ulimit -n 65536 2>/dev/null || true
	dovecot -c "$DC/dovecot.conf"
fi

# Postfix ---------------------------------------------------------------
cat >"$PF/conf/main.cf" <<EOF
# Written by mailbench peers/up.sh; only for loopback benchmarks.
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.$PEER_DOMAIN
mydomain = $PEER_DOMAIN
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = $PF/maillog
maillog_file_prefixes = $PEERS_DIR
smtpd_banner = \$myhostname ESMTP
message_size_limit = 52428800
# Every address in the domain goes to Dovecot over LMTP; Dovecot rejects
# unknown users itself.
virtual_mailbox_domains = $PEER_DOMAIN
virtual_mailbox_maps =
smtpd_reject_unlisted_recipient = no
virtual_transport = lmtp:unix:$DC/run/lmtp
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
default_process_limit = 200
EOF

# Debian's master.cf with our listener and no chroot (the chroot would need
# copies of /etc files inside the queue directory).
awk -v listen="127.0.0.1:$PEER_SMTP_PORT" '
	/^#/ || /^[ \t]/ || NF < 8 { print; next }
	$1 == "smtp" && $2 == "inet" { $1 = listen }
	{ $5 = "n"; print }
' /etc/postfix/master.cf >"$PF/conf/master.cf"

if [ -s "$PF/queue/pid/master.pid" ] && kill -0 "$(awk '{print $1}' "$PF/queue/pid/master.pid")" 2>/dev/null; then
	echo "up.sh: postfix already running"
	postfix -c "$PF/conf" reload >/dev/null 2>&1 || true
else
	postfix -c "$PF/conf" start
fi

# Wait for the listeners.
for port in "$PEER_SMTP_PORT" "$PEER_POP3_PORT" "$PEER_IMAP_PORT"; do
	i=0
	until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 50 ]; then
			echo "up.sh: nothing listens on 127.0.0.1:$port; see $PF/maillog and $DC/dovecot.log" >&2
			exit 1
		fi
		sleep 0.1
	done
done

echo "peers up in $PEERS_DIR"
echo "  smtp   127.0.0.1:$PEER_SMTP_PORT  (postfix, pid $(awk '{print $1}' "$PF/queue/pid/master.pid"))"
echo "  pop3   127.0.0.1:$PEER_POP3_PORT  (dovecot, pid $(cat "$DC/run/master.pid"))"
echo "  imap   127.0.0.1:$PEER_IMAP_PORT"
echo "  users  bench@$PEER_DOMAIN dl@$PEER_DOMAIN user0..user$((PEER_IDLE_USERS - 1))@$PEER_DOMAIN, password $PEER_PASS"
