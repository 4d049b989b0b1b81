package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bedside/bedside/internal/app"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store/sqlite"
)

type run struct {
	code           int
	stdout, stderr string
}

func bedside(t *testing.T, stdin string, env []string, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	code := app.Main(context.Background(), args, app.IO{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Env: env})
	return run{code, out.String(), errb.String()}
}

func TestCLIUsersAndVisits(t *testing.T) {
	dir := t.TempDir()
	d := "--data-dir=" + dir

	r := bedside(t, "a-long-password\n", nil, "user", "add", d, "--email", "Rivera@Clinic.Example", "--name", "Dr Rivera", "--role", "clinician")
	if r.code != 0 || !strings.Contains(r.stdout, "rivera@clinic.example") {
		t.Fatalf("user add: %+v", r)
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"duplicate", "a-long-password\n", []string{"--email", "rivera@clinic.example", "--name", "X", "--role", "staff"}, "already exists"},
		{"short password", "short\n", []string{"--email", "s@clinic.example", "--name", "S", "--role", "staff"}, "password must be"},
		{"no password", "", []string{"--email", "s@clinic.example", "--name", "S", "--role", "staff"}, "no password"},
		{"bad role", "a-long-password\n", []string{"--email", "s@clinic.example", "--name", "S", "--role", "patient"}, "--role"},
		{"bad email", "a-long-password\n", []string{"--email", "nope", "--name", "S", "--role", "staff"}, "--email"},
		{"no name", "a-long-password\n", []string{"--email", "s@clinic.example", "--role", "staff"}, "--name"},
	} {
		r := bedside(t, tc.stdin, nil, append([]string{"user", "add", d}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: code %d, stderr %q, want %q", tc.name, r.code, r.stderr, tc.want)
		}
	}

	r = bedside(t, "", nil, "user", "list", d, "--json")
	var users []struct{ Email, Role string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &users) != nil || len(users) != 1 || users[0].Role != "clinician" {
		t.Fatalf("user list: %+v", r)
	}
	// The stored hash is argon2id and verifies.
	st, err := sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.UserByEmail(context.Background(), "rivera@clinic.example")
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := auth.VerifyPassword(u.PasswordHash, "a-long-password"); !ok || !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
		t.Fatalf("stored hash %q", u.PasswordHash)
	}

	r = bedside(t, "", nil, "visit", "create", d, "--public-url", "https://visits.clinic.example", "--clinician", "rivera@clinic.example", "--patient-name", "Ada", "--at", "2030-01-02T10:00:00+01:00", "--json")
	var v struct {
		VisitID      string `json:"visit_id"`
		PatientURL   string `json:"patient_url"`
		ClinicianURL string `json:"clinician_url"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
		t.Fatalf("visit create: %+v", r)
	}
	tok := strings.TrimPrefix(v.PatientURL, "https://visits.clinic.example/v/")
	if !auth.WellFormedToken(tok) || v.ClinicianURL != "https://visits.clinic.example/console/visits/"+v.VisitID {
		t.Fatalf("visit create printed %+v", v)
	}
	// Privacy mode from the command line: kept with the visit.
	r = bedside(t, "", nil, "visit", "create", d, "--clinician", "rivera@clinic.example", "--privacy", "--json")
	var pv struct {
		VisitID string `json:"visit_id"`
		Privacy bool   `json:"privacy"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pv) != nil || !pv.Privacy {
		t.Fatalf("visit create --privacy: %+v", r)
	}
	st, err = sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	pvisit, err := st.VisitByID(context.Background(), pv.VisitID)
	st.Close()
	if err != nil || !pvisit.Privacy {
		t.Fatalf("stored privacy visit: %+v, %v", pvisit, err)
	}
	r = bedside(t, "", nil, "visit", "list", d, "--date", "2030-01-02", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, v.VisitID) {
		t.Fatalf("visit list: %+v", r)
	}
	// A guest link from the command line.
	r = bedside(t, "", nil, "visit", "invite", v.VisitID, d, "--public-url", "https://visits.clinic.example", "--role", "observer", "--json")
	var g struct {
		GuestURL string `json:"guest_url"`
		Role     string `json:"role"`
		GuestID  string `json:"guest_id"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &g) != nil || g.Role != "observer" ||
		!auth.WellFormedToken(strings.TrimPrefix(g.GuestURL, "https://visits.clinic.example/v/")) || !strings.HasPrefix(g.GuestID, "gst_") {
		t.Fatalf("visit invite: %+v", r)
	}
	if r := bedside(t, "", nil, "visit", "invite", v.VisitID, d, "--role", "participant"); r.code != 0 || !strings.Contains(r.stdout, "/v/") {
		t.Fatalf("visit invite (text): %+v", r)
	}
	r = bedside(t, "", nil, "visit", "revoke", v.VisitID, d)
	if r.code != 0 {
		t.Fatalf("visit revoke: %+v", r)
	}
	st, err = sqlite.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	guests, err := st.VisitGuestLinks(context.Background(), v.VisitID)
	st.Close()
	if err != nil || len(guests) != 2 || guests[0].RevokedAt == nil || guests[1].RevokedAt == nil {
		t.Fatalf("guest links after revoke: %+v, %v", guests, err)
	}
	r = bedside(t, "", nil, "visit", "list", d, "--date", "2030-01-02")
	if !strings.Contains(r.stdout, "revoked") {
		t.Fatalf("visit list after revoke: %+v", r)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown clinician", []string{"visit", "create", d, "--clinician", "nobody@x.example"}, "no account"},
		{"bad time", []string{"visit", "create", d, "--clinician", "rivera@clinic.example", "--at", "tomorrow"}, "RFC 3339"},
		{"no clinician", []string{"visit", "create", d}, "--clinician is required"},
		{"bad policy", []string{"visit", "create", d, "--clinician", "rivera@clinic.example", "--policy", "mesh"}, `--policy: "mesh" is not auto, p2p or sfu`},
		{"revoke unknown", []string{"visit", "revoke", "vst_nope", d}, "no visit"},
		{"revoke no id", []string{"visit", "revoke", d}, "VISIT_ID"},
		{"invite without role", []string{"visit", "invite", v.VisitID, d}, "--role"},
		{"invite bad role", []string{"visit", "invite", v.VisitID, d, "--role", "patient"}, "--role"},
		{"invite unknown visit", []string{"visit", "invite", "vst_nope", d, "--role", "observer"}, "no visit"},
		{"invite revoked visit", []string{"visit", "invite", v.VisitID, d, "--role", "observer"}, "revoked"},
	} {
		r := bedside(t, "", nil, tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: code %d, stderr %q, want %q", tc.name, r.code, r.stderr, tc.want)
		}
	}

	r = bedside(t, "", nil, "user", "disable", d, "--email", "rivera@clinic.example")
	if r.code != 0 {
		t.Fatalf("user disable: %+v", r)
	}
	r = bedside(t, "", nil, "user", "list", d)
	if !strings.Contains(r.stdout, "disabled") {
		t.Fatalf("user list after disable: %+v", r)
	}
	r = bedside(t, "", nil, "visit", "create", d, "--clinician", "rivera@clinic.example")
	if r.code == 0 || !strings.Contains(r.stderr, "not an active clinician") {
		t.Fatalf("visit for a disabled clinician: %+v", r)
	}
}

func TestCLIHelpAndConfigErrors(t *testing.T) {
	r := bedside(t, "", nil, "serve", "--help")
	if r.code != 0 {
		t.Fatalf("serve --help: %+v", r)
	}
	for _, opt := range []string{"config", "http-addr", "public-url", "data-dir", "tls-cert", "tls-key", "stun-addr", "ice-host", "link-ttl", "session-idle", "session-lifetime", "shutdown-timeout", "log-level", "log-format"} {
		env := "BEDSIDE_" + strings.ToUpper(strings.ReplaceAll(opt, "-", "_"))
		if !strings.Contains(r.stdout, "--"+opt) || !strings.Contains(r.stdout, env) {
			t.Errorf("serve --help lacks --%s or %s", opt, env)
		}
	}
	if r := bedside(t, "", nil, "help"); r.code != 0 || !strings.Contains(r.stdout, "bedside serve") {
		t.Fatalf("help: %+v", r)
	}
	if r := bedside(t, "", nil, "frobnicate"); r.code != 2 || !strings.Contains(r.stderr, "unknown command") {
		t.Fatalf("unknown command: %+v", r)
	}
	// Options before the command: where they go, the options' values (a secret, maybe) not
	// repeated, and not the whole usage.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", "/srv/s3cret", "user", "list", "--json"}, "bedside user list ... --data-dir VALUE\n"},
		{[]string{"--turn-secret=s3cret", "visit", "invite", "vst_1", "--role", "observer"}, "bedside visit invite ... --turn-secret=VALUE\n"},
		{[]string{"--log-level", "debug"}, "bedside serve --log-level VALUE\n"},
	} {
		r := bedside(t, "", nil, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, "options go after the command") || !strings.Contains(r.stderr, tc.want) ||
			strings.Contains(r.stderr, "s3cret") || strings.Contains(r.stderr, "Usage:") {
			t.Errorf("%v: want exit 2 and %q, got %+v", tc.args, tc.want, r)
		}
	}

	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "bedside.json")
	for _, tc := range []struct {
		name string
		file string
		env  []string
		args []string
		want string
	}{
		{"unknown file key", `{"http_adr":"127.0.0.1:1"}`, nil, nil, `unknown key "http_adr"`},
		{"bad file value", `{"link-ttl":"2 days"}`, nil, nil, `"link-ttl"`},
		{"unknown env", `{}`, []string{"BEDSIDE_HTTP_ADR=x"}, nil, "BEDSIDE_HTTP_ADR"},
		{"bad env value", `{}`, []string{"BEDSIDE_SESSION_IDLE=soon"}, nil, "BEDSIDE_SESSION_IDLE"},
		{"bad flag value", `{}`, nil, []string{"--log-level", "loud"}, "log-level"},
		{"bad public url", `{}`, nil, []string{"--public-url", "https://x.example/path"}, "public-url"},
	} {
		if err := os.WriteFile(cfgFile, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"serve", "--config", cfgFile, "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--stun-addr", "off"}, tc.args...)
		r := bedside(t, "", tc.env, args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: code %d, stderr %q, want %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
}

func TestCLISecurityCommands(t *testing.T) {
	dir := t.TempDir()
	d := "--data-dir=" + dir
	r := bedside(t, "a-long-password\n", nil, "user", "add", d, "--email", "rivera@clinic.example", "--name", "Dr Rivera", "--role", "clinician")
	if r.code != 0 || !strings.Contains(r.stdout, "second factor is required") || !strings.Contains(r.stdout, "recovery codes") {
		t.Fatalf("user add does not say what enrollment needs: %+v", r)
	}
	r = bedside(t, "a-long-password\n", nil, "user", "add", d, "--require-mfa=false", "--email", "b@clinic.example", "--name", "B", "--role", "clinician")
	if r.code != 0 || strings.Contains(r.stdout, "second factor") {
		t.Fatalf("user add without require-mfa: %+v", r)
	}
	r = bedside(t, "a-long-password\n", nil, "user", "add", d, "--email", "desk@clinic.example", "--name", "Desk", "--role", "staff")
	if r.code != 0 || strings.Contains(r.stdout, "second factor is required") {
		t.Fatalf("user add of staff: %+v", r)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"signout", []string{"user", "signout", d, "--email", "rivera@clinic.example"}, 0, "Ended every session"},
		{"signout unknown", []string{"user", "signout", d, "--email", "nobody@clinic.example"}, 1, "no account"},
		{"reset-mfa", []string{"user", "reset-mfa", d, "--email", "rivera@clinic.example"}, 0, "Removed every second factor"},
		{"break-glass without reason", []string{"user", "break-glass", d, "--email", "rivera@clinic.example", "--for", "1h"}, 2, "--reason"},
		{"break-glass too long", []string{"user", "break-glass", d, "--email", "rivera@clinic.example", "--for", "24h", "--reason", "covering the ward tonight"}, 2, "--for"},
		{"break-glass for staff", []string{"user", "break-glass", d, "--email", "desk@clinic.example", "--reason", "covering the ward tonight"}, 1, "clinician"},
		{"break-glass", []string{"user", "break-glass", d, "--email", "rivera@clinic.example", "--for", "2h", "--reason", "covering the ward tonight"}, 0, "BREAK-GLASS"},
		{"break-glass revoke", []string{"user", "break-glass", d, "--email", "rivera@clinic.example", "--revoke"}, 0, "Withdrew"},
		{"break-glass revoke again", []string{"user", "break-glass", d, "--email", "rivera@clinic.example", "--revoke"}, 1, "no emergency access"},
	} {
		r := bedside(t, "", nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.want) {
			t.Errorf("%s: %+v, want code %d and %q", tc.name, r, tc.code, tc.want)
		}
	}
	r = bedside(t, "", nil, "audit", "export", d, "--since", "2000-01-01")
	for _, action := range []string{"admin.user_create", "auth.sessions_ended", "admin.mfa_reset", "breakglass.grant", "breakglass.revoke"} {
		if !strings.Contains(r.stdout, `"action":"`+action+`"`) {
			t.Errorf("the trail lacks %s", action)
		}
	}
	if strings.Contains(r.stdout, "covering the ward") {
		t.Error("the break-glass reason is in the trail")
	}
	if r := bedside(t, "", nil, "audit", "verify", d); r.code != 0 {
		t.Errorf("verify: %+v", r)
	}
}
