package store

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

var idEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

// NewID returns a new random record id with the given prefix ("usr", "vst", "prt"):
// 80 random bits, so ids are unguessable and never collide in practice. Ids are not secrets;
// nothing is authorised by knowing one.
func NewID(prefix string) string {
	var b [10]byte
	rand.Read(b[:])
	return prefix + "_" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
