#!/bin/bash
# outbound-up.sh starts two Postfix instances for the outbound figure of
# issue 6 (Postfix delivering to Postfix): oa on 127.0.0.1:2611 takes the
# messages (held at end of data) and relays them over SMTP with STARTTLS to
# ob on 127.0.0.1:2612, which delivers to a Maildir (virtual(8)). Then
# outbound-run.py N releases N held messages and times their arrival; compare
# with mailbox's `go test ./smtp -run '^$' -bench Outbound1000 -benchtime 1x`
# (also a full queue before the clock starts). Stop with
#   postfix -c /tmp/pfbench/oa/etc stop; postfix -c /tmp/pfbench/ob/etc stop
# Needs root and the Debian package postfix (and ssl-cert's snakeoil pair).
set -e
B=/tmp/pfbench
MAIL_UID=$(id -u nobody)
MAIL_GID=$(id -g nobody)
for inst in oa ob; do
  mkdir -p $B/$inst/etc $B/$inst/data $B/$inst/spool; chown postfix $B/$inst/data
  cp /etc/postfix/dynamicmaps.cf $B/$inst/etc/ 2>/dev/null || true
  mkdir -p $B/$inst/etc/dynamicmaps.cf.d
  sed -e "s/^smtp      inet .*/127.0.0.1:PORT inet n - n - - smtpd/" /etc/postfix/master.cf > $B/$inst/etc/master.cf
done
sed -i s/PORT/2611/ $B/oa/etc/master.cf
sed -i s/PORT/2612/ $B/ob/etc/master.cf
cat > $B/oa/etc/main.cf <<CF
compatibility_level = 3.6
myhostname = mx.a.test
mydomain = a.test
myorigin = a.test
mydestination =
queue_directory = $B/oa/spool
data_directory = $B/oa/data
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:2612
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtp_tls_security_level = may
smtp_connection_cache_on_demand = yes
smtp_connection_cache_destinations = [127.0.0.1]:2612
default_destination_concurrency_limit = 8
initial_destination_concurrency = 8
smtp_destination_concurrency_limit = 8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_relay_restrictions = permit_mynetworks reject
smtpd_end_of_data_restrictions = check_client_access static:HOLD
maillog_file = $B/oa/maillog
maillog_file_prefixes = /tmp
CF
cat > $B/ob/etc/main.cf <<CF
compatibility_level = 3.6
myhostname = mx.b.test
mydomain = b.test
mydestination =
queue_directory = $B/ob/spool
data_directory = $B/ob/data
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level = may
virtual_mailbox_domains = b.test
virtual_mailbox_base = $B/ob/mail
virtual_mailbox_maps = static:bob/
virtual_uid_maps = static:$MAIL_UID
virtual_gid_maps = static:$MAIL_GID
alias_maps =
alias_database =
biff = no
maillog_file = $B/ob/maillog
maillog_file_prefixes = /tmp
CF
mkdir -p $B/ob/mail && chown $MAIL_UID:$MAIL_GID $B/ob/mail
for inst in oa ob; do postfix -c $B/$inst/etc check; postfix -c $B/$inst/etc start; done
# no chroot (the queue directories are not set up as chroot jails)
for inst in oa ob; do postconf -c $B/$inst/etc -F '*/*/chroot = n'; postfix -c $B/$inst/etc reload; done
