package smtp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/mail"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// Inbound checks on the MX (RFC 7208 SPF, RFC 6376 DKIM, RFC 7489 DMARC),
// reported in an Authentication-Results header (RFC 8601) that we add at
// the top; one claiming to come from our own host name that arrives with
// the message is removed first (RFC 8601 §5), so nobody can forge our
// verdict. DMARC decides: a failing message from a p=reject domain is
// refused with 550 5.7.1, one from a p=quarantine domain goes to Junk
// (both can be turned off in InboundPolicy).

// DefaultCheckTimeout bounds all the DNS work of the checks for one
// message; past it the checks report temperror.
const DefaultCheckTimeout = 30 * time.Second

// maxDKIMSignatures bounds the signatures verified per message.
const maxDKIMSignatures = 5

// InboundPolicy turns on the checks of mail arriving on the MX.
type InboundPolicy struct {
	// Resolver does the lookups (default NewResolver("", 0)).
	Resolver Resolver
	// RejectDMARC refuses DMARC failures of p=reject domains with 550
	// 5.7.1; false delivers them to Junk.
	RejectDMARC bool
	// QuarantineDMARC delivers DMARC failures of p=quarantine domains to
	// Junk; false delivers them to the INBOX.
	QuarantineDMARC bool
	// Timeout bounds the checks of one message (default
	// DefaultCheckTimeout).
	Timeout time.Duration
}

// verdict is what the checks decided.
type verdict int

const (
	deliverInbox verdict = iota
	deliverJunk
	refuseDMARC
)

// checkResult is the outcome of the checks of one message.
type checkResult struct {
	header  string // the Authentication-Results field, CRLF-terminated
	verdict verdict
	dmarc   string // dmarc result and policy, for the log
}

// checkInbound runs SPF, DKIM and DMARC on a message from ip (which said
// helo and MAIL FROM:<from>).
func (srv *Server) checkInbound(ip net.IP, helo, from string, msg []byte) checkResult {
	pol := srv.opts.Inbound
	ctx, cancel := context.WithTimeout(srv.ctx, pol.Timeout)
	defer cancel()
	r := pol.Resolver
	lookupTXT := func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }

	// SPF (RFC 7208 §2.4: with the null sender, check postmaster@helo).
	sender := from
	if sender == "" {
		sender = "postmaster@" + helo
	}
	spfRes, _ := spf.CheckHostWithSender(ip, helo, sender, spf.WithResolver(r), spf.WithContext(ctx))
	spfDomain := domainOfAddr(sender)
	results := []authres.Result{&authres.SPFResult{Value: authres.ResultValue(spfRes), From: sender, Helo: helo}}

	// DKIM.
	var dkimPass []string
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookupTXT, MaxVerifications: maxDKIMSignatures})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		results = append(results, &authres.DKIMResult{Value: authres.ResultPermError, Reason: "unparsable message"})
	}
	if len(verifs) == 0 && err == nil {
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, v := range verifs {
		res := &authres.DKIMResult{Value: authres.ResultPass, Domain: v.Domain, Identifier: v.Identifier}
		switch {
		case v.Err == nil:
			dkimPass = append(dkimPass, strings.ToLower(v.Domain))
		case dkim.IsTempFail(v.Err):
			res.Value = authres.ResultTempError
		case dkim.IsPermFail(v.Err):
			res.Value = authres.ResultPermError
		default:
			res.Value = authres.ResultFail
		}
		if v.Err != nil {
			res.Reason = shortReason(v.Err)
		}
		results = append(results, res)
	}

	// DMARC.
	out := checkResult{verdict: deliverInbox}
	fromDom, ok := singleFromDomain(msg)
	if !ok {
		results = append(results, &authres.DMARCResult{Value: authres.ResultNone, Reason: "no single From: domain"})
		out.dmarc = "none"
	} else {
		dres, policy := evalDMARC(fromDom, spfRes == spf.Pass, spfDomain, dkimPass, lookupTXT)
		results = append(results, &authres.DMARCResult{Value: dres, From: fromDom})
		out.dmarc = string(dres) + " p=" + string(policy)
		if dres == authres.ResultFail {
			switch {
			case policy == dmarc.PolicyReject && pol.RejectDMARC:
				out.verdict = refuseDMARC
			case policy == dmarc.PolicyReject || policy == dmarc.PolicyQuarantine && pol.QuarantineDMARC:
				out.verdict = deliverJunk
			}
		}
	}
	out.header = formatAuthResults(srv.opts.Hostname, results)
	return out
}

