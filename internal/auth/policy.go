package auth

import "github.com/bedside/bedside/internal/store"

// Action is something a role may or may not do. Every API route and every signalling
// message names the Action it needs (see web/routes.go and signal), so nothing is reachable
// without a policy.
type Action string

const (
	// ActNone marks routes open to anyone (health checks, pages, sign-in, visit links, whose
	// own token is the authorisation).
	ActNone Action = "none"
	// ActSignedIn needs any signed-in account (reading one's own session).
	ActSignedIn Action = "signed_in"
	// ActSignOut: ending one's own session, at any stage of signing in.
	ActSignOut Action = "sign_out"
	// ActSecondFactor: giving the second factor after the password (only a session waiting
	// for it may).
	ActSecondFactor Action = "mfa.verify"
	// ActEnrollMFA: setting up a TOTP app or a passkey (also while enrollment is required
	// before anything else).
	ActEnrollMFA Action = "mfa.enroll"
	// ActManageMFA: removing one's second factors, new recovery codes (signed in fully).
	ActManageMFA Action = "mfa.manage"

	// Administration.
	ActUserAdmin  Action = "admin.users"      // list accounts, end their sessions, reset their second factors
	ActBreakGlass Action = "admin.breakglass" // grant and withdraw emergency access
	ActAuditRead  Action = "audit.read"       // search the audit trail

	ActVisitList   Action = "visit.list"
	ActVisitCreate Action = "visit.create"
	ActVisitRead   Action = "visit.read"
	ActVisitLink   Action = "visit.link"
	ActVisitRevoke Action = "visit.revoke"
	ActVisitAdmit  Action = "visit.admit"
	ActVisitEnd    Action = "visit.end"
	ActVisitRemove Action = "visit.remove" // take a patient or guest out of the visit
	ActVisitJoin   Action = "visit.join"   // take part in the call with camera and microphone
	ActVisitInvite Action = "visit.invite" // make a guest link (caregiver, interpreter, specialist)
	// ActVisitSignal: exchange SDP and candidates with the other admitted participants.
	ActVisitSignal Action = "visit.signal"

	// ActCreateForOthers: name another clinician as the visit's clinician.
	ActCreateForOthers Action = "visit.create_for_others"
	// ActAllVisits: see and manage visits that are not one's own.
	ActAllVisits Action = "visit.all"
)

// policy is the role x action table. A clinician acts on their own visits; ActAllVisits
// extends an action to every visit.
var policy = map[store.Role]map[Action]bool{
	store.RoleAdmin: set(ActSignedIn, ActSignOut, ActSecondFactor, ActEnrollMFA, ActManageMFA,
		ActVisitList, ActVisitCreate, ActVisitRead, ActVisitLink, ActVisitRevoke, ActVisitInvite,
		ActVisitAdmit, ActVisitEnd, ActVisitRemove, ActVisitJoin, ActVisitSignal, ActCreateForOthers, ActAllVisits,
		ActUserAdmin, ActBreakGlass, ActAuditRead),
	store.RoleClinician: set(ActSignedIn, ActSignOut, ActSecondFactor, ActEnrollMFA, ActManageMFA,
		ActVisitList, ActVisitCreate, ActVisitRead, ActVisitLink, ActVisitRevoke, ActVisitInvite,
		ActVisitAdmit, ActVisitEnd, ActVisitRemove, ActVisitJoin, ActVisitSignal),
	// Front desk: books visits and sees who is waiting; no media, no admitting.
	store.RoleStaff: set(ActSignedIn, ActSignOut, ActSecondFactor, ActEnrollMFA, ActManageMFA,
		ActVisitList, ActVisitCreate, ActVisitRead, ActVisitLink, ActVisitRevoke, ActVisitInvite,
		ActCreateForOthers, ActAllVisits),
	// Break-glass: a clinician with an admin's time-limited emergency grant acts on every
	// visit as on their own (never administration). Not a role an account holds: see
	// CanOnVisitEmergency.
	RoleEmergency: set(ActVisitRead, ActVisitLink, ActVisitRevoke, ActVisitInvite, ActVisitAdmit, ActVisitEnd, ActVisitRemove,
		ActVisitJoin, ActVisitSignal),
	// People who came through a link: once admitted, they take part in the call.
	store.RolePatient: set(ActVisitSignal),
	store.RoleGuest:   set(ActVisitSignal),
}

func set(acts ...Action) map[Action]bool {
	m := make(map[Action]bool, len(acts))
	for _, a := range acts {
		m[a] = true
	}
	return m
}

// Can reports whether role may do act.
func Can(role store.Role, act Action) bool {
	if act == ActNone {
		return true
	}
	return policy[role][act]
}

// RoleEmergency is the policy row of break-glass access.
const RoleEmergency store.Role = "emergency"

// CanOnVisitEmergency reports whether a clinician with an active break-glass grant may do act
// on a visit that is not theirs.
func CanOnVisitEmergency(u store.User, act Action) bool {
	return u.Role == store.RoleClinician && Can(RoleEmergency, act)
}

// Stage is how far a sign-in session has got.
type Stage string

const (
	StageFull   Stage = "full"   // signed in
	StageMFA    Stage = "mfa"    // the password was right; the second factor is due
	StageEnroll Stage = "enroll" // the password was right; a second factor must be set up first
)

// StageAllows reports whether a session at stage may do act at all (the role decides the
// rest). A half signed-in session may only finish signing in, or sign out.
func StageAllows(st Stage, act Action) bool {
	switch st {
	case StageFull:
		return act != ActSecondFactor
	case StageMFA:
		return act == ActSecondFactor || act == ActSignOut
	case StageEnroll:
		return act == ActEnrollMFA || act == ActSignOut
	}
	return false
}

// CanOnVisit reports whether a user may do act on a visit whose clinician is clinicianID.
func CanOnVisit(u store.User, act Action, clinicianID string) bool {
	if !Can(u.Role, act) {
		return false
	}
	return u.ID == clinicianID || Can(u.Role, ActAllVisits)
}
