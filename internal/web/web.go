// Package web is Bedside's HTTP surface: the JSON API under /api/v1, the pages, the static
// browser client and the health checks. routes.go lists every route with its policy.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
	"github.com/bedside/bedside/webui"
)

// Sessions is what the web layer needs of sign-in sessions.
type Sessions interface {
	SignIn(ctx context.Context, email, password string) (auth.Grant, error)
	LookupAny(ctx context.Context, token string) (auth.Principal, error)
	Complete(ctx context.Context, token string) (auth.Grant, error)
	SignOut(ctx context.Context, token string) error
	KeepAlive(ctx context.Context, idHash []byte) error
	MFARequired(role store.Role) bool
}

// MFA is what the web layer needs of second factors.
type MFA interface {
	BeginTOTP(ctx context.Context, u store.User) (auth.TOTPSetup, error)
	TOTPQR(ctx context.Context, u store.User) ([]byte, error)
	ConfirmTOTP(ctx context.Context, u store.User, code string) ([]string, error)
	VerifyTOTP(ctx context.Context, u store.User, code string) error
	RemoveTOTP(ctx context.Context, u store.User) error
	NewRecoveryCodes(ctx context.Context, u store.User) ([]string, error)
	UseRecoveryCode(ctx context.Context, u store.User, code string) error
	StatusOf(ctx context.Context, u store.User) (auth.Status, error)
	BeginPasskeyRegistration(ctx context.Context, u store.User, sessionHash []byte) (*protocol.CredentialCreation, error)
	FinishPasskeyRegistration(ctx context.Context, u store.User, sessionHash, challenge, body []byte, name string) (store.Passkey, error)
	BeginPasskeyLogin(ctx context.Context, u store.User, sessionHash []byte) (*protocol.CredentialAssertion, error)
	FinishPasskeyLogin(ctx context.Context, u store.User, sessionHash, challenge, body []byte) error
	RemovePasskey(ctx context.Context, u store.User, id string) error
}

// Limiter counts failed attempts and locks out (auth.Limiter).
type Limiter interface {
	Check(ctx context.Context, keys ...auth.Key) error
	Fail(ctx context.Context, k auth.Key) (bool, error)
	Clear(ctx context.Context, k auth.Key) error
}

// Visits is what the web layer needs of the visit service.
type Visits interface {
	Create(ctx context.Context, nv visit.NewVisit) (store.Visit, string, error)
	Get(ctx context.Context, id string) (store.Visit, error)
	List(ctx context.Context, clinicianID string, from, to time.Time) ([]store.Visit, error)
	NewLink(ctx context.Context, id string) (store.Visit, string, error)
	Revoke(ctx context.Context, id string) (store.Visit, error)
	End(ctx context.Context, id string) (store.Visit, error)
	Admit(ctx context.Context, visitID, participantID string) error
	Remove(ctx context.Context, visitID, participantID string) error
	Waiting(visitID string) []visit.Waiting
	ResolveLink(ctx context.Context, token string) (visit.Link, error)
	LinkParticipant(ctx context.Context, token, cookie string) (visit.Link, *store.Participant, error)
	JoinLink(ctx context.Context, token, name, cookie string) (store.Participant, visit.Link, string, error)
	Invite(ctx context.Context, visitID string, role store.GuestRole) (store.GuestLink, string, error)
	Mode(visitID string) string
	GuestLinks(ctx context.Context, visitID string) ([]store.GuestLink, error)
	ParticipantFromCookie(ctx context.Context, cookie string) (store.Participant, error)
	Participants(ctx context.Context, visitID string) ([]store.Participant, error)
	Connections(ctx context.Context, visitID string) ([]store.Connection, error)
}

// ICEServer is an RTCIceServer, as the device check gets it.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEConfig is the device check's ICE configuration.
type ICEConfig struct {
	Servers []ICEServer
	Policy  string
	Expires time.Time
}

