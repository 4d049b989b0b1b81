package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"net"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/bedside/bedside/internal/store"
)

// Errors of second factors.
var (
	// ErrBadCode: a wrong, expired or already used code, or a passkey that did not verify.
	ErrBadCode = errors.New("wrong or used code")
	// ErrNoFactor: the user has no second factor of that kind (or no enrollment pending).
	ErrNoFactor = errors.New("no such second factor")
	// ErrEnrolled: a TOTP app is set up already; remove it first.
	ErrEnrolled = errors.New("already set up")
	// ErrNoPasskeys: passkeys need the server to be reached by a domain name (WebAuthn does
	// not work on an IP address).
	ErrNoPasskeys = errors.New("passkeys need a domain name")
	// ErrLastFactor: removing this would leave an account that must have a second factor
	// without one.
	ErrLastFactor = errors.New("the last second factor")
)

// MFAStore is what second factors need of the database.
type MFAStore interface {
	PutTOTP(ctx context.Context, t store.TOTP) error
	TOTPByUser(ctx context.Context, userID string) (store.TOTP, error)
	ConfirmTOTP(ctx context.Context, userID string, at time.Time, step int64) error
	UseTOTPStep(ctx context.Context, userID string, step int64) error
	DeleteTOTP(ctx context.Context, userID string) error
	SetRecoveryCodes(ctx context.Context, userID string, hashes [][]byte) error
	UseRecoveryCode(ctx context.Context, userID string, hash []byte, at time.Time) error
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
	CreatePasskey(ctx context.Context, p store.Passkey) error
	UserPasskeys(ctx context.Context, userID string) ([]store.Passkey, error)
	UpdatePasskey(ctx context.Context, id string, credential []byte, usedAt time.Time) error
	DeletePasskey(ctx context.Context, userID, id string) error
	SetSessionChallenge(ctx context.Context, idHash []byte, challenge []byte) error
}

// MFAConfig configures second factors.
type MFAConfig struct {
	Issuer    string   // shown in authenticator apps ("Bedside (clinic.example)")
	RPID      string   // WebAuthn relying party id: the public host name
	RPOrigins []string // origins passkeys may be used from
	Now       func() time.Time
}

// MFA is second factors: TOTP apps (RFC 6238 through pquerna/otp), single-use recovery
// codes, and passkeys (WebAuthn through go-webauthn).
type MFA struct {
	st     MFAStore
	issuer string
	now    func() time.Time
	wa     *webauthn.WebAuthn
}

// TOTP parameters: what every authenticator app supports.
const (
	totpPeriod = 30
	totpSkew   = 1 // steps either side accepted, for clocks that differ by up to 30 s
)

// RecoveryCodeCount is how many recovery codes a user gets at a time.
const RecoveryCodeCount = 10

// NewMFA returns an MFA.
func NewMFA(st MFAStore, cfg MFAConfig) (*MFA, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &MFA{st: st, issuer: cfg.Issuer, now: cfg.Now}
	if net.ParseIP(cfg.RPID) != nil {
		return m, nil // passkeys off: ErrNoPasskeys
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: cfg.RPID, RPDisplayName: "Bedside", RPOrigins: cfg.RPOrigins,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementPreferred,
			UserVerification: protocol.VerificationPreferred,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("webauthn: %w", err)
	}
	m.wa = wa
	return m, nil
}

// Passkeys reports whether passkeys can be used here.
func (m *MFA) Passkeys() bool { return m.wa != nil }

// TOTPSetup is a TOTP enrollment in progress.
type TOTPSetup struct {
	Secret string // base32, for typing into the app
	URL    string // otpauth://totp/..., what the QR code holds
}

// BeginTOTP makes a new secret for u (replacing one not yet confirmed). A confirmed one
// stays until removed: ErrEnrolled.
func (m *MFA) BeginTOTP(ctx context.Context, u store.User) (TOTPSetup, error) {
	if t, err := m.st.TOTPByUser(ctx, u.ID); err == nil && t.ConfirmedAt != nil {
		return TOTPSetup{}, ErrEnrolled
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: m.issuer, AccountName: u.Email, Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1, Rand: rand.Reader})
	if err != nil {
		return TOTPSetup{}, fmt.Errorf("totp: %w", err)
	}
	if err := m.st.PutTOTP(ctx, store.TOTP{UserID: u.ID, Secret: key.Secret(), CreatedAt: m.now().UTC()}); err != nil {
		return TOTPSetup{}, fmt.Errorf("totp: %w", err)
	}
	return TOTPSetup{Secret: key.Secret(), URL: key.URL()}, nil
}

