package auth_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/bedside/bedside/internal/auth"
)

func TestNewToken(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, n)
	for range n {
		tok := auth.NewToken()
		if len(tok) != 43 {
			t.Fatalf("token %q has %d characters, want 43", tok, len(tok))
		}
		b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
		if err != nil {
			t.Fatalf("token %q is not base64url without padding: %v", tok, err)
		}
		if len(b) != 32 {
			t.Fatalf("token %q holds %d bytes, want 32 (256 bits)", tok, len(b))
		}
		if !auth.WellFormedToken(tok) {
			t.Fatalf("WellFormedToken(%q) = false for a token NewToken made", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q made twice", tok)
		}
		seen[tok] = true
	}
}

func TestWellFormedToken(t *testing.T) {
	good := base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	for _, tc := range []struct {
		name string
		s    string
		want bool
	}{
		{"token", good, true},
		{"all dashes and underscores", strings.Repeat("-_", 21) + "A", true},
		{"empty", "", false},
		{"42 characters", good[:42], false},
		{"44 characters", good + "A", false},
		{"padded", good[:42] + "=", false},
		{"standard alphabet plus", "+" + good[1:], false},
		{"standard alphabet slash", "/" + good[1:], false},
		{"space", " " + good[1:], false},
		{"dot (cookie separator)", "." + good[1:], false},
		{"non-ASCII", "é" + good[2:], false},
		// base64 decoding skips CR and LF: a 43-character string with a newline in it
		// decodes, but NewToken never makes one.
		{"newline inside", good[:20] + "\n" + good[21:], false},
		{"carriage return inside", good[:20] + "\r" + good[21:], false},
		// The last character of 32 bytes carries 2 bits; the other 4 are zero.
		{"non-canonical last character", good[:42] + "B", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := auth.WellFormedToken(tc.s); got != tc.want {
				t.Errorf("WellFormedToken(%q) = %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

func TestHashToken(t *testing.T) {
	// The SHA-256 test vector of FIPS 180-2.
	if got := hex.EncodeToString(auth.HashToken("abc")); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashToken(abc) = %s, not SHA-256", got)
	}
	tok := auth.NewToken()
	want := sha256.Sum256([]byte(tok))
	if got := auth.HashToken(tok); string(got) != string(want[:]) {
		t.Errorf("HashToken(token) = %x, want %x", got, want)
	}
	if string(auth.HashToken(tok)) == string(auth.HashToken(auth.NewToken())) {
		t.Error("two tokens hash alike")
	}
}

func FuzzWellFormedToken(f *testing.F) {
	f.Add(auth.NewToken())
	f.Add("")
	f.Add(strings.Repeat("A", 42) + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		if !auth.WellFormedToken(s) {
			return
		}
		// What passes is exactly what NewToken can make: 43 URL-safe characters that
		// encode 32 bytes canonically.
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil || len(b) != 32 || base64.RawURLEncoding.EncodeToString(b) != s {
			t.Fatalf("WellFormedToken(%q) = true, but it is no token (%d bytes, %v)", s, len(b), err)
		}
	})
}