// Signal is the WebSocket signalling endpoint.
type Signal interface {
	Serve(w http.ResponseWriter, r *http.Request, id visit.Identity)
}

// Users is what the web layer reads and administers of accounts, and the audit search.
type Users interface {
	UserByID(ctx context.Context, id string) (store.User, error)
	UserByEmail(ctx context.Context, email string) (store.User, error)
	ListUsers(ctx context.Context) ([]store.User, error)
	DeleteUserSessions(ctx context.Context, userID string) error
	CountUserSessions(ctx context.Context, userID string) (int, error)
	DeleteSecondFactors(ctx context.Context, userID string) error
	CreateBreakGlass(ctx context.Context, b store.BreakGlass) error
	BreakGlassGrants(ctx context.Context, userID string, since time.Time) ([]store.BreakGlass, error)
	RevokeBreakGlass(ctx context.Context, userID string, at time.Time) (int, error)
	SearchAudit(ctx context.Context, q audit.Query) ([]audit.Entry, error)
	Ping(ctx context.Context) error
}

// Config configures the web server.
type Config struct {
	Sessions Sessions
	Visits   Visits
	Users    Users
	Signal   Signal // GET /api/v1/ws
	// MFA and Limiter default to auth.NewMFA and auth.NewLimiter on Users (which must then
	// be a store that implements their interfaces).
	MFA     MFA
	Limiter Limiter
	// AllowedOrigins are origins other than PublicURL's trusted for state changes (the
	// WebSocket gets the same list).
	AllowedOrigins []string
	// TrustedProxies are the reverse proxies in front of the server: for a request from
	// one, the client's address is taken from X-Forwarded-For (clientAddr). Empty: the TCP
	// peer is the client, and X-Forwarded-For is ignored (anyone can write it).
	TrustedProxies []netip.Prefix
	// CheckICE is the ICE configuration of a patient's device check (short-lived relay
	// credentials for the visit); nil = STUN and TURN are not offered.
	CheckICE  func(v store.Visit) ICEConfig
	PublicURL string // scheme://host[:port], for links
	TLS       bool   // cookies get Secure and the __Host- prefix; HSTS is sent
	Log       *slog.Logger
	Now       func() time.Time
	// Audit receives the security events of the HTTP surface (sign-in, sign-out, refused
	// links, admin actions). nil = audit.Discard.
	Audit audit.Recorder
}

// Server is the HTTP handler of Bedside.
type Server struct {
	cfg      Config
	log      *slog.Logger
	static_  http.Handler
	files    fs.FS
	handler  http.Handler
	draining atomic.Bool
	origin   string // the public origin, for CSRF checks
}

// New returns the web server.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard
	}
	if cfg.Limiter == nil {
		ls, ok := cfg.Users.(auth.LockoutStore)
		if !ok {
			return nil, errors.New("web: no Limiter, and Users keeps no lockouts")
		}
		cfg.Limiter = auth.NewLimiter(ls, cfg.Now)
	}
	if cfg.MFA == nil {
		ms, ok := cfg.Users.(auth.MFAStore)
		if !ok {
			return nil, errors.New("web: no MFA, and Users keeps no second factors")
		}
		pu, err := url.Parse(cfg.PublicURL)
		if err != nil {
			return nil, fmt.Errorf("public url: %w", err)
		}
		origins := append([]string{pu.Scheme + "://" + pu.Host}, cfg.AllowedOrigins...)
		m, err := auth.NewMFA(ms, auth.MFAConfig{Issuer: "Bedside (" + pu.Hostname() + ")", RPID: pu.Hostname(), RPOrigins: origins, Now: cfg.Now})
		if err != nil {
			return nil, err
		}
		cfg.MFA = m
	}
	files, err := fs.Sub(webui.Static, "static")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("public url: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Log, files: files, origin: u.Scheme + "://" + u.Host}
	s.static_ = http.StripPrefix("/static/", http.FileServerFS(files))
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, s.authorize(rt))
	}
	mux.HandleFunc("/", s.notFound)
	s.handler = s.recoverer(s.headers(s.logRequests(s.checkOrigin(mux))))
	return s, nil
}