// formatAuthResults renders the header field with one result per line, so
// that no client re-folds it (a mail client that folds a long line
// changes the bytes the user sees compared to the server's).
func formatAuthResults(host string, results []authres.Result) string {
	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	b.WriteString(host)
	for _, r := range results {
		one := authres.Format("x", []authres.Result{r})
		b.WriteString(";\r\n\t")
		b.WriteString(strings.TrimSpace(strings.TrimPrefix(one, "x; ")))
	}
	b.WriteString("\r\n")
	return b.String()
}

// evalDMARC finds the policy of the From: domain (or of its
// organizational domain, RFC 7489 §6.6.3) and checks that SPF or DKIM
// passed for an aligned domain (§3.1).
func evalDMARC(fromDom string, spfPass bool, spfDomain string, dkimPass []string,
	lookupTXT func(string) ([]string, error)) (authres.ResultValue, dmarc.Policy) {
	org := orgDomain(fromDom)
	opts := &dmarc.LookupOptions{LookupTXT: lookupTXT}
	rec, err := dmarc.LookupWithOptions(fromDom, opts)
	sub := false
	if errors.Is(err, dmarc.ErrNoPolicy) && org != fromDom {
		rec, err = dmarc.LookupWithOptions(org, opts)
		sub = true
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return authres.ResultNone, dmarc.PolicyNone
	case err != nil && dmarc.IsTempFail(err):
		return authres.ResultTempError, dmarc.PolicyNone
	case err != nil:
		return authres.ResultPermError, dmarc.PolicyNone
	}
	policy := rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		policy = rec.SubdomainPolicy
	}
	aligned := func(d string, mode dmarc.AlignmentMode) bool {
		d = strings.ToLower(d)
		if mode == dmarc.AlignmentStrict {
			return d == fromDom
		}
		return orgDomain(d) == org
	}
	if spfPass && aligned(spfDomain, rec.SPFAlignment) {
		return authres.ResultPass, policy
	}
	for _, d := range dkimPass {
		if aligned(d, rec.DKIMAlignment) {
			return authres.ResultPass, policy
		}
	}
	return authres.ResultFail, policy
}

// orgDomain is the organizational domain: the registrable domain by the
// public suffix list.
func orgDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return org
	}
	return d
}

// singleFromDomain is the domain of the From: header; DMARC needs exactly
// one (RFC 7489 §6.6.1).
func singleFromDomain(msg []byte) (string, bool) {
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		return "", false
	}
	if len(m.Header["From"]) != 1 {
		return "", false
	}
	list, err := mail.ParseAddressList(m.Header.Get("From"))
	if err != nil || len(list) != 1 {
		return "", false
	}
	d := domainOfAddr(list[0].Address)
	return d, d != ""
}

func domainOfAddr(a string) string {
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(a[at+1:], "."))
}

func shortReason(err error) string {
	s := err.Error()
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// stripOwnAuthResults removes Authentication-Results fields carrying our
// authserv-id from the header of msg (RFC 8601 §5: a receiver must not
// trust, and should remove, results claiming to be its own).
func stripOwnAuthResults(msg []byte, host string) []byte {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	} else {
		end += 2
	}
	header := msg[:end]
	if !bytes.Contains(bytes.ToLower(header), []byte("authentication-results")) {
		return msg
	}
	var out bytes.Buffer
	out.Grow(len(msg))
	drop := false
	for line := range bytes.Lines(header) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if !drop {
				out.Write(line)
			}
			continue
		}
		drop = false
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(name)), "Authentication-Results") {
			id, _, _ := strings.Cut(string(value), ";")
			if f := strings.Fields(id); len(f) > 0 && strings.EqualFold(f[0], host) {
				drop = true
				continue
			}
		}
		out.Write(line)
	}
	out.Write(msg[end:])
	return out.Bytes()
}
