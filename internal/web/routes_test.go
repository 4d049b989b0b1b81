package web

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
)

// openRoutes is every route anyone may call without signing in. A new route is not open
// until it is added here, with a reason.
var openRoutes = []string{
	"GET /healthz",           // load balancers
	"GET /readyz",            // load balancers
	"POST /api/v1/session",   // signing in
	"POST /api/v1/link",      // the link's token is the authorisation
	"POST /api/v1/link/join", // the link's token is the authorisation
	"POST /api/v1/link/ice",  // the link's token is the authorisation (device check's short TURN credential)
	"GET /api/v1/ws",         // cookies identify the caller; the signalling policy checks each message
	"GET /{$}",               // redirects to the console
	"GET /signin",            // the sign-in page
	"GET /v/{token}",         // the patient page; its token is the authorisation
	"GET /static/",           // scripts, styles, icons
}

// isAPI reports whether a route answers in JSON (and belongs in docs/api.md).
func isAPI(pattern string) bool {
	_, path, _ := strings.Cut(pattern, " ")
	return strings.HasPrefix(path, "/api/") || path == "/healthz" || path == "/readyz"
}

func TestEveryRouteHasPolicy(t *testing.T) {
	h := newHarness(t, options{inProcess: true})
	var open []string
	seen := map[string]bool{}
	for _, rt := range h.srv.routes() {
		if seen[rt.pattern] {
			t.Errorf("%s: listed twice", rt.pattern)
		}
		seen[rt.pattern] = true
		if rt.action == "" {
			t.Errorf("%s: no action", rt.pattern)
			continue
		}
		if rt.handle == nil {
			t.Errorf("%s: no handler", rt.pattern)
		}
		if rt.action == auth.ActNone {
			open = append(open, rt.pattern)
			continue
		}
		// An action no role may do makes a dead route (or a typo in the policy).
		if !slices.ContainsFunc(store.UserRoles, func(r store.Role) bool { return auth.Can(r, rt.action) }) {
			t.Errorf("%s: action %q is allowed to no account role", rt.pattern, rt.action)
		}
		// A refused JSON caller must get JSON, and a refused page visitor the sign-in page.
		if want := map[bool]kind{true: api, false: page}[isAPI(rt.pattern)]; rt.kind != want {
			t.Errorf("%s: kind %v, want %v", rt.pattern, rt.kind, want)
		}
	}
	slices.Sort(open)
	want := slices.Clone(openRoutes)
	slices.Sort(want)
	if !slices.Equal(open, want) {
		t.Errorf("routes open to anyone:\n  %s\nwant exactly:\n  %s\n(a new open route must be added to openRoutes, with a reason)",
			strings.Join(open, "\n  "), strings.Join(want, "\n  "))
	}
}

// docRoute matches a row of the routes table in docs/api.md: | `METHOD /path` | ...
var docRoute = regexp.MustCompile("^\\| `([A-Z]+ /[^`]*)`")

func TestAPIDocCoversRoutes(t *testing.T) {
	f, err := os.Open("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := docRoute.FindStringSubmatch(sc.Text()); m != nil {
			if documented[m[1]] {
				t.Errorf("docs/api.md documents %s twice", m[1])
			}
			documented[m[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(documented) == 0 {
		t.Fatal("no routes found in docs/api.md: has the table's format changed?")
	}
	h := newHarness(t, options{inProcess: true})
	served := map[string]bool{}
	for _, rt := range h.srv.routes() {
		if isAPI(rt.pattern) {
			served[rt.pattern] = true
			if !documented[rt.pattern] {
				t.Errorf("%s is served but missing from docs/api.md", rt.pattern)
			}
		}
	}
	for p := range documented {
		if !served[p] {
			t.Errorf("docs/api.md documents %s, which routes.go does not serve", p)
		}
	}
}