// TOTPQR returns the QR code (PNG) of u's pending enrollment.
func (m *MFA) TOTPQR(ctx context.Context, u store.User) ([]byte, error) {
	t, err := m.st.TOTPByUser(ctx, u.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && t.ConfirmedAt != nil) {
		return nil, ErrNoFactor // the QR code is shown only while setting up
	}
	if err != nil {
		return nil, err
	}
	key, err := otp.NewKeyFromURL(totpURL(m.issuer, u.Email, t.Secret))
	if err != nil {
		return nil, err
	}
	img, err := key.Image(240, 240)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func totpURL(issuer, account, secret string) string {
	k, _ := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: account, Secret: []byte("x")})
	// Generate makes a URL of the right form; put the stored secret into it.
	u := k.URL()
	i := strings.Index(u, "secret=")
	j := strings.IndexByte(u[i:], '&')
	if j < 0 {
		return u[:i] + "secret=" + secret
	}
	return u[:i] + "secret=" + secret + u[i+j:]
}

// matchStep returns the time step whose code is code, within the skew.
func matchStep(secret, code string, now time.Time) (int64, bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != 6 {
		return 0, false
	}
	step := now.Unix() / totpPeriod
	for s := step - totpSkew; s <= step+totpSkew; s++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(s*totpPeriod, 0), totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return s, true
		}
	}
	return 0, false
}

// ConfirmTOTP checks the first code of a pending enrollment and turns it on. When u has no
// recovery codes left, it returns a new set (shown once).
func (m *MFA) ConfirmTOTP(ctx context.Context, u store.User, code string) ([]string, error) {
	t, err := m.st.TOTPByUser(ctx, u.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoFactor
	}
	if err != nil {
		return nil, err
	}
	if t.ConfirmedAt != nil {
		return nil, ErrEnrolled
	}
	step, ok := matchStep(t.Secret, code, m.now())
	if !ok {
		return nil, ErrBadCode
	}
	if err := m.st.ConfirmTOTP(ctx, u.ID, m.now().UTC(), step); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, ErrBadCode
		}
		return nil, err
	}
	return m.recoveryIfNone(ctx, u)
}

func (m *MFA) recoveryIfNone(ctx context.Context, u store.User) ([]string, error) {
	n, err := m.st.RecoveryCodesLeft(ctx, u.ID)
	if err != nil || n > 0 {
		return nil, err
	}
	return m.NewRecoveryCodes(ctx, u)
}

// VerifyTOTP checks a sign-in code: right, within 30 s either side, and of a later time
// step than any code used before (a code is good once).
func (m *MFA) VerifyTOTP(ctx context.Context, u store.User, code string) error {
	t, err := m.st.TOTPByUser(ctx, u.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && t.ConfirmedAt == nil) {
		return ErrBadCode
	}
	if err != nil {
		return err
	}
	step, ok := matchStep(t.Secret, code, m.now())
	if !ok {
		return ErrBadCode
	}
	if err := m.st.UseTOTPStep(ctx, u.ID, step); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return ErrBadCode // replayed
		}
		return err
	}
	return nil
}

// RemoveTOTP removes u's TOTP app.
func (m *MFA) RemoveTOTP(ctx context.Context, u store.User) error {
	err := m.st.DeleteTOTP(ctx, u.ID)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNoFactor
	}
	return err
}

// recoveryAlphabet has no look-alike characters (no 0/o, 1/l/i).
const recoveryAlphabet = "abcdefghjkmnpqrstuvwxyz23456789"

