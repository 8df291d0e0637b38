package smtp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/mail"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"

	"mailbox/store"
)

// DefaultDKIMSelector is the base of the selectors of the keys the runner
// signs with: a domain gets "<base>-ed25519" and "<base>-rsa" and every
// message is signed with both (RFC 8463 §4 recommends the pair, since
// not every verifier knows Ed25519 yet). Changing the base rotates the
// keys: new ones are made, the old ones stay in the store and in
// `mailbox domain dns` until deleted.
const DefaultDKIMSelector = "mailbox"

// dkimHeaderKeys are the fields signed (RFC 6376 §5.4.1). From is listed
// twice so that a second From: added on the way breaks the signature
// (oversigning).
var dkimHeaderKeys = []string{"From", "From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition"}

// DKIMSelectors returns the two selectors used for base.
func DKIMSelectors(base string) (ed, rsa string) {
	if base == "" {
		base = DefaultDKIMSelector
	}
	return base + "-ed25519", base + "-rsa"
}

// EnsureDKIMKeys returns the domain's Ed25519 and RSA keys for selector
// base, generating them if needed.
func EnsureDKIMKeys(ctx context.Context, st *store.Store, domain, base string) ([]store.DKIMKey, error) {
	ed, rs := DKIMSelectors(base)
	k1, err := st.EnsureDKIMKey(ctx, domain, ed, store.DKIMEd25519)
	if err != nil {
		return nil, err
	}
	k2, err := st.EnsureDKIMKey(ctx, domain, rs, store.DKIMRSA)
	if err != nil {
		return nil, err
	}
	return []store.DKIMKey{k1, k2}, nil
}

// DKIMRecord is the TXT record text publishing k's public key (RFC 6376
// §3.6.1), e.g. "v=DKIM1; k=ed25519; p=...".
func DKIMRecord(k store.DKIMKey) (string, error) {
	switch pub := k.Signer.Public().(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("dkim key %s: unknown key type", k.Selector)
}

// dkimSignatureCache is how many messages' signatures are remembered. A
// message for several domains is one job per domain; they are sent close
// together, and an RSA-2048 signature costs over a millisecond of CPU.
const dkimSignatureCache = 256

// dkimKeys finds and caches the signing keys of local domains (parsed
// once), and the signatures of recently signed messages, so that a
// message going to several domains, or tried again soon, is signed once.
type dkimKeys struct {
	st   *store.Store
	base string

	mu    sync.Mutex
	cache map[string][]store.DKIMKey // domain → keys, nil: not local
	sigs  map[[sha256.Size]byte][]byte
	order [][sha256.Size]byte // sigs' keys, oldest first
}

func newDKIMKeys(st *store.Store, base string) *dkimKeys {
	return &dkimKeys{st: st, base: base, cache: map[string][]store.DKIMKey{}, sigs: map[[sha256.Size]byte][]byte{}}
}

func (d *dkimKeys) keys(ctx context.Context, domain string) ([]store.DKIMKey, error) {
	d.mu.Lock()
	keys, ok := d.cache[domain]
	d.mu.Unlock()
	if ok {
		return keys, nil
	}
	local, err := d.st.IsLocalDomain(ctx, domain)
	if err != nil {
		return nil, err
	}
	if local {
		if keys, err = EnsureDKIMKeys(ctx, d.st, domain, d.base); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	d.cache[domain] = keys
	d.mu.Unlock()
	return keys, nil
}

// sign returns the DKIM-Signature fields to prepend to data, one per key
// of the From: domain, or nothing if that domain is not ours (a bounce
// from the null sender is signed by our own From: domain if local). The
// same bytes signed a moment ago get the same fields again.
func (d *dkimKeys) sign(ctx context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	d.mu.Lock()
	sig, ok := d.sigs[sum]
	d.mu.Unlock()
	if ok {
		return sig, nil
	}
	sig, err := d.signNew(ctx, data)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if _, ok := d.sigs[sum]; !ok {
		if len(d.order) == dkimSignatureCache {
			delete(d.sigs, d.order[0])
			d.order = d.order[1:]
		}
		d.sigs[sum] = sig
		d.order = append(d.order, sum)
	}
	d.mu.Unlock()
	return sig, nil
}

func (d *dkimKeys) signNew(ctx context.Context, data []byte) ([]byte, error) {
	domain := fromDomain(data)
	if domain == "" {
		return nil, nil
	}
	keys, err := d.keys(ctx, domain)
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	var out bytes.Buffer
	for _, k := range keys {
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 domain,
			Selector:               k.Selector,
			Signer:                 k.Signer,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             dkimHeaderKeys,
		})
		if err != nil {
			return nil, err
		}
		if _, err := s.Write(data); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.Close(); err != nil {
			return nil, err
		}
		out.WriteString(s.Signature())
	}
	return out.Bytes(), nil
}

// fromDomain is the lower-cased domain of the first From: address, ""
// if there is none.
func fromDomain(data []byte) string {
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return ""
	}
	list, err := mail.ParseAddressList(m.Header.Get("From"))
	if err != nil || len(list) == 0 {
		return ""
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(list[0].Address[at+1:])
}