// ServeHTTP serves a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Drain makes /readyz answer 503, so a load balancer stops sending new visits here while
// the server shuts down.
func (s *Server) Drain() { s.draining.Store(true) }

// caller is who made a request: a signed-in user (perhaps half-way: see stage), or nobody.
type caller struct {
	user      *store.User
	principal auth.Principal
	// emergency: a clinician with an active break-glass grant.
	emergency bool
}

func (s *Server) cookieName(base string) string {
	if s.cfg.TLS {
		return "__Host-" + base
	}
	return base
}

// SessionCookie and ParticipantCookie are the cookie base names (see docs/api.md).
const (
	SessionCookie     = "bedside_session"
	ParticipantCookie = "bedside_participant"
)

func (s *Server) cookie(r *http.Request, base string) string {
	c, err := r.Cookie(s.cookieName(base))
	if err != nil {
		return ""
	}
	return c.Value
}

func (s *Server) setCookie(w http.ResponseWriter, base, value string, maxAge time.Duration) {
	c := &http.Cookie{
		Name: s.cookieName(base), Value: value, Path: "/",
		HttpOnly: true, Secure: s.cfg.TLS, SameSite: http.SameSiteStrictMode,
	}
	if value == "" {
		c.MaxAge = -1
	} else if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
}

// principal returns the session of a request at any stage of signing in, or nil.
func (s *Server) principal(r *http.Request) (*auth.Principal, error) {
	tok := s.cookie(r, SessionCookie)
	if tok == "" {
		return nil, nil
	}
	p, err := s.cfg.Sessions.LookupAny(r.Context(), tok)
	if errors.Is(err, auth.ErrNoSession) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// user returns the fully signed-in user of a request, or nil.
func (s *Server) user(r *http.Request) (*store.User, error) {
	p, err := s.principal(r)
	if err != nil || p == nil || p.Stage != auth.StageFull {
		return nil, err
	}
	return &p.User, nil
}

// emergency reports whether u holds an active break-glass grant. The admins' console and
// the trail show every use.
func (s *Server) emergency(ctx context.Context, u store.User) (bool, error) {
	if u.Role != store.RoleClinician {
		return false, nil
	}
	now := s.cfg.Now()
	grants, err := s.cfg.Users.BreakGlassGrants(ctx, u.ID, now)
	if err != nil {
		return false, err
	}
	for _, g := range grants {
		if g.Active(now) {
			return true, nil
		}
	}
	return false, nil
}

// authorize runs the route's policy before its handler: ActNone routes are open; others
// need a session at a stage that allows the action, of a role that may do it.
func (s *Server) authorize(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &caller{}
		r = r.WithContext(audit.WithActor(r.Context(), audit.Actor{Addr: s.clientAddr(r), UserAgent: r.UserAgent()}))
		if rt.action != auth.ActNone {
			p, err := s.principal(r)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if p != nil && !auth.StageAllows(p.Stage, rt.action) {
				if p.Stage == auth.StageEnroll {
					if rt.kind == page {
						http.Redirect(w, r, "/console/security", http.StatusSeeOther)
						return
					}
					s.fail(w, r, errMFARequired)
					return
				}
				if p.Stage == auth.StageFull { // a second factor for a session that has one
					s.fail(w, r, &apiError{status: http.StatusConflict, code: "wrong_state", message: "You are signed in already."})
					return
				}
				p = nil // half signed in: as good as not signed in, for this
			}
			if p == nil {
				if rt.kind == page {
					http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
					return
				}
				s.fail(w, r, errUnauthenticated)
				return
			}
			if !auth.Can(p.User.Role, rt.action) {
				if rt.kind == page {
					s.errorPage(w, http.StatusForbidden, "Not for your role", "Your account may not open this page.")
					return
				}
				s.fail(w, r, errForbidden)
				return
			}
			c.user, c.principal = &p.User, *p
			if p.Stage == auth.StageFull {
				if c.emergency, err = s.emergency(r.Context(), p.User); err != nil {
					s.fail(w, r, err)
					return
				}
			}
			r = r.WithContext(audit.WithActor(r.Context(), actorOf(r, &p.User)))
		}
		rt.handle(w, r, c)
	})
}

