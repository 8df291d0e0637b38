package smtp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailbox/store"
	"mailbox/store/storetest"
)

func TestParseMTASTSRecord(t *testing.T) {
	for _, tc := range []struct {
		name, input, want string
		wantErr           bool
	}{
		{"plain", "v=STSv1; id=20160831085700Z;", "20160831085700Z", false},
		{"no final delimiter", "v=STSv1; id=abc", "abc", false},
		{"no spaces", "v=STSv1;id=abc;", "abc", false},
		{"tabs and spaces", "v=STSv1 \t;\t id=abc \t; ", "abc", false},
		{"extension", "v=STSv1; id=1; ext_x-y.z=a:b/c", "1", false},
		{"id of 32", "v=STSv1; id=" + strings.Repeat("a", 32), strings.Repeat("a", 32), false},
		{"id of 33", "v=STSv1; id=" + strings.Repeat("a", 33), "", true},
		{"no id", "v=STSv1;", "", true},
		{"empty id", "v=STSv1; id=;", "", true},
		{"id with dash", "v=STSv1; id=2020-01-01;", "", true},
		{"two ids", "v=STSv1; id=1; id=2", "", true},
		{"version not first", "id=1; v=STSv1", "", true},
		{"other version", "v=STSv2; id=1", "", true},
		{"lower-case version", "v=stsv1; id=1", "", true},
		{"upper-case key", "v=STSv1; ID=1", "", true},
		{"field without value", "v=STSv1; id=1; x", "", true},
		{"extension with space", "v=STSv1; id=1; x=a b", "", true},
		{"empty field in the middle", "v=STSv1; ; id=1", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMTASTSRecord(tc.input)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseMTASTSRecord(%q) = %q, %v; want %q, error %v", tc.input, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseMTASTSPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		want        store.MTASTSPolicy
		wantErr     bool
	}{
		{"RFC example", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			store.MTASTSPolicy{Mode: "enforce", MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second}, false},
		{"LF, no final newline, any order", "max_age: 86400\nmx: MX.Example.COM\nmode: testing\nversion: STSv1",
			store.MTASTSPolicy{Mode: "testing", MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}, false},
		{"none needs no mx", "version: STSv1\nmode: none\nmax_age: 0\n", store.MTASTSPolicy{Mode: "none"}, false},
		{"extension ignored", "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\nx-ext: anything: at all\n",
			store.MTASTSPolicy{Mode: "enforce", MX: []string{"a.test"}, MaxAge: time.Second}, false},
		{"no space after colon", "version:STSv1\nmode:enforce\nmx:a.test\nmax_age:1\n",
			store.MTASTSPolicy{Mode: "enforce", MX: []string{"a.test"}, MaxAge: time.Second}, false},
		{"largest max_age", "version: STSv1\nmode: none\nmax_age: 31557600\n", store.MTASTSPolicy{Mode: "none", MaxAge: 31557600 * time.Second}, false},
		{"max_age too large", "version: STSv1\nmode: none\nmax_age: 31557601\n", store.MTASTSPolicy{}, true},
		{"max_age of 11 digits", "version: STSv1\nmode: none\nmax_age: 00000000001\n", store.MTASTSPolicy{}, true},
		{"negative max_age", "version: STSv1\nmode: none\nmax_age: -1\n", store.MTASTSPolicy{}, true},
		{"no version", "mode: enforce\nmx: a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"version STSv2", "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"no mode", "version: STSv1\nmx: a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"unknown mode", "version: STSv1\nmode: enforcing\nmx: a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"upper-case mode", "version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: a.test\n", store.MTASTSPolicy{}, true},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"mode twice", "version: STSv1\nmode: testing\nmode: enforce\nmx: a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"bad mx", "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"wildcard in the middle", "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"line without colon", "version: STSv1\nmode: enforce\nmx a.test\nmax_age: 1\n", store.MTASTSPolicy{}, true},
		{"HTML page", "<html><body>version: STSv1</body></html>\n", store.MTASTSPolicy{}, true},
		{"empty", "", store.MTASTSPolicy{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMTASTSPolicy(tc.input)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (got.Mode != tc.want.Mode || !slices.Equal(got.MX, tc.want.MX) || got.MaxAge != tc.want.MaxAge) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMXMatches(t *testing.T) {
	patterns := []string{"mail.example.com", "*.example.net"}
	for host, want := range map[string]bool{
		"mail.example.com":    true,
		"MAIL.Example.com.":   true,
		"mx.example.com":      false,
		"example.com":         false,
		"a.example.net":       true,
		"A.EXAMPLE.NET.":      true,
		"example.net":         false,
		"a.b.example.net":     false,
		"aexample.net":        false,
		"mail.example.com.au": false,
	} {
		if got := mxMatches(patterns, host); got != want {
			t.Errorf("mxMatches(%q) = %v, want %v", host, got, want)
		}
	}
}

// testCA is a certificate authority for the MTA-STS tests: the runner
// trusts it (RunnerOptions.MTASTSRoots), nobody else does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailbox test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// serverTLS is a server configuration with a certificate for names,
// issued by ca.
func (ca *testCA) serverTLS(t testing.TB, names ...string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
}

// policyServer serves MTA-STS policy files over HTTPS on loopback, for
// every mta-sts.<domain> its certificate names.
type policyServer struct {
	srv  *httptest.Server
	port int
	hits atomic.Int32

	mu       sync.Mutex
	policies map[string]policyReply // by domain
}

// policyReply is what the server answers for one domain.
type policyReply struct {
	status      int    // 0: 200
	contentType string // "": text/plain
	location    string // a redirect target, with status 3xx
	body        string
}

func startPolicyServer(t testing.TB, tlsCfg *tls.Config) *policyServer {
	t.Helper()
	ps := &policyServer{policies: map[string]policyReply{}}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(ps.serve))
	ps.srv.TLS = tlsCfg
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	_, port, _ := net.SplitHostPort(ps.srv.Listener.Addr().String())
	fmt.Sscan(port, &ps.port)
	return ps
}

func (ps *policyServer) set(domain string, r policyReply) {
	ps.mu.Lock()
	ps.policies[domain] = r
	ps.mu.Unlock()
}

func (ps *policyServer) serve(w http.ResponseWriter, req *http.Request) {
	ps.hits.Add(1)
	host, _, _ := net.SplitHostPort(req.Host)
	domain, ok := strings.CutPrefix(host, "mta-sts.")
	ps.mu.Lock()
	r, known := ps.policies[domain]
	ps.mu.Unlock()
	if !ok || !known || req.URL.Path != mtaSTSPath {
		http.NotFound(w, req)
		return
	}
	ct := r.contentType
	if ct == "" {
		ct = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	if r.location != "" {
		w.Header().Set("Location", r.location)
	}
	if r.status != 0 {
		w.WriteHeader(r.status)
	}
	w.Write([]byte(r.body))
}

// enforcePolicy is a policy file in enforce mode for mx patterns.
func enforcePolicy(maxAge int, mx ...string) string {
	s := "version: STSv1\r\nmode: enforce\r\n"
	for _, m := range mx {
		s += "mx: " + m + "\r\n"
	}
	return s + fmt.Sprintf("max_age: %d\r\n", maxAge)
}

// receiver is a receiving MX for bob@b.test: its own store and an SMTP
// server on ip:port, with STARTTLS only if tlsCfg is set. conns counts
// the connections it accepted.
type receiver struct {
	st    *store.Store
	addr  string
	conns atomic.Int32
}

func startReceiver(t testing.TB, ip string, port int, tlsCfg *tls.Config) *receiver {
	t.Helper()
	rc := &receiver{st: storetest.New(t, storetest.Fixture{Users: map[string]string{bobB: password}})}
	logs := &syncBuffer{}
	srv := New(Options{Store: rc.st, Mode: ModeMX, Hostname: "receiver", TLS: tlsCfg,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	rc.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&countingListener{Listener: ln, n: &rc.conns}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		if t.Failed() {
			t.Logf("receiver %s log:\n%s", rc.addr, logs.String())
		}
	})
	return rc
}

func (rc *receiver) port() int {
	_, p, _ := net.SplitHostPort(rc.addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// stsSetup is one MTA-STS scenario: a DNS server, a test CA, a policy
// server and a sender (instance a.test) whose runner trusts the CA.
type stsSetup struct {
	t      *testing.T
	dns    *testDNS
	ca     *testCA
	policy *policyServer
	a      *instance
}

func newSTSSetup(t *testing.T) *stsSetup {
	s := &stsSetup{t: t, dns: startDNS(t), ca: newTestCA(t)}
	s.policy = startPolicyServer(t, s.ca.serverTLS(t, "mta-sts.b.test", "mta-sts.c.test"))
	s.dns.add(t, "mta-sts.b.test. 60 IN A 127.0.0.1", "mta-sts.c.test. 60 IN A 127.0.0.1")
	s.a = newInstance(t, "a.test", []string{aliceA}, Options{}, store.Options{})
	return s
}

// runnerOptions are fast-retry options that reach receivers on mxPort
// and the policy server, trusting the test CA. Delay warnings go out at
// the first deferral, so a test can read why.
func (s *stsSetup) runnerOptions(mxPort int) RunnerOptions {
	o := fastRetry(s.dns, mxPort)
	o.MTASTSRoots = s.ca.pool
	o.MTASTSPort = s.policy.port
	o.MTASTSFetchTimeout = 2 * time.Second
	o.DelayWarning = time.Nanosecond
	o.RetryMin, o.RetryMax = 200*time.Millisecond, 400*time.Millisecond
	return o
}

// submit queues a message from alice to bob@b.test.
func (s *stsSetup) submit(subject string) {
	s.t.Helper()
	ctx := context.Background()
	acct, err := s.a.st.Account(ctx, aliceA)
	if err != nil {
		s.t.Fatal(err)
	}
	_, err = acct.Submit(ctx, store.Submission{Recipients: []string{bobB}, Data: []byte(testMessage(aliceA, bobB, subject)), NoSentCopy: true})
	if err != nil {
		s.t.Fatal(err)
	}
}

// clearQueue drops every queue entry (the runner is stopped).
func (s *stsSetup) clearQueue() {
	s.t.Helper()
	ctx := context.Background()
	q, err := s.a.st.Queue(ctx, store.QueueFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	var ids []int64
	for _, e := range q {
		ids = append(ids, e.ID)
	}
	if _, err := s.a.st.DeleteQueued(ctx, ids); err != nil {
		s.t.Fatal(err)
	}
}

// waitDeferred waits until the queue's one entry has failed an attempt
// and returns it.
func (s *stsSetup) waitDeferred() store.QueueEntry {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := s.a.st.Queue(context.Background(), store.QueueFilter{})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(q) == 1 && q[0].Attempts > 0 && !q[0].Sending {
			return q[0]
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no deferred entry after 10s: %+v", q)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMTASTSEnforce: a domain in enforce mode gets mail only over
// STARTTLS with a certificate valid for its MX host; without STARTTLS, or
// with a certificate for another name, the mail waits (and the sender's
// delay notice says why).
func TestMTASTSEnforce(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tls       func(s *stsSetup) *tls.Config
		delivered bool
		why       string
	}{
		{"valid certificate", func(s *stsSetup) *tls.Config { return s.ca.serverTLS(t, "mx.b.test") }, true, ""},
		{"wildcard certificate", func(s *stsSetup) *tls.Config { return s.ca.serverTLS(t, "*.b.test") }, true, ""},
		{"no STARTTLS", func(*stsSetup) *tls.Config { return nil }, false, "mx.b.test does not offer STARTTLS"},
		{"certificate for another name", func(s *stsSetup) *tls.Config { return s.ca.serverTLS(t, "mx.other.test") }, false,
			"certificate is valid for mx.other.test, not mx.b.test"},
		{"certificate from an unknown CA", func(*stsSetup) *tls.Config { return newTestCA(t).serverTLS(t, "mx.b.test") }, false,
			"certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSTSSetup(t)
			s.dns.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
			s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=1;")
			s.policy.set("b.test", policyReply{body: enforcePolicy(86400, "mx.b.test")})
			b := startReceiver(t, "127.0.0.1", 0, tc.tls(s))
			s.a.startRunner(s.runnerOptions(b.port()))
			s.submit("enforced")
			if tc.delivered {
				got := waitInboxOf(t, b.st, bobB, 1, 10*time.Second)
				if !bytes.Contains(got[0], []byte("Subject: enforced")) || !bytes.Contains(got[0], []byte("(using TLS")) {
					t.Fatalf("bob got:\n%s", got[0])
				}
				s.a.waitQueueEmpty(5 * time.Second)
			} else {
				e := s.waitDeferred()
				if !strings.Contains(e.LastError, "MTA-STS policy of b.test") || !strings.Contains(e.LastError, tc.why) {
					t.Fatalf("last error %q, want MTA-STS and %q", e.LastError, tc.why)
				}
				warn := waitInboxOf(t, s.a.st, aliceA, 1, 5*time.Second)[0]
				for _, want := range []string{"Delayed Mail", "MTA-STS policy of b.test requires TLS", tc.why, "Status: 4.7.5", "Action: delayed"} {
					if !bytes.Contains(warn, []byte(want)) {
						t.Errorf("delay notice lacks %q:\n%s", want, warn)
					}
				}
				time.Sleep(500 * time.Millisecond) // a retry or two
				if n := len(inboxOf(t, b.st, bobB)); n != 0 {
					t.Fatalf("bob got %d messages over a connection the policy forbids", n)
				}
			}
			p, err := s.a.st.MTASTSPolicy(context.Background(), "b.test")
			if err != nil || p.Mode != store.MTASTSEnforce || p.ID != "1" || !slices.Equal(p.MX, []string{"mx.b.test"}) || p.MaxAge != 86400*time.Second {
				t.Fatalf("cached policy %+v, %v", p, err)
			}
		})
	}
}

// TestMTASTSMXNotInPolicy: in enforce mode an MX host the policy does not
// list is never connected to, even when it is the preferred one; with no
// listed host at all the mail waits.
func TestMTASTSMXNotInPolicy(t *testing.T) {
	s := newSTSSetup(t)
	// Both MX hosts listen on the same port (the runner has one MX port)
	// on two loopback addresses; the preferred one is not in the policy.
	good := startReceiver(t, "127.0.0.1", 0, s.ca.serverTLS(t, "mx2.b.test"))
	bad := startReceiver(t, "127.0.0.2", good.port(), s.ca.serverTLS(t, "mx1.b.test"))
	s.dns.add(t, "b.test. 60 IN MX 10 mx1.b.test.", "b.test. 60 IN MX 20 mx2.b.test.",
		"mx1.b.test. 60 IN A 127.0.0.2", "mx2.b.test. 60 IN A 127.0.0.1",
		"c.test. 60 IN MX 10 mx1.b.test.")
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=7")
	s.dns.addTXT(t, "_mta-sts.c.test", "v=STSv1; id=7")
	s.policy.set("b.test", policyReply{body: enforcePolicy(3600, "mx2.b.test", "*.other.test")})
	s.policy.set("c.test", policyReply{body: enforcePolicy(3600, "mx2.b.test")})
	s.a.startRunner(s.runnerOptions(good.port()))
	s.submit("listed host only")
	waitInboxOf(t, good.st, bobB, 1, 10*time.Second)
	s.a.waitQueueEmpty(5 * time.Second)
	if n := bad.conns.Load(); n != 0 {
		t.Fatalf("the unlisted MX host got %d connections", n)
	}

	// c.test's only MX host is not in its policy.
	ctx := context.Background()
	acct, _ := s.a.st.Account(ctx, aliceA)
	if _, err := acct.Submit(ctx, store.Submission{Recipients: []string{"carol@c.test"},
		Data: []byte(testMessage(aliceA, "carol@c.test", "nowhere")), NoSentCopy: true}); err != nil {
		t.Fatal(err)
	}
	e := s.waitDeferred()
	if !strings.Contains(e.LastError, "MTA-STS policy of c.test") || !strings.Contains(e.LastError, "no MX host matches") {
		t.Fatalf("last error %q", e.LastError)
	}
	if n := bad.conns.Load(); n != 0 {
		t.Fatalf("the unlisted MX host got %d connections", n)
	}
}

// TestMTASTSTesting: in testing mode mail goes out as without a policy
// (here in plain text to a host without STARTTLS), and the failure is
// logged.
func TestMTASTSTesting(t *testing.T) {
	s := newSTSSetup(t)
	s.dns.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=1")
	s.policy.set("b.test", policyReply{body: "version: STSv1\nmode: testing\nmx: other.b.test\nmax_age: 600\n"})
	b := startReceiver(t, "127.0.0.1", 0, nil)
	s.a.startRunner(s.runnerOptions(b.port()))
	s.submit("testing mode")
	got := waitInboxOf(t, b.st, bobB, 1, 10*time.Second)[0]
	if bytes.Contains(got, []byte("(using TLS")) {
		t.Fatalf("TLS without STARTTLS?\n%s", got)
	}
	s.a.waitQueueEmpty(5 * time.Second)
	logs := s.a.logs.String()
	for _, want := range []string{"MTA-STS testing: MX host not in the policy", "MTA-STS testing: MX host does not offer STARTTLS"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if p, err := s.a.st.MTASTSPolicy(context.Background(), "b.test"); err != nil || p.Mode != store.MTASTSTesting {
		t.Fatalf("cached %+v %v", p, err)
	}
}

// TestMTASTSCachedPolicy: once an enforce policy is cached, it keeps
// applying, across a restart, when the TXT record disappears, when DNS
// fails, and when a new id cannot be fetched: a man in the middle who
// strips STARTTLS and blocks the policy gains nothing. A policy past its
// max_age no longer applies.
func TestMTASTSCachedPolicy(t *testing.T) {
	s := newSTSSetup(t)
	s.dns.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=1")
	s.policy.set("b.test", policyReply{body: enforcePolicy(86400, "mx.b.test")})
	secure := startReceiver(t, "127.0.0.1", 0, s.ca.serverTLS(t, "mx.b.test"))
	port := secure.port()
	opts := s.runnerOptions(port)
	s.a.startRunner(opts)
	s.submit("first")
	waitInboxOf(t, secure.st, bobB, 1, 10*time.Second)
	s.a.waitQueueEmpty(5 * time.Second)
	if n := s.policy.hits.Load(); n != 1 {
		t.Fatalf("%d policy fetches, want 1", n)
	}
	s.a.runner.Shutdown(context.Background())

	// The attacker's world: STARTTLS stripped (a plain server on the same
	// address), the policy host unreachable, the TXT record blocked.
	plain := startReceiver(t, "127.0.0.1", 0, nil)
	opts.MXPort = plain.port()
	s.policy.srv.Close()
	for _, step := range []struct {
		name  string
		setup func()
	}{
		{"TXT record gone", func() { s.dns.remove("_mta-sts.b.test.", dns.TypeTXT) }},
		{"DNS failing", func() { s.dns.fail("_mta-sts.b.test.") }},
		{"new id, fetch failing", func() {
			s.dns.unfail("_mta-sts.b.test.")
			s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=2")
		}},
	} {
		t.Run(step.name, func(t *testing.T) {
			step.setup()
			s.clearQueue()
			s.a.startRunner(opts) // a restart: only the store remembers the policy
			s.submit(step.name)
			e := s.waitDeferred()
			if !strings.Contains(e.LastError, "mx.b.test does not offer STARTTLS") {
				t.Fatalf("last error %q", e.LastError)
			}
			if n := len(inboxOf(t, plain.st, bobB)); n != 0 {
				t.Fatalf("delivered in plain text despite the cached enforce policy")
			}
			s.a.runner.Shutdown(context.Background())
		})
	}

	// Past max_age the cached policy is gone, and the mail flows (in
	// plain text, as without MTA-STS).
	s.clearQueue()
	later := opts
	later.Now = func() time.Time { return time.Now().Add(86401 * time.Second) }
	s.a.startRunner(later)
	s.submit("after expiry")
	waitInboxOf(t, plain.st, bobB, 1, 10*time.Second)
}

// TestMTASTSBadPolicy: a TXT record whose policy cannot be fetched or is
// invalid means no policy (RFC 8461 §5.1): mail goes out as usual, and
// nothing is cached.
func TestMTASTSBadPolicy(t *testing.T) {
	good := enforcePolicy(3600, "mx.b.test")
	for _, tc := range []struct {
		name   string
		reply  policyReply
		record string
		cert   string // the policy host's certificate name, "" for the right one
	}{
		{"invalid mode", policyReply{body: strings.Replace(good, "enforce", "enforcing", 1)}, "", ""},
		{"no max_age", policyReply{body: "version: STSv1\nmode: enforce\nmx: mx.b.test\n"}, "", ""},
		{"not text/plain", policyReply{body: good, contentType: "text/html"}, "", ""},
		{"404", policyReply{status: 404, body: good}, "", ""},
		{"redirect", policyReply{status: http.StatusFound, location: "https://mta-sts.c.test/.well-known/mta-sts.txt"}, "", ""},
		{"too large", policyReply{body: good + "x-pad: " + strings.Repeat("x", mtaSTSMaxPolicyBytes) + "\n"}, "", ""},
		{"certificate for another name", policyReply{body: good}, "", "mta-sts.other.test"},
		{"two TXT records", policyReply{body: good}, "v=STSv1; id=2", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSTSSetup(t)
			if tc.cert != "" {
				s.policy.srv.Close()
				s.policy = startPolicyServer(t, s.ca.serverTLS(t, tc.cert))
			}
			s.dns.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
			s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=1")
			if tc.record != "" {
				s.dns.addTXT(t, "_mta-sts.b.test", tc.record)
			}
			s.policy.set("b.test", tc.reply)
			s.policy.set("c.test", policyReply{body: good})
			b := startReceiver(t, "127.0.0.1", 0, nil)
			s.a.startRunner(s.runnerOptions(b.port()))
			s.submit("bad policy")
			waitInboxOf(t, b.st, bobB, 1, 10*time.Second)
			if _, err := s.a.st.MTASTSPolicy(context.Background(), "b.test"); err == nil {
				t.Fatal("a bad policy was cached")
			}
			if tc.record == "" && s.policy.hits.Load() == 0 && tc.cert == "" {
				t.Fatal("the policy was never fetched")
			}
		})
	}
}

// TestMTASTSRefresh: the same id is not fetched again while the cached
// copy is young; a new id is, and its policy replaces the old one.
func TestMTASTSRefresh(t *testing.T) {
	s := newSTSSetup(t)
	s.dns.add(t, "b.test. 60 IN MX 10 mx.b.test.", "mx.b.test. 60 IN A 127.0.0.1")
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=1")
	s.policy.set("b.test", policyReply{body: enforcePolicy(86400, "mx.b.test")})
	b := startReceiver(t, "127.0.0.1", 0, s.ca.serverTLS(t, "mx.b.test"))
	opts := s.runnerOptions(b.port())
	opts.Store, opts.Logger = s.a.st, s.a.log
	r := NewRunner(opts)
	ctx := context.Background()
	for range 3 {
		p, err := r.sts.policy(ctx, "b.test")
		if err != nil || p == nil || p.Mode != store.MTASTSEnforce {
			t.Fatalf("%+v %v", p, err)
		}
	}
	if n := s.policy.hits.Load(); n != 1 {
		t.Fatalf("%d fetches for one id, want 1", n)
	}
	s.dns.remove("_mta-sts.b.test.", dns.TypeTXT)
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=2")
	s.policy.set("b.test", policyReply{body: "version: STSv1\nmode: none\nmax_age: 604800\n"})
	p, err := r.sts.policy(ctx, "b.test")
	if err != nil || p == nil || p.Mode != store.MTASTSNone || p.ID != "2" {
		t.Fatalf("after the id changed: %+v %v", p, err)
	}
	if n := s.policy.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// A day later the same id is fetched again (the policy is renewed).
	r.sts.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
	if p, err := r.sts.policy(ctx, "b.test"); err != nil || p == nil || s.policy.hits.Load() != 3 {
		t.Fatalf("refresh: %+v %v, %d fetches", p, err, s.policy.hits.Load())
	}
	// A new id whose fetch fails is not fetched again for a while (RFC
	// 8461 §3.3); the cached policy applies meanwhile.
	s.dns.remove("_mta-sts.b.test.", dns.TypeTXT)
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=3")
	s.policy.set("b.test", policyReply{status: http.StatusServiceUnavailable})
	for range 3 {
		if p, err := r.sts.policy(ctx, "b.test"); err != nil || p == nil || p.ID != "2" {
			t.Fatalf("with a failing fetch: %+v %v", p, err)
		}
	}
	if n := s.policy.hits.Load(); n != 4 {
		t.Fatalf("%d fetches, want 4: a failed id is fetched once per %v", n, mtaSTSFailedRetry)
	}
	r.sts.now = func() time.Time { return time.Now().Add(25*time.Hour + mtaSTSFailedRetry) }
	r.sts.policy(ctx, "b.test")
	if n := s.policy.hits.Load(); n != 5 {
		t.Fatalf("%d fetches, want 5 once the wait is over", n)
	}
}

// TestMTASTSSmarthost: with a smarthost, recipient domains' policies are
// not looked up: the relay applies them.
func TestMTASTSSmarthost(t *testing.T) {
	s := newSTSSetup(t)
	s.dns.addTXT(t, "_mta-sts.b.test", "v=STSv1; id=1")
	s.policy.set("b.test", policyReply{body: enforcePolicy(86400, "mx.b.test")})
	relay := startReceiver(t, "127.0.0.1", 0, nil)
	opts := s.runnerOptions(0)
	opts.Smarthost = Smarthost{Addr: relay.addr, TLS: "none"}
	s.a.startRunner(opts)
	s.submit("via the relay")
	waitInboxOf(t, relay.st, bobB, 1, 10*time.Second)
	if n := s.policy.hits.Load(); n != 0 {
		t.Fatalf("%d policy fetches with a smarthost", n)
	}
}

// waitInboxOf waits until addr in st has n messages and returns them.
func waitInboxOf(t testing.TB, st *store.Store, addr string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := inboxOf(t, st, addr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d messages after %v, want %d", addr, len(got), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
