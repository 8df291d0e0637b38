package smtp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"mailbox/store"
)

// Applying an MTA-STS policy to delivery (RFC 8461 §4 and §5):
//   - enforce: only MX hosts that match the policy's mx patterns are
//     used, only over STARTTLS, only with a certificate valid for the MX
//     host's name that chains to a trusted root. If no host qualifies the
//     attempt fails temporarily (the mail waits and is retried; the bounce
//     or delay notice says why).
//   - testing: delivery goes on as without a policy, and what enforce
//     would have refused is logged.
//   - none, or no policy: opportunistic TLS as usual.
// Smarthost delivery never gets here: the relay applies the policy.

// stsError is a connection that enforce mode refused. It is temporary:
// the policy may be fixed, or the attacker stripping TLS may go away.
type stsError struct {
	domain string
	reason string
}

func (e *stsError) Error() string {
	return "MTA-STS policy of " + e.domain + " requires TLS with a valid certificate to a listed MX host: " + e.reason
}

// connectDomain opens a connection for domain as connect does, under the
// domain's MTA-STS policy if it has one.
func (r *Runner) connectDomain(ctx context.Context, domain string) (*outConn, error) {
	if r.sts == nil || r.opts.Smarthost.Addr != "" {
		return r.connect(ctx, domain)
	}
	pol, err := r.sts.policy(ctx, domain)
	if err != nil {
		// The cache could not be read: a policy may apply that we cannot
		// see, so wait rather than risk sending in the clear.
		return nil, err
	}
	if pol == nil || pol.Mode == store.MTASTSNone {
		return r.connect(ctx, domain)
	}
	return r.connectPolicy(ctx, domain, pol)
}

// connectPolicy connects to the first MX host of domain, in preference
// order, that the policy allows (enforce) or to the first that answers
// (testing, where what enforce would refuse is only logged).
func (r *Runner) connectPolicy(ctx context.Context, domain string, pol *store.MTASTSPolicy) (*outConn, error) {
	enforce := pol.Mode == store.MTASTSEnforce
	log := r.log.With("domain", domain, "mta_sts", pol.Mode)
	hosts, err := r.mxHosts(ctx, domain)
	if err != nil {
		return nil, err
	}
	var last error
	var skipped []string
	for _, host := range hosts {
		if !mxMatches(pol.MX, host) {
			if enforce {
				log.Info("MX host not in the MTA-STS policy, skipped", "host", host)
				skipped = append(skipped, host)
				continue
			}
			log.Warn("MTA-STS testing: MX host not in the policy, delivering anyway", "host", host,
				"mx", strings.Join(pol.MX, " "))
		}
		ips, err := r.opts.Resolver.LookupIPAddr(ctx, host)
		if err != nil {
			last = fmt.Errorf("look up MX host %s: %w", host, err)
			continue
		}
		for _, ip := range ips {
			addr := net.JoinHostPort(ip.IP.String(), strconv.Itoa(r.opts.MXPort))
			c, err := r.dialPolicy(ctx, domain, host, addr, enforce)
			if err != nil {
				last = err
				continue
			}
			return c, nil
		}
	}
	if last == nil && len(skipped) > 0 {
		last = &stsError{domain: domain, reason: fmt.Sprintf("no MX host matches the policy's mx list (%s); MX hosts: %s",
			strings.Join(pol.MX, ", "), strings.Join(skipped, ", "))}
	}
	if last == nil {
		last = fmt.Errorf("no address for the MX hosts of %s", domain)
	}
	return nil, last
}

// dialPolicy connects to one MX address and starts TLS, verifying the
// certificate for host. In enforce mode a missing STARTTLS, a failed
// handshake or a certificate that does not verify refuses the host; in
// testing mode they are logged and delivery goes on as opportunistic TLS
// would.
func (r *Runner) dialPolicy(ctx context.Context, domain, host, addr string, enforce bool) (*outConn, error) {
	c, err := r.dial(ctx, host, addr, false)
	if err != nil {
		return nil, err
	}
	log := r.log.With("domain", domain, "host", host)
	if ok, _ := c.c.Extension("STARTTLS"); !ok {
		if enforce {
			c.close()
			return nil, &stsError{domain: domain, reason: host + " does not offer STARTTLS"}
		}
		log.Warn("MTA-STS testing: MX host does not offer STARTTLS, delivering anyway")
		if r.opts.RequireTLS {
			c.close()
			return nil, fmt.Errorf("%s does not offer STARTTLS and TLS is required", host)
		}
		return c, nil
	}
	var verifyErr error
	cfg := &tls.Config{
		ServerName: host,
		MinVersion: tls.VersionTLS12,
		// The chain is checked in VerifyConnection, so that testing mode
		// can see the failure and still go on.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			verifyErr = verifyCertificate(cs, host, r.opts.MTASTSRoots)
			if enforce {
				return verifyErr
			}
			return nil
		},
	}
	if err := r.startTLS(c, cfg); err != nil {
		c.close()
		if enforce {
			return nil, &stsError{domain: domain, reason: fmt.Sprintf("STARTTLS with %s: %v", host, err)}
		}
		log.Warn("MTA-STS testing: STARTTLS failed, delivering without TLS", "err", err)
		return r.dialMX(ctx, host, addr, false)
	}
	if verifyErr != nil {
		log.Warn("MTA-STS testing: certificate not valid, delivering anyway", "err", verifyErr)
	}
	return c, nil
}

// verifyCertificate checks the server's chain against roots (nil: the
// system's) for the name host, as RFC 8461 §4.2 asks of MX hosts.
func verifyCertificate(cs tls.ConnectionState, host string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: x509.NewCertPool()}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}
