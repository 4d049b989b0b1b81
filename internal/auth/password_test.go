package auth_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/bedside/bedside/internal/auth"
)

func mustHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := auth.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPasswordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, pw, other string
	}{
		{"ascii", "correct horse battery", "correct horse batterY"},
		{"unicode", "pässwörd-ñ-日本語-🙂", "passwörd-ñ-日本語-🙂"},
		{"trailing space matters", "long enough pw", "long enough pw "},
		{"prefix is not enough", "long enough pw", "long enough"},
		{"empty", "", " "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustHash(t, tc.pw)
			if strings.Contains(h, tc.pw) && tc.pw != "" {
				t.Fatalf("the hash %q contains the password", h)
			}
			ok, err := auth.VerifyPassword(h, tc.pw)
			if err != nil || !ok {
				t.Errorf("VerifyPassword(right password) = %v, %v; want true", ok, err)
			}
			ok, err = auth.VerifyPassword(h, tc.other)
			if err != nil || ok {
				t.Errorf("VerifyPassword(%q) = %v, %v; want false, nil", tc.other, ok, err)
			}
		})
	}
}

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$`)

func TestHashFormatAndSalt(t *testing.T) {
	a, b := mustHash(t, "same password"), mustHash(t, "same password")
	for _, h := range []string{a, b} {
		m := phcRE.FindStringSubmatch(h)
		if m == nil {
			t.Fatalf("hash %q is not $argon2id$v=19$m=19456,t=2,p=1$<16-byte salt>$<32-byte key>", h)
		}
	}
	if a == b {
		t.Fatal("two hashes of the same password are equal: no salt")
	}
	if phcRE.FindStringSubmatch(a)[1] == phcRE.FindStringSubmatch(b)[1] {
		t.Error("two hashes share a salt")
	}
	for _, h := range []string{a, b} {
		if ok, err := auth.VerifyPassword(h, "same password"); !ok || err != nil {
			t.Errorf("VerifyPassword = %v, %v", ok, err)
		}
	}
}

// TestVerifyReadsParameters: the cost is stored in each hash, so it can be raised later
// without breaking existing passwords.
func TestVerifyReadsParameters(t *testing.T) {
	salt := []byte("0123456789abcdef")
	for _, p := range []struct{ m, t uint32 }{{8192, 1}, {19456, 2}, {32768, 3}} {
		key := argon2.IDKey([]byte("old password"), salt, p.t, p.m, 1, 32)
		h := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=1$%s$%s", p.m, p.t,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
		if ok, err := auth.VerifyPassword(h, "old password"); !ok || err != nil {
			t.Errorf("m=%d,t=%d: VerifyPassword = %v, %v; want true", p.m, p.t, ok, err)
		}
	}
}

func TestVerifyMalformedHash(t *testing.T) {
	good := mustHash(t, "right password")
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, key
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	b64 := base64.RawStdEncoding.EncodeToString
	for _, tc := range []struct{ name, hash string }{
		{"empty", ""},
		{"plain text", "right password"},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", with(1, "argon2i")},
		{"old version", with(2, "v=16")},
		{"version missing", with(2, "")},
		{"params missing", with(3, "")},
		{"params garbled", with(3, "m=a,t=2,p=1")},
		{"m zero", with(3, "m=0,t=2,p=1")},
		{"m too large", with(3, "m=4194304,t=2,p=1")},
		{"t zero", with(3, "m=19456,t=0,p=1")},
		{"t too large", with(3, "m=19456,t=65,p=1")},
		{"p zero", with(3, "m=19456,t=2,p=0")},
		{"p overflows", with(3, "m=19456,t=2,p=256")},
		{"negative m", with(3, "m=-1,t=2,p=1")},
		{"salt not base64", with(4, "!!!!")},
		{"key not base64", with(5, "!!!!")},
		{"key padded", with(5, parts[5]+"=")},
		{"key too short", with(5, b64(make([]byte, 15)))},
		{"key too long", with(5, b64(make([]byte, 65)))},
		{"key missing", with(5, "")},
		{"too few parts", strings.Join(parts[:5], "$")},
		{"too many parts", good + "$x"},
		{"no leading dollar", strings.TrimPrefix(good, "$")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := auth.VerifyPassword(tc.hash, "right password")
			if err == nil || ok {
				t.Errorf("VerifyPassword(%q) = %v, %v; want false and an error", tc.hash, ok, err)
			}
		})
	}
}

// TestVerifyTamperedHash: a hash whose salt, key or cost was changed, but which is still
// well formed, cannot be told from a wrong password: it verifies nothing.
func TestVerifyTamperedHash(t *testing.T) {
	good := mustHash(t, "right password")
	parts := strings.Split(good, "$")
	flip := func(s string) string { // change the first character to another base64 character
		c := byte('A')
		if s[0] == 'A' {
			c = 'B'
		}
		return string(c) + s[1:]
	}
	for _, tc := range []struct{ name, hash string }{
		{"key changed", strings.Join(append(parts[:5:5], flip(parts[5])), "$")},
		{"salt changed", strings.Join(append(parts[:4:4], flip(parts[4]), parts[5]), "$")},
		{"cost changed", strings.Replace(good, "t=2", "t=1", 1)},
		{"key shortened", strings.Join(append(parts[:5:5], parts[5][:22]), "$")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := auth.VerifyPassword(tc.hash, "right password")
			if ok {
				t.Errorf("a tampered hash accepted the password (err %v)", err)
			}
		})
	}
}

func TestCheckPasswordPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		pw   string
		ok   bool
	}{
		{"empty", "", false},
		{"9 characters", strings.Repeat("a", 9), false},
		{"10 characters", strings.Repeat("a", 10), true},
		{"256 characters", strings.Repeat("a", 256), true},
		{"257 characters", strings.Repeat("a", 257), false},
		{"9 two-byte characters (18 bytes)", strings.Repeat("é", 9), false},
		{"10 two-byte characters", strings.Repeat("é", 10), true},
		{"256 four-byte characters (1024 bytes)", strings.Repeat("🙂", 256), true},
		{"257 four-byte characters", strings.Repeat("🙂", 257), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := auth.CheckPasswordPolicy(tc.pw)
			if tc.ok && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, auth.ErrWeakPassword) {
				t.Errorf("err = %v, want ErrWeakPassword", err)
			}
		})
	}
	if !strings.Contains(auth.ErrWeakPassword.Error(), "10 to 256") {
		t.Errorf("the message %q does not tell the user the bounds", auth.ErrWeakPassword)
	}
}

// FuzzVerifyPassword: no stored hash, however damaged, panics the sign-in; only a hash of
// the password verifies it.
func FuzzVerifyPassword(f *testing.F) {
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$K7tzUI7eNoIbZLbz3wVr7IXHyxbbmQEt4KLXXKl1vJY", "pw")
	f.Add("$argon2id$v=19$m=8,t=1,p=255$$AAAAAAAAAAAAAAAAAAAAAA", "")
	f.Add("$argon2id$v=19$m=1,t=1,p=1$AA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		// Keep each run cheap: the cost parameters in a hash are bounded (2 GiB, 64
		// passes), which is too slow for fuzzing, not wrong.
		if p := strings.Split(hash, "$"); len(p) == 6 {
			var m, tc uint64
			var par int
			if _, err := fmt.Sscanf(p[3], "m=%d,t=%d,p=%d", &m, &tc, &par); err == nil && m*tc > 64*1024 {
				t.Skip("too costly")
			}
		}
		ok, err := auth.VerifyPassword(hash, pw)
		if ok && err != nil {
			t.Fatalf("ok with an error: %v", err)
		}
	})
}
