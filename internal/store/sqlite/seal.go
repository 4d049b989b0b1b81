package sqlite

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/bedside/bedside/internal/keyfile"
)

// sealPrefix marks an encrypted field: "enc1:" + base64(nonce || AES-256-GCM ciphertext).
// A value without it is plaintext written before encryption existed (see encryptLegacy).
const sealPrefix = "enc1:"

// sealer encrypts fields with the application key. The field's table, column and row id
// are the additional data, so a ciphertext copied into another row or column fails to open.
type sealer struct{ aead cipher.AEAD }

// loadSealer reads the data key file (base64 of 32 bytes), making it on first use.
func loadSealer(path string) (*sealer, bool, error) {
	data, created, err := keyfile.ReadOrCreate(path, func() ([]byte, error) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		return []byte(base64.StdEncoding.EncodeToString(k) + "\n"), nil
	})
	if err != nil {
		return nil, false, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != 32 {
		return nil, false, fmt.Errorf("%s: not a data key (base64 of 32 bytes)", path)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, false, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, false, err
	}
	return &sealer{aead: aead}, created, nil
}

func aad(field, id string) []byte { return []byte(field + "\x00" + id) }

// seal encrypts v for field of row id. The empty string stays empty (nothing to hide, and
// "no name given" stays visible to queries).
func (s *sealer) seal(v, field, id string) string {
	if v == "" {
		return ""
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return sealPrefix + base64.RawStdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(v), aad(field, id)))
}

var errUnseal = errors.New("an encrypted field does not open with this data key (wrong data-key-file?)")

// open decrypts what seal made; plaintext from before encryption is returned as is.
func (s *sealer) open(v, field, id string) (string, error) {
	b64, ok := strings.CutPrefix(v, sealPrefix)
	if !ok {
		return v, nil
	}
	raw, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", fmt.Errorf("%s of %s: %w", field, id, errUnseal)
	}
	pt, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], aad(field, id))
	if err != nil {
		return "", fmt.Errorf("%s of %s: %w", field, id, errUnseal)
	}
	return string(pt), nil
}

// encryptLegacy encrypts patient fields stored in plaintext by a version without
// encryption. It runs at every open and finds nothing to do after the first.
func (s *Store) encryptLegacy(ctx context.Context) error {
	for _, c := range []struct{ table, column string }{{"visits", "patient_name"}, {"participants", "name"}} {
		type row struct{ id, v string }
		todo, err := queryAll(ctx, s.db, func(x scanner) (r row, err error) {
			err = x.Scan(&r.id, &r.v)
			return r, err
		}, `SELECT id, `+c.column+` FROM `+c.table+` WHERE `+c.column+` != '' AND `+c.column+` NOT LIKE 'enc1:%'`)
		if err != nil {
			return fmt.Errorf("encrypt %s.%s: %w", c.table, c.column, err)
		}
		for _, r := range todo {
			if _, err := s.db.ExecContext(ctx, `UPDATE `+c.table+` SET `+c.column+` = ? WHERE id = ?`, s.seal.seal(r.v, c.table+"."+c.column, r.id), r.id); err != nil {
				return fmt.Errorf("encrypt %s.%s: %w", c.table, c.column, err)
			}
		}
	}
	return nil
}
