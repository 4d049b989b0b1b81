// Package client is a Go participant of Bedside visits, speaking the real HTTP API and
// signalling protocol (docs/protocol.md) with pion WebRTC. Tests use it to hold visits
// without a browser; `bedside bench` uses it for load.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Client is one person's HTTP session with a Bedside server.
type Client struct {
	Base string // the server's base URL
	HTTP *http.Client
}

// New returns a Client with an empty cookie jar.
func New(base string) *Client {
	jar, _ := cookiejar.New(nil)
	return &Client{Base: base, HTTP: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// APIError is an error answer of the API.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Do sends a JSON request (body may be nil) as a same-origin browser would, and decodes a
// JSON answer into out (may be nil). Error answers are *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", c.Base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(data, &e)
		return &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// SignIn signs in a staff, clinician or admin account with its password. When the account
// needs a second factor (or must set one up first) the error is a *SecondStepError and the
// client holds the half signed-in session: go on with SignInTOTP, SignInRecovery or
// EnrollTOTP.
func (c *Client) SignIn(ctx context.Context, email, password string) error {
	var out struct {
		Stage   string   `json:"stage"`
		Methods []string `json:"methods"`
	}
	if err := c.Do(ctx, "POST", "/api/v1/session", map[string]string{"email": email, "password": password}, &out); err != nil {
		return err
	}
	if out.Stage != "signed_in" {
		return &SecondStepError{Stage: out.Stage, Methods: out.Methods}
	}
	return nil
}

// SecondStepError says a sign-in needs a second step: "second_factor" (Methods say which)
// or "enroll" (set up a second factor first).
type SecondStepError struct {
	Stage   string
	Methods []string
}

func (e *SecondStepError) Error() string { return "sign-in needs a second step: " + e.Stage }

// SignInTOTP gives the code of an authenticator app after SignIn.
func (c *Client) SignInTOTP(ctx context.Context, code string) error {
	return c.Do(ctx, "POST", "/api/v1/session/totp", map[string]string{"code": code}, nil)
}

// SignInRecovery gives a recovery code after SignIn.
func (c *Client) SignInRecovery(ctx context.Context, code string) error {
	return c.Do(ctx, "POST", "/api/v1/session/recovery", map[string]string{"code": code}, nil)
}

// TOTPSetup is an authenticator-app enrollment in progress.
type TOTPSetup struct {
	Secret     string `json:"secret"`
	OTPAuthURL string `json:"otpauth_url"`
	QR         string `json:"qr"`
}

// BeginTOTP starts setting up an authenticator app.
func (c *Client) BeginTOTP(ctx context.Context) (TOTPSetup, error) {
	var s TOTPSetup
	err := c.Do(ctx, "POST", "/api/v1/mfa/totp", nil, &s)
	return s, err
}

// ConfirmTOTP finishes setting up an authenticator app with its first code and returns the
// recovery codes (shown once; nil when the account had some left).
func (c *Client) ConfirmTOTP(ctx context.Context, code string) ([]string, error) {
	var out struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	err := c.Do(ctx, "POST", "/api/v1/mfa/totp/confirm", map[string]string{"code": code}, &out)
	return out.RecoveryCodes, err
}

// Visit is the API's Visit object (the fields clients use).
type Visit struct {
	ID           string    `json:"id"`
	State        string    `json:"state"`
	PatientName  string    `json:"patient_name"`
	PatientURL   string    `json:"patient_url"`
	ClinicianURL string    `json:"clinician_url"`
	Waiting      []Waiting `json:"waiting"`
}

// Waiting is a person in the waiting room.
type Waiting struct {
	ID    string    `json:"id"`
	Name  string    `json:"name"`
	Since time.Time `json:"since"`
}

// CreateVisit creates a visit for the signed-in clinician.
func (c *Client) CreateVisit(ctx context.Context, patientName string) (Visit, error) {
	var v Visit
	err := c.Do(ctx, "POST", "/api/v1/visits", map[string]string{"patient_name": patientName}, &v)
	return v, err
}

// Guest is a guest link as the API returns it.
type Guest struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"`
	GuestURL  string    `json:"guest_url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Invite makes a guest link for a visit: role "participant" or "observer".
func (c *Client) Invite(ctx context.Context, visitID, role string) (Guest, error) {
	var g Guest
	err := c.Do(ctx, "POST", "/api/v1/visits/"+url.PathEscape(visitID)+"/guests", map[string]string{"role": role}, &g)
	return g, err
}

// LinkToken returns the token of a patient or guest URL.
func LinkToken(patientURL string) (string, error) {
	u, err := url.Parse(patientURL)
	if err != nil {
		return "", err
	}
	const prefix = "/v/"
	if len(u.Path) <= len(prefix) || u.Path[:len(prefix)] != prefix {
		return "", fmt.Errorf("not a patient link: %s", u.Path)
	}
	return u.Path[len(prefix):], nil
}

// JoinLink becomes a participant through a patient or guest link (the participant cookie
// lands in the jar) and returns the participant id.
func (c *Client) JoinLink(ctx context.Context, token, name string) (string, error) {
	var out struct {
		Participant struct {
			ID string `json:"id"`
		} `json:"participant"`
	}
	err := c.Do(ctx, "POST", "/api/v1/link/join", map[string]string{"token": token, "name": name}, &out)
	return out.Participant.ID, err
}

// Message is one server message: its type and the whole JSON.
type Message struct {
	Type string
	Raw  json.RawMessage
}

// Decode decodes the message into v.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Raw, v) }

// Conn is a signalling connection.
type Conn struct {
	ws *websocket.Conn
	// In receives every server message in order; it is closed when the connection ends.
	In <-chan Message

	wmu    sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Dial opens the signalling WebSocket. asParticipant selects the participant cookie (the
// patient page's ?as=participant).
func (c *Client) Dial(ctx context.Context, asParticipant bool) (*Conn, error) {
	u := "ws" + c.Base[len("http"):] + "/api/v1/ws"
	if asParticipant {
		u += "?as=participant"
	}
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   c.HTTP,
		HTTPHeader:   http.Header{"Origin": {c.Base}},
		Subprotocols: []string{"bedside.v1"},
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	rctx, cancel := context.WithCancel(context.Background())
	in := make(chan Message, 256)
	conn := &Conn{ws: ws, In: in, cancel: cancel, done: make(chan struct{})}
	go conn.readLoop(rctx, in) // owned by conn: ends when the socket closes or Close is called
	return conn, nil
}

func (c *Conn) readLoop(ctx context.Context, in chan<- Message) {
	defer close(c.done)
	defer close(in)
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			c.err = err
			return
		}
		var head struct{ Type string }
		if json.Unmarshal(data, &head) != nil {
			continue
		}
		select {
		case in <- Message{Type: head.Type, Raw: data}:
		case <-ctx.Done():
			return
		}
	}
}

// Send sends one message (any JSON-encodable value).
func (c *Conn) Send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.SendRaw(ctx, b)
}

// SendRaw sends bytes as one text message, unchecked (for tests of bad input).
func (c *Conn) SendRaw(ctx context.Context, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// Close closes the connection and waits for its reader to end.
func (c *Conn) Close() {
	c.ws.Close(websocket.StatusNormalClosure, "")
	c.cancel()
	c.ws.CloseNow()
	<-c.done
}

// Err is why the connection ended (after In is closed).
func (c *Conn) Err() error { return c.err }

// CloseStatus is the WebSocket close status the server sent, or -1.
func (c *Conn) CloseStatus() websocket.StatusCode { return websocket.CloseStatus(c.err) }

// ErrClosed is returned by Next when the connection ended first.
var ErrClosed = errors.New("signalling connection closed")

// Next returns the next message of one of the given types (any type when none are given),
// skipping others, or an error when ctx ends or the connection closes first.
func (c *Conn) Next(ctx context.Context, types ...string) (Message, error) {
	for {
		select {
		case <-ctx.Done():
			return Message{}, fmt.Errorf("waiting for %v: %w", types, ctx.Err())
		case m, ok := <-c.In:
			if !ok {
				return Message{}, fmt.Errorf("waiting for %v: %w (%v)", types, ErrClosed, c.err)
			}
			if len(types) == 0 {
				return m, nil
			}
			for _, t := range types {
				if m.Type == t {
					return m, nil
				}
			}
		}
	}
}
