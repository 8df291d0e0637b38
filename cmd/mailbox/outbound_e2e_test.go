package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// e2eDNS is a DNS server (github.com/miekg/dns) on loopback, UDP and TCP
// on one port, serving fixed records; a name without records is NXDOMAIN.
type e2eDNS struct {
	addr string
	mu   sync.Mutex
	rrs  []dns.RR
}

func startE2EDNS(t *testing.T) *e2eDNS {
	t.Helper()
	d := &e2eDNS{}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no free port for UDP and TCP")
	}
	d.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		d.mu.Lock()
		for _, q := range req.Question {
			exists := false
			for _, rr := range d.rrs {
				if strings.EqualFold(rr.Header().Name, q.Name) {
					exists = true
					if rr.Header().Rrtype == q.Qtype {
						m.Answer = append(m.Answer, rr)
					}
				}
			}
			if !exists {
				m.Rcode = dns.RcodeNameError
			}
		}
		d.mu.Unlock()
		w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return d
}

// zone adds records in zone-file syntax, as `mailbox domain dns` prints
// them.
func (d *e2eDNS) zone(t *testing.T, text string) {
	t.Helper()
	zp := dns.NewZoneParser(strings.NewReader(text), "", "")
	d.mu.Lock()
	defer d.mu.Unlock()
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		d.rrs = append(d.rrs, rr)
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("zone: %v\n%s", err, text)
	}
}

// TestSendBetweenServers: two `mailbox serve` processes with their own
// data directories and ports, and a DNS server holding exactly what
// `mailbox domain dns` printed for each domain. alice@a.test submits with
// swaks (STARTTLS, AUTH LOGIN) to bob@b.test; A's queue delivers to B,
// signed; bob reads it over POP3 with spf=pass dkim=pass dmarc=pass. A
// forgery of a.test straight to B's port 25 is refused by DMARC.
func TestSendBetweenServers(t *testing.T) {
	t.Parallel()
	needTool(t, "swaks")
	d := startE2EDNS(t)
	resolver := fmt.Sprintf("\n[dns]\nresolver = %q\n", d.addr)

	b := newInstance(t, resolver)
	b.must("", "domain", "add", "b.test")
	b.addUser("bob@b.test", "pw bob")
	pb := b.start()

	a := newInstance(t, resolver+fmt.Sprintf("\n[outbound]\nmx_port = %s\nretry_min = \"1s\"\n", pb.port("smtp")))
	a.must("", "domain", "add", "a.test")
	a.addUser("alice@a.test", "pw alice")
	for _, in := range []struct {
		in     *instance
		domain string
	}{{a, "a.test"}, {b, "b.test"}} {
		zone := in.in.must("", "domain", "dns", in.domain)
		// The printed SPF says "mx"; the MX host is localhost, here
		// 127.0.0.1. p=reject so the forgery below is refused.
		zone = strings.Replace(zone, "p=quarantine", "p=reject", 1)
		d.zone(t, zone+"localhost. 60 IN A 127.0.0.1\n")
	}
	pa := a.start()

	ca := filepath.Join(a.dir, "ca.crt")
	if err := os.WriteFile(ca, []byte(a.must("", "tls", "ca")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("swaks", "--server", "127.0.0.1", "--port", pa.port("submission"),
		"--tls", "--tls-verify", "--tls-ca-path", ca,
		"--auth", "LOGIN", "--auth-user", "alice@a.test", "--auth-password", "pw alice",
		"--from", "alice@a.test", "--to", "bob@b.test", "--helo", "e2e.test",
		"--header", "Subject: across servers", "--timeout", "20").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for countMessages(t, pb.addr("pop3"), "bob@b.test", "pw bob") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bob got nothing; A's queue:\n%s", a.must("", "queue", "list"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := dialPOP3(t, pb.addr("pop3"))
	c.login("bob@b.test", "pw bob")
	got := string(c.retr(1))
	c.cmd("QUIT")
	for _, want := range []string{"Subject: across servers", "DKIM-Signature: a=ed25519-sha256;",
		"DKIM-Signature: a=rsa-sha256;", "\tspf=pass smtp.helo=localhost smtp.mailfrom=alice@a.test;",
		"\tdkim=pass header.d=a.test", "\tdmarc=pass header.from=a.test"} {
		if !strings.Contains(got, want) {
			t.Errorf("bob's copy lacks %q:\n%s", want, got)
		}
	}
	if q := a.must("", "queue", "list"); !strings.Contains(q, "0 entries") {
		t.Errorf("A's queue is not empty:\n%s", q)
	}

	// The forgery: alice's domain, from an address SPF does not allow, no
	// signature.
	out, err = exec.Command("swaks", "--server", "127.0.0.1", "--port", pb.port("smtp"), "--local-interface", "127.0.0.7",
		"--from", "alice@a.test", "--to", "bob@b.test", "--helo", "forger.test",
		"--header", "Subject: forged", "--timeout", "20").CombinedOutput()
	if err == nil || !regexp.MustCompile(`(?m)^<\*\* +550 5\.7\.1 `).Match(out) {
		t.Errorf("forgery not refused with 550 5.7.1: %v\n%s", err, out)
	}
}
