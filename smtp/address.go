package smtp

import (
	"errors"
	"strings"

	"mailbox/store"
)

// Envelope addresses arrive from go-smtp already taken apart: a source
// route (<@a,@b:user@c>) is dropped, as RFC 5321 §3.6.1 and Appendix C let
// a server do, and a quoted local part is unquoted ("user@other"@local.test
// arrives as user@other@local.test). What is left is checked here before
// the store sees it.
var (
	errNonASCII = errors.New("non-ASCII address")
	errRouted   = errors.New("sender-specified routing in the local part")
	errLiteral  = errors.New("address literal")
	errSyntax   = errors.New("bad address syntax")
)

const (
	maxLocalBytes   = 64  // RFC 5321 §4.5.3.1.1
	maxAddressBytes = 254 // RFC 5321 §4.5.3.1.3 path (256) minus the brackets
)

// splitRecipient checks an envelope recipient and returns its local part
// and domain (one trailing dot removed, as Postfix does). The refusals, and
// why no trick can make the MX relay:
//
//   - '@', '%' or '!' in the local part (a quoted "user@other"@local, the
//     percent hack user%other@local, a bang path other!user@local) is
//     sender-specified routing. Postfix rewrites the last two to
//     user@other and, with allow_untrusted_routing=no, refuses all three
//     as relaying (554 5.7.1); so do we (errRouted).
//   - An address literal (user@[127.0.0.1]) names no local domain
//     (errLiteral).
//   - Non-ASCII needs SMTPUTF8, which we do not offer (errNonASCII); a
//     Unicode lookalike of a local domain never matches it anyway.
//   - Anything else that is not local@domain is errSyntax.
//
// Whatever passes is looked up by store.Resolve, which only ever returns
// local accounts.
func splitRecipient(addr string) (local, domain string, err error) {
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c >= 0x80:
			return "", "", errNonASCII
		case c < ' ' || c == 0x7f:
			return "", "", errSyntax
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || len(addr) > maxAddressBytes {
		return "", "", errSyntax
	}
	local, domain = addr[:at], addr[at+1:]
	if strings.ContainsAny(local, "@%!") {
		return "", "", errRouted
	}
	if strings.HasPrefix(domain, "[") {
		return "", "", errLiteral
	}
	if len(local) > maxLocalBytes {
		return "", "", errSyntax
	}
	domain = strings.TrimSuffix(domain, ".")
	if strings.HasSuffix(domain, ".") {
		return "", "", errSyntax
	}
	if domain, err = store.NormalizeDomain(domain); err != nil {
		return "", "", errSyntax
	}
	return local, domain, nil
}

// checkSender checks a MAIL FROM address ("" is the null sender). It is
// only recorded (Return-Path, logs), so the check is about what can be
// written back safely.
func checkSender(addr string) error {
	if addr == "" {
		return nil
	}
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c >= 0x80:
			return errNonASCII
		case c < ' ' || c == 0x7f:
			return errSyntax
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 || len(addr) > maxAddressBytes {
		return errSyntax
	}
	return nil
}

// renderPath writes an address as an RFC 5321 path for a header: the
// local part quoted again if it is not a dot-atom (go-smtp unquoted it).
func renderPath(addr string) string {
	if addr == "" {
		return "<>"
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if !isDotAtom(local) {
		var b strings.Builder
		b.WriteByte('"')
		for i := 0; i < len(local); i++ {
			if c := local[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(local[i])
		}
		b.WriteByte('"')
		local = b.String()
	}
	return "<" + local + "@" + domain + ">"
}

// isDotAtom reports whether s is an RFC 5322 dot-atom-text.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
