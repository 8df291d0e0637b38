package smtp

import (
	"context"
	"errors"
	"net"
	"time"
)

// DefaultDNSTimeout bounds one DNS lookup (each query of the system's or
// the configured resolver, retries included).
const DefaultDNSTimeout = 10 * time.Second

// Resolver is every DNS lookup this package makes: MX and address lookups
// for outbound delivery, TXT for SPF, DKIM and DMARC, PTR for SPF's ptr
// mechanism. *net.Resolver satisfies it; NewResolver returns one with a
// timeout and, optionally, a fixed DNS server. It is the shape of
// blitiri.com.ar/go/spf's DNSResolver, so one value serves both.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// NewResolver returns the resolver all DNS goes through. With server ""
// it asks the system's resolvers (/etc/resolv.conf); with "host:port"
// every query goes to that server instead (e.g. a local validating
// unbound, or a test server). timeout bounds each lookup (0 means
// DefaultDNSTimeout).
func NewResolver(server string, timeout time.Duration) Resolver {
	if timeout <= 0 {
		timeout = DefaultDNSTimeout
	}
	r := &net.Resolver{PreferGo: true}
	if server != "" {
		d := net.Dialer{Timeout: timeout}
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, server)
		}
	}
	return timeoutResolver{r: r, timeout: timeout}
}

// timeoutResolver puts a deadline on every lookup.
type timeoutResolver struct {
	r       *net.Resolver
	timeout time.Duration
}

func (t timeoutResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.r.LookupMX(ctx, name)
}

func (t timeoutResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.r.LookupIPAddr(ctx, host)
}

func (t timeoutResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.r.LookupTXT(ctx, name)
}

func (t timeoutResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.r.LookupAddr(ctx, addr)
}

// isNotFound reports a DNS answer that the name or record does not exist
// (NXDOMAIN or no records), as opposed to a failure to get an answer.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
