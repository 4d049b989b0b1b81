package turn

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // the STUN long-term credential key is MD5 by RFC 8489
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is the TURN REST password (draft-uberti-behave-turn-rest)
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Credential errors: why a TURN username was refused (logged and audited by name).
var (
	ErrMalformed = errors.New("malformed username")
	ErrExpired   = errors.New("credential expired")
	ErrOverTTL   = errors.New("credential lifetime over the server's cap")
	ErrRevoked   = errors.New("participant's relay access revoked")
)

// Credential is a TURN REST credential: username "expiry:user", password
// base64(HMAC-SHA1(secret, username)).
type Credential struct {
	Username string
	Password string
	Expires  time.Time
}

// secrets holds the shared secrets: the first issues credentials; all of them (at most
// two: current and previous) are accepted, so the secret can rotate without dropping calls.
type secrets [][]byte

// issue makes a credential for user valid until now+ttl, signed with the current secret.
func (s secrets) issue(user string, now time.Time, ttl time.Duration) Credential {
	exp := now.Add(ttl).Truncate(time.Second)
	username := strconv.FormatInt(exp.Unix(), 10) + ":" + user
	return Credential{Username: username, Password: restPassword(s[0], username), Expires: exp}
}

// restPassword is base64(HMAC-SHA1(secret, username)).
func restPassword(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// longTermKey is the STUN long-term credential key MD5(username:realm:password).
func longTermKey(username, realm, password string) []byte {
	h := md5.Sum([]byte(username + ":" + realm + ":" + password)) //nolint:gosec
	return h[:]
}

// parseUsername splits "expiry:user". user is 1 to 128 characters without control
// characters or colons.
func parseUsername(username string) (expires time.Time, user string, err error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok || user == "" || len(user) > 128 || len(ts) == 0 || len(ts) > 12 {
		return time.Time{}, "", ErrMalformed
	}
	for _, r := range user {
		if r < 0x21 || r == 0x7f || r == ':' {
			return time.Time{}, "", ErrMalformed
		}
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, "", ErrMalformed
	}
	return time.Unix(n, 0), user, nil
}
