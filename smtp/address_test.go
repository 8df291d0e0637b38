package smtp

import (
	"errors"
	"testing"
)

func TestSplitRecipient(t *testing.T) {
	for _, tc := range []struct {
		name, input         string
		wantLocal, wantHost string
		wantErr             error
	}{
		{"plain", "bob@example.test", "bob", "example.test", nil},
		{"upper-case domain", "Bob@EXAMPLE.Test", "Bob", "example.test", nil},
		{"trailing dot", "bob@example.test.", "bob", "example.test", nil},
		{"two trailing dots", "bob@example.test..", "", "", errSyntax},
		{"percent", "bob%other.test@example.test", "", "", errRouted},
		{"bang", "other.test!bob@example.test", "", "", errRouted},
		{"unquoted @", "bob@other.test@example.test", "", "", errRouted},
		{"literal", "bob@[192.0.2.1]", "", "", errLiteral},
		{"non-ASCII", "b\u00f6b@example.test", "", "", errNonASCII},
		{"control", "b\x01b@example.test", "", "", errSyntax},
		{"no @", "bob", "", "", errSyntax},
		{"empty local", "@example.test", "", "", errSyntax},
		{"empty domain", "bob@", "", "", errSyntax},
		{"bad domain", "bob@exa_mple.test", "", "", errSyntax},
		{"long local", string(make([]byte, 65)) + "@example.test", "", "", errSyntax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local, host, err := splitRecipient(tc.input)
			if !errors.Is(err, tc.wantErr) || local != tc.wantLocal || host != tc.wantHost {
				t.Fatalf("splitRecipient(%q) = %q, %q, %v; want %q, %q, %v", tc.input, local, host, err, tc.wantLocal, tc.wantHost, tc.wantErr)
			}
		})
	}
}

func TestRenderPath(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"", "<>"},
		{"bob@example.test", "<bob@example.test>"},
		{"bob.smith+x@example.test", "<bob.smith+x@example.test>"},
		{"john doe@example.test", `<"john doe"@example.test>`},
		{`a"b\c@example.test`, `<"a\"b\\c"@example.test>`},
		{".bob@example.test", `<".bob"@example.test>`},
	} {
		if got := renderPath(tc.input); got != tc.want {
			t.Errorf("renderPath(%q) = %s, want %s", tc.input, got, tc.want)
		}
	}
}

func TestCleanHelo(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"client.test", "client.test"},
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"a(b)c;d\"e\\f", "a_b_c_d_e_f"},
		{"caf\xc3\xa9", "caf__"},
		{"", "unknown"},
	} {
		if got := cleanHelo(tc.input); got != tc.want {
			t.Errorf("cleanHelo(%q) = %q, want %q", tc.input, got, tc.want)
		}
	}
}
