package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// TokenBytes is the size of every secret Bedside hands out (session cookies, visit links,
// participant cookies): 256 random bits.
const TokenBytes = 32

// NewToken returns a new random secret, base64url without padding (43 characters).
func NewToken() string {
	b := make([]byte, TokenBytes)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// HashToken returns the SHA-256 of a token: what the database keeps instead of the token,
// so a copy of the database opens no visit and no session.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// WellFormedToken reports whether s could be a token NewToken made. Checking the shape first
// keeps junk out of database lookups.
func WellFormedToken(s string) bool {
	// The decoder skips CR and LF, so they are refused first; Strict refuses a last
	// character whose unused bits are set, which NewToken never makes.
	if len(s) != 43 || strings.ContainsAny(s, "\r\n") {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == TokenBytes
}