// clientAddr is the request's client IP address, without the port: the TCP peer, or, when
// the peer is a trusted proxy, the nearest address in X-Forwarded-For that is not one (read
// from the right: each proxy appends the address it had the request from, and only the
// entries our own proxies appended can be believed; what the client wrote is to their
// left). A malformed entry stops the walk at the last proxy believed.
func (s *Server) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(s.cfg.TrustedProxies) == 0 {
		return host
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !s.trustedProxy(a) {
		return host
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := hopAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = h.Unmap()
		if !s.trustedProxy(a) {
			break
		}
	}
	return a.String()
}

// requestAddr is the client address authorize found for the request (clientAddr, once per
// request): what the per-address limits count is what the audit trail records.
func requestAddr(r *http.Request) string { return audit.ActorFrom(r.Context()).Addr }

// hopAddr is one X-Forwarded-For entry's address: an address, or (as some load balancers
// write it) an address and port.
func hopAddr(h string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(h); err == nil {
		return a, nil
	}
	ap, err := netip.ParseAddrPort(h)
	return ap.Addr(), err
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// actorOf is the audit actor of a signed-in user's request.
func actorOf(r *http.Request, u *store.User) audit.Actor {
	a := audit.ActorFrom(r.Context())
	a.ID, a.Role = u.ID, string(u.Role)
	return a
}

// record writes an audit event of the request's actor. An event that cannot be recorded is
// logged; the request goes on.
func (s *Server) record(r *http.Request, e audit.Event) {
	a := audit.ActorFrom(r.Context())
	if e.ActorID == "" && e.ActorRole == "" {
		e.ActorID, e.ActorRole = a.ID, a.Role
	}
	e.Addr, e.UserAgent = a.Addr, a.UserAgent
	if e.Time.IsZero() {
		e.Time = s.cfg.Now()
	}
	if err := s.cfg.Audit.Record(r.Context(), e); err != nil {
		s.log.Error("audit trail: cannot record", "action", string(e.Action), "err", err)
	}
}

// apiError is an error the client sees: status, stable code, human message.
type apiError struct {
	status  int
	code    string
	message string
	until   time.Time // with 429: sent as Retry-After (seconds from now)
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

var (
	errUnauthenticated = &apiError{status: http.StatusUnauthorized, code: "unauthenticated", message: "Please sign in."}
	errForbidden       = &apiError{status: http.StatusForbidden, code: "forbidden", message: "Your role may not do this."}
	errNotFound        = &apiError{status: http.StatusNotFound, code: "not_found", message: "Not found."}
	errBadOrigin       = &apiError{status: http.StatusForbidden, code: "bad_origin", message: "This request came from another site and was refused."}
	errMFARequired     = &apiError{status: http.StatusForbidden, code: "mfa_required", message: "Set up a second factor (an authenticator app or a passkey) before going on."}
)

// httpError maps any error to what the client sees. It is the one place that does: errors
// it does not know become 500 "internal", and their text stays in the log.
func httpError(err error) *apiError {
	var ae *apiError
	var inv *visit.InvalidError
	var locked *auth.LockedError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &locked):
		return &apiError{status: http.StatusTooManyRequests, code: "rate_limited", message: "Too many attempts. Wait a while before trying again.", until: locked.Until}
	case errors.Is(err, auth.ErrBadCode):
		return &apiError{status: http.StatusUnauthorized, code: "bad_code", message: "That code is wrong, expired or already used."}
	case errors.Is(err, auth.ErrEnrolled):
		return &apiError{status: http.StatusConflict, code: "wrong_state", message: "This is set up already. Remove it first to set it up again."}
	case errors.Is(err, auth.ErrNoFactor):
		return &apiError{status: http.StatusConflict, code: "wrong_state", message: "There is no such second factor to use."}
	case errors.Is(err, auth.ErrNoPasskeys):
		return &apiError{status: http.StatusConflict, code: "wrong_state", message: "Passkeys work only when this server is reached by a name (such as localhost or visits.clinic.example), not by an IP address."}
	case errors.Is(err, auth.ErrLastFactor):
		return &apiError{status: http.StatusConflict, code: "wrong_state", message: "This is your last second factor, and your account must have one. Add another first."}
	case errors.As(err, &inv):
		return &apiError{status: http.StatusBadRequest, code: "invalid", message: inv.Error()}
	case errors.Is(err, auth.ErrBadCredentials):
		return &apiError{status: http.StatusUnauthorized, code: "bad_credentials", message: "Wrong email or password."}
	case errors.Is(err, visit.ErrNotFound):
		return errNotFound
	case errors.Is(err, visit.ErrForbidden):
		return errForbidden
	case errors.Is(err, visit.ErrWrongState):
		return &apiError{status: http.StatusConflict, code: "wrong_state", message: "That cannot be done now."}
	case errors.Is(err, visit.ErrRemoved):
		return &apiError{status: http.StatusForbidden, code: "removed", message: "The clinician has removed you from this visit."}
	case errors.Is(err, visit.ErrNotAdmitted):
		return &apiError{status: http.StatusConflict, code: "wrong_state", message: "Not admitted yet."}
	case errors.Is(err, visit.ErrLinkUnknown):
		return &apiError{status: http.StatusNotFound, code: "link_unknown", message: "This visit link is not valid. Check that you copied all of it, or ask your clinic for a new one."}
	case errors.Is(err, visit.ErrLinkExpired):
		return &apiError{status: http.StatusGone, code: "link_expired", message: "This visit link has expired. Ask your clinic for a new one."}
	case errors.Is(err, visit.ErrLinkRevoked):
		return &apiError{status: http.StatusGone, code: "link_revoked", message: "This visit link has been withdrawn by your clinic. Ask them for a new one."}
	case errors.Is(err, visit.ErrVisitEnded):
		return &apiError{status: http.StatusGone, code: "visit_ended", message: "This visit has ended."}
	}
	return &apiError{status: http.StatusInternalServerError, code: "internal", message: "Something went wrong on the server. Please try again."}
}