// NewRecoveryCodes replaces u's recovery codes with new ones, returned once: 10 codes of
// 10 characters (about 49 bits each), written xxxxx-xxxxx.
func (m *MFA) NewRecoveryCodes(ctx context.Context, u store.User) ([]string, error) {
	codes := make([]string, RecoveryCodeCount)
	hashes := make([][]byte, RecoveryCodeCount)
	for i := range codes {
		var b [10]byte
		rand.Read(b[:])
		var sb strings.Builder
		for j, x := range b {
			if j == 5 {
				sb.WriteByte('-')
			}
			sb.WriteByte(recoveryAlphabet[int(x)%len(recoveryAlphabet)])
		}
		codes[i] = sb.String()
		hashes[i] = hashRecoveryCode(codes[i])
	}
	if err := m.st.SetRecoveryCodes(ctx, u.ID, hashes); err != nil {
		return nil, fmt.Errorf("recovery codes: %w", err)
	}
	return codes, nil
}

func hashRecoveryCode(code string) []byte {
	c := strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(code)))
	h := sha256.Sum256([]byte("bedside-recovery:" + c))
	return h[:]
}

// UseRecoveryCode signs in with a recovery code; each works once.
func (m *MFA) UseRecoveryCode(ctx context.Context, u store.User, code string) error {
	if len(code) > 64 {
		return ErrBadCode
	}
	err := m.st.UseRecoveryCode(ctx, u.ID, hashRecoveryCode(code), m.now().UTC())
	if errors.Is(err, store.ErrNotFound) {
		return ErrBadCode
	}
	return err
}

// Status is what a user has set up.
type Status struct {
	TOTP          bool // confirmed
	TOTPPending   bool
	Passkeys      []store.Passkey
	RecoveryCodes int // unused
}

// Any reports whether there is a usable second factor.
func (st Status) Any() bool { return st.TOTP || len(st.Passkeys) > 0 }

// StatusOf returns what u has set up.
func (m *MFA) StatusOf(ctx context.Context, u store.User) (Status, error) {
	var st Status
	t, err := m.st.TOTPByUser(ctx, u.ID)
	switch {
	case err == nil:
		st.TOTP, st.TOTPPending = t.ConfirmedAt != nil, t.ConfirmedAt == nil
	case !errors.Is(err, store.ErrNotFound):
		return st, err
	}
	if st.Passkeys, err = m.st.UserPasskeys(ctx, u.ID); err != nil {
		return st, err
	}
	st.RecoveryCodes, err = m.st.RecoveryCodesLeft(ctx, u.ID)
	return st, err
}

// Passkeys (WebAuthn)

type waUser struct {
	u     store.User
	creds []webauthn.Credential
}

func (w waUser) WebAuthnID() []byte                         { return []byte(w.u.ID) }
func (w waUser) WebAuthnName() string                       { return w.u.Email }
func (w waUser) WebAuthnDisplayName() string                { return w.u.Name }
func (w waUser) WebAuthnCredentials() []webauthn.Credential { return w.creds }

func (m *MFA) waUser(ctx context.Context, u store.User) (waUser, []store.Passkey, error) {
	pks, err := m.st.UserPasskeys(ctx, u.ID)
	if err != nil {
		return waUser{}, nil, err
	}
	w := waUser{u: u}
	for _, pk := range pks {
		var c webauthn.Credential
		if err := json.Unmarshal(pk.Credential, &c); err != nil {
			return waUser{}, nil, fmt.Errorf("passkey %s: %w", pk.ID, err)
		}
		w.creds = append(w.creds, c)
	}
	return w, pks, nil
}

// BeginPasskeyRegistration starts adding a passkey: the options for
// navigator.credentials.create, with the ceremony kept on the session.
func (m *MFA) BeginPasskeyRegistration(ctx context.Context, u store.User, sessionHash []byte) (*protocol.CredentialCreation, error) {
	if m.wa == nil {
		return nil, ErrNoPasskeys
	}
	w, _, err := m.waUser(ctx, u)
	if err != nil {
		return nil, err
	}
	var exclude []protocol.CredentialDescriptor
	for _, c := range w.creds {
		exclude = append(exclude, c.Descriptor())
	}
	creation, sd, err := m.wa.BeginRegistration(w, webauthn.WithExclusions(exclude))
	if err != nil {
		return nil, fmt.Errorf("passkey registration: %w", err)
	}
	return creation, m.keepCeremony(ctx, sessionHash, "register", sd)
}

