package smtp

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"mailbox/store/storetest"
)

// TestDKIMSignVerify: the runner's signatures (Ed25519 and RSA) verify
// against the records DKIMRecord publishes, and a non-local From: domain
// is not signed.
func TestDKIMSignVerify(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t, storetest.Fixture{Users: map[string]string{aliceA: password}})
	keys, err := EnsureDKIMKeys(ctx, st, "a.test", "")
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]string{}
	for _, k := range keys {
		rec, err := DKIMRecord(k)
		if err != nil {
			t.Fatal(err)
		}
		records[k.Selector+"._domainkey.a.test"] = rec
	}
	d := newDKIMKeys(st, DefaultDKIMSelector)
	msg := []byte(storetest.CRLF(storetest.Message("Alice <alice@a.test>", "bob@b.test", "signed", "body\n.dot\n")))
	sig, err := d.sign(ctx, msg)
	if err != nil || bytes.Count(sig, []byte("DKIM-Signature:")) != 2 {
		t.Fatalf("sign: %q %v", sig, err)
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(append(sig, msg...)), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return []string{records[name]}, nil }})
	if err != nil || len(verifs) != 2 {
		t.Fatalf("verify: %v %v", verifs, err)
	}
	for _, v := range verifs {
		if v.Err != nil || v.Domain != "a.test" {
			t.Errorf("signature of %s: %v", v.Domain, v.Err)
		}
	}
	other := []byte(strings.Replace(string(msg), "alice@a.test", "alice@elsewhere.test", 1))
	if sig, err := d.sign(ctx, other); err != nil || len(sig) != 0 {
		t.Fatalf("signed a foreign From: %q %v", sig, err)
	}
	// The same message again (its job for another domain, or a retry)
	// is not signed again; another message is.
	if again, err := d.sign(ctx, msg); err != nil || !bytes.Equal(again, sig) {
		t.Fatalf("same bytes signed anew: %v", err)
	}
	msg2 := append([]byte(nil), msg...)
	msg2[len(msg2)-3] = 'x'
	if sig2, err := d.sign(ctx, msg2); err != nil || bytes.Equal(sig2, sig) || bytes.Count(sig2, []byte("DKIM-Signature:")) != 2 {
		t.Fatalf("another message got %q, %v", sig2, err)
	}
	for i := range dkimSignatureCache + 10 {
		d.sign(ctx, append(append([]byte(nil), msg...), fmt.Sprintf("%d\r\n", i)...))
	}
	if len(d.sigs) != dkimSignatureCache || len(d.order) != dkimSignatureCache {
		t.Fatalf("cache holds %d (%d in order), want %d", len(d.sigs), len(d.order), dkimSignatureCache)
	}
}

// BenchmarkDKIMSign signs a 4 KiB message with both keys.
func BenchmarkDKIMSign(b *testing.B) {
	ctx := context.Background()
	st := storetest.New(b, storetest.Fixture{Users: map[string]string{aliceA: password}})
	d := newDKIMKeys(st, DefaultDKIMSelector)
	msg := []byte(storetest.CRLF(storetest.Message("alice@a.test", "bob@b.test", "signed", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 64))))
	if _, err := d.sign(ctx, msg); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := d.signNew(ctx, msg); err != nil { // not the cache
			b.Fatal(err)
		}
	}
}