// fail writes err as a JSON error response.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (a page navigated mid-request): nothing failed here.
		s.log.Debug("request abandoned by the client", "route", r.Pattern)
		return
	}
	ae := httpError(err)
	if ae.status >= 500 {
		s.log.Error("request failed", "route", r.Pattern, "err", err)
	}
	if !ae.until.IsZero() {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(ae.until.Sub(s.cfg.Now()).Round(time.Second), time.Second)/time.Second)))
	}
	writeJSON(w, ae.status, map[string]any{"error": map[string]string{"code": ae.code, "message": ae.message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store") // answers hold patient names and links
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// maxBody bounds JSON request bodies.
const maxBody = 64 << 10

// decode reads a JSON body into v: one object, known fields only, at most maxBody bytes.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", message: "The request body is too large."}
		case errors.As(err, &ute) && ute.Field != "": // Field "": the body is not an object
			return &apiError{status: http.StatusBadRequest, code: "invalid", message: fmt.Sprintf("%s: wrong type", ute.Field)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return &apiError{status: http.StatusBadRequest, code: "invalid", message: "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")}
		}
		return &apiError{status: http.StatusBadRequest, code: "bad_json", message: "The request body is not a JSON object."}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &apiError{status: http.StatusBadRequest, code: "bad_json", message: "The request body must hold one JSON object."}
	}
	return nil
}
