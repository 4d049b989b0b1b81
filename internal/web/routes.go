package web

import (
	"net/http"

	"github.com/bedside/bedside/internal/auth"
)

// kind says how a route answers a caller who is not allowed in.
type kind int

const (
	api  kind = iota // JSON error
	page             // redirect to /signin
)

// route is one entry of the HTTP surface: its pattern, the action its caller needs (checked
// before the handler runs), and the handler. Every route has a policy; there is no way to
// add one without (TestEveryRouteHasPolicy walks them all).
type route struct {
	pattern string
	action  auth.Action
	kind    kind
	handle  func(w http.ResponseWriter, r *http.Request, c *caller)
}

// routes is the whole HTTP surface, in one place. docs/api.md documents the API routes
// (TestAPIDocCoversRoutes keeps the two in step).
func (s *Server) routes() []route {
	return []route{
		{"GET /healthz", auth.ActNone, api, s.healthz},
		{"GET /readyz", auth.ActNone, api, s.readyz},

		{"POST /api/v1/session", auth.ActNone, api, s.signIn},
		{"GET /api/v1/session", auth.ActSignedIn, api, s.getSession},
		{"DELETE /api/v1/session", auth.ActSignOut, api, s.signOut},
		// The second step of signing in: only a session waiting for its second factor.
		{"POST /api/v1/session/totp", auth.ActSecondFactor, api, s.signInTOTP},
		{"POST /api/v1/session/recovery", auth.ActSecondFactor, api, s.signInRecovery},
		{"POST /api/v1/session/passkey/begin", auth.ActSecondFactor, api, s.passkeyLoginBegin},
		{"POST /api/v1/session/passkey/finish", auth.ActSecondFactor, api, s.passkeyLoginFinish},

		// One's own second factors (enrollment also while it is required before anything else).
		{"GET /api/v1/mfa", auth.ActEnrollMFA, api, s.mfaStatus},
		{"POST /api/v1/mfa/totp", auth.ActEnrollMFA, api, s.totpBegin},
		{"GET /api/v1/mfa/totp/qr.png", auth.ActEnrollMFA, api, s.totpQR},
		{"POST /api/v1/mfa/totp/confirm", auth.ActEnrollMFA, api, s.totpConfirm},
		{"DELETE /api/v1/mfa/totp", auth.ActManageMFA, api, s.totpRemove},
		{"POST /api/v1/mfa/passkeys/begin", auth.ActEnrollMFA, api, s.passkeyRegisterBegin},
		{"POST /api/v1/mfa/passkeys/finish", auth.ActEnrollMFA, api, s.passkeyRegisterFinish},
		{"DELETE /api/v1/mfa/passkeys/{id}", auth.ActManageMFA, api, s.passkeyRemove},
		{"POST /api/v1/mfa/recovery-codes", auth.ActManageMFA, api, s.recoveryCodes},

		// Administration.
		{"GET /api/v1/users", auth.ActUserAdmin, api, s.listUsers},
		{"DELETE /api/v1/users/{id}/sessions", auth.ActUserAdmin, api, s.endUserSessions},
		{"POST /api/v1/users/{id}/mfa/reset", auth.ActUserAdmin, api, s.resetUserMFA},
		{"POST /api/v1/users/{id}/break-glass", auth.ActBreakGlass, api, s.grantBreakGlass},
		{"DELETE /api/v1/users/{id}/break-glass", auth.ActBreakGlass, api, s.revokeBreakGlass},
		{"GET /api/v1/break-glass", auth.ActUserAdmin, api, s.listBreakGlass},
		{"GET /api/v1/audit", auth.ActAuditRead, api, s.searchAudit},

		{"GET /api/v1/visits", auth.ActVisitList, api, s.listVisits},
		{"POST /api/v1/visits", auth.ActVisitCreate, api, s.createVisit},
		{"GET /api/v1/visits/{id}", auth.ActVisitRead, api, s.getVisit},
		{"POST /api/v1/visits/{id}/link", auth.ActVisitLink, api, s.newLink},
		{"POST /api/v1/visits/{id}/revoke", auth.ActVisitRevoke, api, s.revokeVisit},
		{"POST /api/v1/visits/{id}/admit", auth.ActVisitAdmit, api, s.admit},
		{"POST /api/v1/visits/{id}/remove", auth.ActVisitRemove, api, s.removeParticipant},
		{"POST /api/v1/visits/{id}/end", auth.ActVisitEnd, api, s.endVisit},
		{"POST /api/v1/visits/{id}/guests", auth.ActVisitInvite, api, s.invite},

		// The link's token is the authorisation of these three.
		{"POST /api/v1/link", auth.ActNone, api, s.resolveLink},
		{"POST /api/v1/link/join", auth.ActNone, api, s.joinLink},
		{"POST /api/v1/link/ice", auth.ActNone, api, s.linkICE},
		// Cookies identify the caller; every message is checked by the signalling policy.
		{"GET /api/v1/ws", auth.ActNone, api, s.websocket},

		{"GET /{$}", auth.ActNone, page, s.home},
		{"GET /signin", auth.ActNone, page, s.page("signin.html")},
		{"GET /console", auth.ActSignedIn, page, s.page("console.html")},
		{"GET /console/visits/{id}", auth.ActVisitJoin, page, s.page("visit.html")},
		{"GET /console/security", auth.ActEnrollMFA, page, s.page("security.html")},
		{"GET /console/admin", auth.ActUserAdmin, page, s.page("admin.html")},
		{"GET /console/audit", auth.ActAuditRead, page, s.page("audit.html")},
		{"GET /v/{token}", auth.ActNone, page, s.patientPage},
		{"GET /static/", auth.ActNone, page, s.static},
	}
}