type ceremony struct {
	Kind string               `json:"kind"`
	Data webauthn.SessionData `json:"data"`
}

func (m *MFA) keepCeremony(ctx context.Context, sessionHash []byte, kind string, sd *webauthn.SessionData) error {
	b, err := json.Marshal(ceremony{Kind: kind, Data: *sd})
	if err != nil {
		return err
	}
	return m.st.SetSessionChallenge(ctx, sessionHash, b)
}

func (m *MFA) ceremony(ctx context.Context, sessionHash, challenge []byte, kind string) (webauthn.SessionData, error) {
	var c ceremony
	if len(challenge) == 0 || json.Unmarshal(challenge, &c) != nil || c.Kind != kind {
		return webauthn.SessionData{}, ErrBadCode
	}
	// A ceremony is good for one answer.
	if err := m.st.SetSessionChallenge(ctx, sessionHash, nil); err != nil {
		return webauthn.SessionData{}, err
	}
	return c.Data, nil
}

// FinishPasskeyRegistration checks the authenticator's answer and stores the passkey.
func (m *MFA) FinishPasskeyRegistration(ctx context.Context, u store.User, sessionHash, challenge, body []byte, name string) (store.Passkey, error) {
	if m.wa == nil {
		return store.Passkey{}, ErrNoPasskeys
	}
	sd, err := m.ceremony(ctx, sessionHash, challenge, "register")
	if err != nil {
		return store.Passkey{}, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return store.Passkey{}, ErrBadCode
	}
	w, _, err := m.waUser(ctx, u)
	if err != nil {
		return store.Passkey{}, err
	}
	cred, err := m.wa.CreateCredential(w, sd, parsed)
	if err != nil {
		return store.Passkey{}, ErrBadCode
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return store.Passkey{}, err
	}
	if name == "" {
		name = "Passkey"
	}
	pk := store.Passkey{ID: store.NewID("pky"), UserID: u.ID, CredentialID: cred.ID, Credential: raw, Name: name, CreatedAt: m.now().UTC()}
	if err := m.st.CreatePasskey(ctx, pk); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return store.Passkey{}, ErrEnrolled
		}
		return store.Passkey{}, err
	}
	return pk, nil
}

// BeginPasskeyLogin starts a passkey sign-in for u: the options for
// navigator.credentials.get. ErrNoFactor when u has no passkey.
func (m *MFA) BeginPasskeyLogin(ctx context.Context, u store.User, sessionHash []byte) (*protocol.CredentialAssertion, error) {
	if m.wa == nil {
		return nil, ErrNoPasskeys
	}
	w, _, err := m.waUser(ctx, u)
	if err != nil {
		return nil, err
	}
	if len(w.creds) == 0 {
		return nil, ErrNoFactor
	}
	assertion, sd, err := m.wa.BeginLogin(w)
	if err != nil {
		return nil, fmt.Errorf("passkey login: %w", err)
	}
	return assertion, m.keepCeremony(ctx, sessionHash, "login", sd)
}

// FinishPasskeyLogin checks the authenticator's answer.
func (m *MFA) FinishPasskeyLogin(ctx context.Context, u store.User, sessionHash, challenge, body []byte) error {
	if m.wa == nil {
		return ErrNoPasskeys
	}
	sd, err := m.ceremony(ctx, sessionHash, challenge, "login")
	if err != nil {
		return err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		return ErrBadCode
	}
	w, pks, err := m.waUser(ctx, u)
	if err != nil {
		return err
	}
	cred, err := m.wa.ValidateLogin(w, sd, parsed)
	if err != nil {
		return ErrBadCode
	}
	for _, pk := range pks {
		if bytes.Equal(pk.CredentialID, cred.ID) {
			raw, err := json.Marshal(cred) // the new sign counter
			if err != nil {
				return err
			}
			return m.st.UpdatePasskey(ctx, pk.ID, raw, m.now().UTC())
		}
	}
	return ErrBadCode
}

// RemovePasskey deletes one of u's passkeys.
func (m *MFA) RemovePasskey(ctx context.Context, u store.User, id string) error {
	err := m.st.DeletePasskey(ctx, u.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return ErrNoFactor
	}
	return err
}
