package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	if len(s) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}
