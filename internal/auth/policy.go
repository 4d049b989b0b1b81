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
	// ActSignedIn needs any signed-in account (reading one's own session, signing out).
	ActSignedIn Action = "signed_in"

	ActVisitList   Action = "visit.list"
	ActVisitCreate Action = "visit.create"
	ActVisitRead   Action = "visit.read"
	ActVisitLink   Action = "visit.link"
	ActVisitRevoke Action = "visit.revoke"
	ActVisitAdmit  Action = "visit.admit"
	ActVisitEnd    Action = "visit.end"
	ActVisitRemove Action = "visit.remove" // take a patient or guest out of the visit
	ActVisitJoin   Action = "visit.join"   // take part in the call with camera and microphone
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
	store.RoleAdmin: set(ActSignedIn, ActVisitList, ActVisitCreate, ActVisitRead, ActVisitLink, ActVisitRevoke,
		ActVisitAdmit, ActVisitEnd, ActVisitRemove, ActVisitJoin, ActVisitSignal, ActCreateForOthers, ActAllVisits),
	store.RoleClinician: set(ActSignedIn, ActVisitList, ActVisitCreate, ActVisitRead, ActVisitLink, ActVisitRevoke,
		ActVisitAdmit, ActVisitEnd, ActVisitRemove, ActVisitJoin, ActVisitSignal),
	// Front desk: books visits and sees who is waiting; no media, no admitting.
	store.RoleStaff: set(ActSignedIn, ActVisitList, ActVisitCreate, ActVisitRead, ActVisitLink, ActVisitRevoke,
		ActCreateForOthers, ActAllVisits),
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

// CanOnVisit reports whether a user may do act on a visit whose clinician is clinicianID.
func CanOnVisit(u store.User, act Action, clinicianID string) bool {
	if !Can(u.Role, act) {
		return false
	}
	return u.ID == clinicianID || Can(u.Role, ActAllVisits)
}
