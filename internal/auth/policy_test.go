package auth_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
)

// matrix is the role x action policy, written out: a change to the policy must change this
// table too, on purpose. Columns: admin, clinician, staff, patient, guest.
var matrix = []struct {
	act                                     auth.Action
	admin, clinician, staff, patient, guest bool
}{
	{auth.ActNone, true, true, true, true, true},
	{auth.ActSignedIn, true, true, true, false, false},
	{auth.ActSignOut, true, true, true, false, false},
	{auth.ActSecondFactor, true, true, true, false, false},
	{auth.ActEnrollMFA, true, true, true, false, false},
	{auth.ActManageMFA, true, true, true, false, false},
	{auth.ActVisitList, true, true, true, false, false},
	{auth.ActVisitCreate, true, true, true, false, false},
	{auth.ActVisitRead, true, true, true, false, false},
	{auth.ActVisitLink, true, true, true, false, false},
	{auth.ActVisitRevoke, true, true, true, false, false},
	{auth.ActVisitInvite, true, true, true, false, false},
	{auth.ActVisitAdmit, true, true, false, false, false},
	{auth.ActVisitEnd, true, true, false, false, false},
	{auth.ActVisitRemove, true, true, false, false, false},
	{auth.ActVisitJoin, true, true, false, false, false},
	{auth.ActVisitSignal, true, true, false, true, true},
	{auth.ActCreateForOthers, true, false, true, false, false},
	{auth.ActAllVisits, true, false, true, false, false},
	{auth.ActUserAdmin, true, false, false, false, false},
	{auth.ActBreakGlass, true, false, false, false, false},
	{auth.ActAuditRead, true, false, false, false, false},
}

// emergency is what break-glass access allows: every visit action, no administration.
var emergency = map[auth.Action]bool{
	auth.ActNone:      true,
	auth.ActVisitRead: true, auth.ActVisitLink: true, auth.ActVisitRevoke: true, auth.ActVisitInvite: true, auth.ActVisitAdmit: true,
	auth.ActVisitEnd: true, auth.ActVisitRemove: true, auth.ActVisitJoin: true, auth.ActVisitSignal: true,
}

func TestEmergencyPolicy(t *testing.T) {
	clin := store.User{ID: "usr_c", Role: store.RoleClinician}
	for _, row := range matrix {
		if got := auth.CanOnVisitEmergency(clin, row.act); got != emergency[row.act] {
			t.Errorf("break-glass %s: %v, want %v", row.act, got, emergency[row.act])
		}
		// Only clinicians get break-glass; staff never get media through it.
		for _, r := range []store.Role{store.RoleStaff, store.RoleAdmin, store.RolePatient, store.RoleGuest} {
			if auth.CanOnVisitEmergency(store.User{Role: r}, row.act) {
				t.Errorf("break-glass for a %s allows %s", r, row.act)
			}
		}
	}
}

// TestStageAllows: a session half-way through signing in may only finish it or sign out.
func TestStageAllows(t *testing.T) {
	for _, row := range matrix {
		for _, tc := range []struct {
			stage auth.Stage
			want  bool
		}{
			{auth.StageFull, row.act != auth.ActSecondFactor},
			{auth.StageMFA, row.act == auth.ActSecondFactor || row.act == auth.ActSignOut},
			{auth.StageEnroll, row.act == auth.ActEnrollMFA || row.act == auth.ActSignOut},
			{"", false},
			{"bogus", false},
		} {
			if got := auth.StageAllows(tc.stage, row.act); got != tc.want {
				t.Errorf("StageAllows(%q, %s) = %v, want %v", tc.stage, row.act, got, tc.want)
			}
		}
	}
}

func TestPolicyMatrix(t *testing.T) {
	for _, row := range matrix {
		for _, cell := range []struct {
			role store.Role
			want bool
		}{
			{store.RoleAdmin, row.admin},
			{store.RoleClinician, row.clinician},
			{store.RoleStaff, row.staff},
			{store.RolePatient, row.patient},
			{store.RoleGuest, row.guest},
		} {
			t.Run(string(cell.role)+"/"+string(row.act), func(t *testing.T) {
				if got := auth.Can(cell.role, row.act); got != cell.want {
					t.Errorf("Can(%s, %s) = %v, want %v", cell.role, row.act, got, cell.want)
				}
			})
		}
	}
}

func TestUnknownRoleAndAction(t *testing.T) {
	for _, row := range matrix {
		want := row.act == auth.ActNone
		for _, role := range []store.Role{"", "root", "Admin"} {
			if got := auth.Can(role, row.act); got != want {
				t.Errorf("Can(%q, %s) = %v, want %v", role, row.act, got, want)
			}
		}
	}
	for _, role := range []store.Role{store.RoleAdmin, store.RoleClinician, store.RoleStaff, store.RolePatient, store.RoleGuest} {
		if auth.Can(role, "visit.delete") || auth.Can(role, "") {
			t.Errorf("%s may do an action that does not exist", role)
		}
	}
}

// TestMatrixCoversEveryAction: an Action added to policy.go without a row here fails.
func TestMatrixCoversEveryAction(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "policy.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Action" {
			return true
		}
		for _, v := range vs.Values {
			if lit, ok := v.(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				declared = append(declared, s)
			}
		}
		return true
	})
	var tested []string
	for _, row := range matrix {
		tested = append(tested, string(row.act))
	}
	slices.Sort(declared)
	slices.Sort(tested)
	if len(declared) < 10 || !slices.Equal(declared, tested) {
		t.Errorf("policy.go declares actions %v;\nthe matrix tests %v", declared, tested)
	}
}

func TestCanOnVisit(t *testing.T) {
	own := store.NewID("usr")
	other := store.NewID("usr")
	users := map[string]store.User{
		"clinician": {ID: own, Role: store.RoleClinician},
		"admin":     {ID: store.NewID("usr"), Role: store.RoleAdmin},
		"staff":     {ID: store.NewID("usr"), Role: store.RoleStaff},
	}
	visitActs := []auth.Action{auth.ActVisitRead, auth.ActVisitLink, auth.ActVisitRevoke, auth.ActVisitAdmit, auth.ActVisitEnd, auth.ActVisitRemove, auth.ActVisitJoin, auth.ActVisitSignal}
	for _, tc := range []struct {
		user    string
		visitOf string // the visit's clinician id
		allowed []auth.Action
	}{
		{"clinician", own, visitActs},
		{"clinician", other, nil},
		{"admin", own, visitActs},
		{"admin", other, visitActs},
		{"staff", own, []auth.Action{auth.ActVisitRead, auth.ActVisitLink, auth.ActVisitRevoke}},
		{"staff", other, []auth.Action{auth.ActVisitRead, auth.ActVisitLink, auth.ActVisitRevoke}},
		// A visit with no clinician recorded is nobody's own.
		{"clinician", "", nil},
	} {
		whose := "own visit"
		if tc.visitOf != own {
			whose = "another's visit"
		}
		for _, act := range visitActs {
			want := slices.Contains(tc.allowed, act)
			t.Run(tc.user+"/"+strings.ReplaceAll(whose, " ", "_")+"/"+string(act), func(t *testing.T) {
				if got := auth.CanOnVisit(users[tc.user], act, tc.visitOf); got != want {
					t.Errorf("%s on %s: CanOnVisit(%s) = %v, want %v", tc.user, whose, act, got, want)
				}
			})
		}
	}
}
