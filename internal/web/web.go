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
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
	"github.com/bedside/bedside/webui"
)

// Sessions is what the web layer needs of sign-in sessions.
type Sessions interface {
	SignIn(ctx context.Context, email, password string) (string, store.User, error)
	Lookup(ctx context.Context, token string) (store.User, error)
	SignOut(ctx context.Context, token string) error
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
	ResolveLink(ctx context.Context, token string) (store.Visit, error)
	LinkParticipant(ctx context.Context, token, cookie string) (store.Visit, *store.Participant, error)
	JoinLink(ctx context.Context, token, name, cookie string) (store.Participant, store.Visit, string, error)
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

// Users is what the web layer reads of accounts.
type Users interface {
	UserByID(ctx context.Context, id string) (store.User, error)
	UserByEmail(ctx context.Context, email string) (store.User, error)
	Ping(ctx context.Context) error
}

// Config configures the web server.
type Config struct {
	Sessions Sessions
	Visits   Visits
	Users    Users
	Signal   Signal // GET /api/v1/ws
	// CheckICE is the ICE configuration of a patient's device check (short-lived relay
	// credentials for the visit); nil = STUN and TURN are not offered.
	CheckICE  func(v store.Visit) ICEConfig
	PublicURL string // scheme://host[:port], for links
	TLS       bool   // cookies get Secure and the __Host- prefix; HSTS is sent
	Log       *slog.Logger
	Now       func() time.Time
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

// caller is who made a request: a signed-in user, or nobody.
type caller struct {
	user *store.User
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

// user returns the signed-in user of a request, or nil.
func (s *Server) user(r *http.Request) (*store.User, error) {
	tok := s.cookie(r, SessionCookie)
	if tok == "" {
		return nil, nil
	}
	u, err := s.cfg.Sessions.Lookup(r.Context(), tok)
	if errors.Is(err, auth.ErrNoSession) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// authorize runs the route's policy before its handler: ActNone routes are open; others
// need a signed-in user whose role may do the action.
func (s *Server) authorize(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &caller{}
		if rt.action != auth.ActNone {
			u, err := s.user(r)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if u == nil {
				if rt.kind == page {
					http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
					return
				}
				s.fail(w, r, errUnauthenticated)
				return
			}
			if !auth.Can(u.Role, rt.action) {
				if rt.kind == page {
					s.errorPage(w, http.StatusForbidden, "Not for your role", "Your account may not open this page.")
					return
				}
				s.fail(w, r, errForbidden)
				return
			}
			c.user = u
		}
		rt.handle(w, r, c)
	})
}

// apiError is an error the client sees: status, stable code, human message.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

var (
	errUnauthenticated = &apiError{http.StatusUnauthorized, "unauthenticated", "Please sign in."}
	errForbidden       = &apiError{http.StatusForbidden, "forbidden", "Your role may not do this."}
	errNotFound        = &apiError{http.StatusNotFound, "not_found", "Not found."}
	errBadOrigin       = &apiError{http.StatusForbidden, "bad_origin", "This request came from another site and was refused."}
)

// httpError maps any error to what the client sees. It is the one place that does: errors
// it does not know become 500 "internal", and their text stays in the log.
func httpError(err error) *apiError {
	var ae *apiError
	var inv *visit.InvalidError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &inv):
		return &apiError{http.StatusBadRequest, "invalid", inv.Error()}
	case errors.Is(err, auth.ErrBadCredentials):
		return &apiError{http.StatusUnauthorized, "bad_credentials", "Wrong email or password."}
	case errors.Is(err, visit.ErrNotFound):
		return errNotFound
	case errors.Is(err, visit.ErrForbidden):
		return errForbidden
	case errors.Is(err, visit.ErrWrongState):
		return &apiError{http.StatusConflict, "wrong_state", "That cannot be done now."}
	case errors.Is(err, visit.ErrRemoved):
		return &apiError{http.StatusForbidden, "removed", "The clinician has removed you from this visit."}
	case errors.Is(err, visit.ErrNotAdmitted):
		return &apiError{http.StatusConflict, "wrong_state", "Not admitted yet."}
	case errors.Is(err, visit.ErrLinkUnknown):
		return &apiError{http.StatusNotFound, "link_unknown", "This visit link is not valid. Check that you copied all of it, or ask your clinic for a new one."}
	case errors.Is(err, visit.ErrLinkExpired):
		return &apiError{http.StatusGone, "link_expired", "This visit link has expired. Ask your clinic for a new one."}
	case errors.Is(err, visit.ErrLinkRevoked):
		return &apiError{http.StatusGone, "link_revoked", "This visit link has been withdrawn by your clinic. Ask them for a new one."}
	case errors.Is(err, visit.ErrVisitEnded):
		return &apiError{http.StatusGone, "visit_ended", "This visit has ended."}
	}
	return &apiError{http.StatusInternalServerError, "internal", "Something went wrong on the server. Please try again."}
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
			return &apiError{http.StatusRequestEntityTooLarge, "too_large", "The request body is too large."}
		case errors.As(err, &ute) && ute.Field != "": // Field "": the body is not an object
			return &apiError{http.StatusBadRequest, "invalid", fmt.Sprintf("%s: wrong type", ute.Field)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return &apiError{http.StatusBadRequest, "invalid", "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")}
		}
		return &apiError{http.StatusBadRequest, "bad_json", "The request body is not a JSON object."}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &apiError{http.StatusBadRequest, "bad_json", "The request body must hold one JSON object."}
	}
	return nil
}
