package smtp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/miekg/dns"

	"mailbox/store"
	"mailbox/store/storetest"
)

// testDNS is a real DNS server (github.com/miekg/dns) on loopback, UDP
// and TCP on one port, answering from a fixed set of records. A name with
// no records at all is NXDOMAIN.
type testDNS struct {
	addr     string
	mu       sync.Mutex
	rrs      []dns.RR
	servfail map[string]bool // names answered with SERVFAIL
}

func startDNS(t testing.TB) *testDNS {
	t.Helper()
	d := &testDNS{}
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
	h := dns.HandlerFunc(d.serve)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return d
}

// add adds records in zone-file syntax ("a.test. 60 IN MX 10 mx.a.test.").
// TXT values longer than 255 bytes are split into strings.
func (d *testDNS) add(t testing.TB, records ...string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		d.rrs = append(d.rrs, rr)
	}
}

func (d *testDNS) addTXT(t testing.TB, name, value string) {
	t.Helper()
	var parts []string
	for len(value) > 0 {
		n := min(len(value), 255)
		parts = append(parts, value[:n])
		value = value[n:]
	}
	d.mu.Lock()
	d.rrs = append(d.rrs, &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: parts})
	d.mu.Unlock()
}

// remove drops the records of name (FQDN) and type.
func (d *testDNS) remove(name string, rrtype uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rrs = slices.DeleteFunc(d.rrs, func(rr dns.RR) bool {
		return strings.EqualFold(rr.Header().Name, name) && rr.Header().Rrtype == rrtype
	})
}

// fail makes every question about name (FQDN) answer SERVFAIL, as a
// broken or attacked resolver would; unfail ends that.
func (d *testDNS) fail(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.servfail == nil {
		d.servfail = map[string]bool{}
	}
	d.servfail[strings.ToLower(name)] = true
}

func (d *testDNS) unfail(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.servfail, strings.ToLower(name))
}

func (d *testDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	d.mu.Lock()
	for _, q := range req.Question {
		if d.servfail[strings.ToLower(q.Name)] {
			m.Rcode = dns.RcodeServerFailure
			continue
		}
		exists := false
		for _, rr := range d.rrs {
			if !strings.EqualFold(rr.Header().Name, q.Name) {
				continue
			}
			exists = true
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	d.mu.Unlock()
	w.WriteMsg(m)
}

// instance is one mailbox server for the outbound tests: its own store
// (data directory), MX and submission servers on their own ports, and a
// queue runner.
type instance struct {
	t      testing.TB
	st     *store.Store
	mx     *harness
	sub    *harness
	runner *Runner
	logs   *syncBuffer
	log    *slog.Logger
}

// newInstance makes a store with users (password `password`) and starts
// its MX and submission servers. Call startRunner to start sending.
func newInstance(t testing.TB, name string, users []string, mxOpts Options, storeOpts store.Options) *instance {
	t.Helper()
	fx := storetest.Fixture{Users: map[string]string{}, Options: storeOpts}
	for _, u := range users {
		fx.Users[u] = password
	}
	in := &instance{t: t, st: storetest.New(t, fx), logs: &syncBuffer{}}
	in.log = slog.New(slog.NewTextHandler(in.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", name)
	mxOpts.Store, mxOpts.Logger, mxOpts.Hostname = in.st, in.log, "mx."+name
	mxOpts.Mode = ModeMX
	in.mx = start(t, mxOpts)
	in.sub = start(t, Options{Store: in.st, Logger: in.log, Hostname: "mx." + name, Mode: ModeSubmission, TLS: mxOpts.TLS})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance %s log:\n%s", name, in.logs.String())
		}
	})
	return in
}

// startRunner starts the queue runner with opts (Store and Logger filled
// in) and stops it at the end of the test.
func (in *instance) startRunner(opts RunnerOptions) {
	in.t.Helper()
	opts.Store, opts.Logger = in.st, in.log
	in.runner = NewRunner(opts)
	if err := in.runner.Start(context.Background()); err != nil {
		in.t.Fatal(err)
	}
	r := in.runner
	in.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			in.t.Errorf("runner shutdown: %v", err)
		}
	})
}

// submit sends msg as user through the instance's submission port with
// STARTTLS and AUTH PLAIN.
func (in *instance) submit(user string, to []string, msg string) error {
	in.t.Helper()
	c := in.sub.submitClient()
	defer c.Quit()
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return err
	}
	if err := c.Mail(user, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

// waitInbox waits until addr has n messages (or fails after timeout) and
// returns them.
func (in *instance) waitInbox(addr string, n int, timeout time.Duration) [][]byte {
	in.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := inboxOf(in.t, in.st, addr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("%s has %d messages after %v, want %d", addr, len(got), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitQueueEmpty waits until the instance's queue is empty.
func (in *instance) waitQueueEmpty(timeout time.Duration) {
	in.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, _, _, err := in.st.QueueStats(context.Background())
		if err != nil {
			in.t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			q, _ := in.st.Queue(context.Background(), store.QueueFilter{})
			in.t.Fatalf("queue still has %d entries after %v: %+v", n, timeout, q)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishDomain adds the DNS records of a test domain whose MX is
// 127.0.0.1: MX, A, SPF allowing 127.0.0.1, DMARC with policy, and the
// instance's DKIM keys (made now).
func publishDomain(t testing.TB, d *testDNS, in *instance, domain, dmarcPolicy string) {
	t.Helper()
	d.add(t,
		fmt.Sprintf("%s. 60 IN MX 10 mx.%s.", domain, domain),
		fmt.Sprintf("mx.%s. 60 IN A 127.0.0.1", domain),
	)
	d.addTXT(t, domain, "v=spf1 ip4:127.0.0.1 -all")
	if dmarcPolicy != "" {
		d.addTXT(t, "_dmarc."+domain, "v=DMARC1; p="+dmarcPolicy)
	}
	keys, err := EnsureDKIMKeys(context.Background(), in.st, domain, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		rec, err := DKIMRecord(k)
		if err != nil {
			t.Fatal(err)
		}
		d.addTXT(t, k.Selector+"._domainkey."+domain, rec)
	}
}

func (h *harness) port() int {
	_, p, _ := net.SplitHostPort(h.addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}
