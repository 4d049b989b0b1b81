package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/bench"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/visit"
)

// IO is the process's standard streams and environment, passed in so tests can run every
// command in-process.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Env    []string
}

// exit codes
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `Bedside: telehealth video visits in the browser, from one binary.

Usage:
  bedside serve [options]                 run the server (HTTP, STUN, database)
  bedside user add --email E --name N --role clinician|admin|staff
                                          create an account (password from stdin or a prompt)
  bedside user list [--json]              list accounts
  bedside user disable --email E          disable an account and end its sessions
  bedside user enable --email E           enable an account again
  bedside user signout --email E          end every session of an account now
  bedside user reset-mfa --email E        remove an account's second factors (a lost phone)
  bedside user break-glass --email E --for 1h --reason "..." [--revoke]
                                          give a clinician emergency access to every visit
  bedside visit create --clinician EMAIL [--patient-name N] [--at RFC3339] [--policy P] [--json]
                                          create a visit and print its links
  bedside visit list [--date YYYY-MM-DD] [--json]
                                          list a day's visits (UTC)
  bedside visit revoke VISIT_ID           make a visit's patient link (and guest links) stop working
  bedside visit invite VISIT_ID --role participant|observer [--json]
                                          make a guest link (caregiver, interpreter, specialist)
  bedside audit verify                    check the audit trail's hash chain and signed checkpoints
  bedside audit export --since TIME [--until TIME]
                                          the audit trail as JSON lines
  bedside audit checkpoint                sign and append a checkpoint of the audit trail now
  bedside bench [options]                 measure media forwarding under load (loopback; see --help)
  bedside help [command]                  this text, or a command's options

Every command takes the config options of "bedside serve --help" (at least --data-dir), also
settable as BEDSIDE_* environment variables or in a --config file.
`

// Main runs the bedside command with args (without the program name) and returns the exit
// code. ctx is cancelled on SIGINT or SIGTERM.
func Main(ctx context.Context, args []string, sio IO) int {
	if len(args) == 0 {
		fmt.Fprint(sio.Stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "" {
			return Main(ctx, []string{rest[0], "--help"}, sio)
		}
		fmt.Fprint(sio.Stdout, usage)
		return exitOK
	}
	if c, ok := commands[cmd]; ok {
		return c.run(ctx, rest, sio)
	}
	if strings.HasPrefix(cmd, "-") {
		// Options before the command ("bedside --data-dir DIR user list"): say where they go
		// rather than print the whole usage.
		fmt.Fprintf(sio.Stderr, "bedside: %s: options go after the command, as in\n  %s\n(\"bedside help\" lists the commands)\n", optionName(cmd), optionsAfter(args))
		return exitUsage
	}
	fmt.Fprintf(sio.Stderr, "bedside: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

// commands are the words Main takes first, and what runs each; those with subcommands
// (sub) take a second word.
var commands = map[string]struct {
	run func(context.Context, []string, IO) int
	sub bool
}{
	"serve": {runServe, false},
	"user":  {runUser, true},
	"visit": {runVisit, true},
	"audit": {runAudit, true},
	"bench": {runBench, false},
}

// optionsAfter is the form to suggest for a command line given with options before its
// command: the command (and its subcommand), then the options, moved after it. It shows the
// options' names only ("--turn-secret VALUE"): a value may be a secret, and this goes to a
// terminal or a log. Without a command in the line, "bedside serve" with the options.
func optionsAfter(args []string) string {
	out := []string{"bedside", "serve"}
	lead := args
	for i, a := range args {
		c, ok := commands[a]
		if !ok {
			continue
		}
		out, lead = []string{"bedside", a}, args[:i]
		rest := args[i+1:]
		if c.sub && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			out, rest = append(out, rest[0]), rest[1:]
		}
		if len(rest) > 0 {
			out = append(out, "...")
		}
		break
	}
	for _, a := range lead {
		out = append(out, optionName(a))
	}
	return strings.Join(out, " ")
}

// optionName is an argument as optionsAfter shows it: an option's name ("--a=VALUE" for
// "--a=b"), or VALUE.
func optionName(arg string) string {
	if !strings.HasPrefix(arg, "-") {
		return "VALUE"
	}
	if name, _, ok := strings.Cut(arg, "="); ok {
		return name + "=VALUE"
	}
	return arg
}

// runBench is "bedside bench": the load tool of internal/bench (docs/benchmarks.md).
func runBench(ctx context.Context, args []string, sio IO) int {
	return bench.Command(ctx, args, sio.Stdin, sio.Stdout, sio.Stderr)
}

// parse parses a command's flags, allowing positional arguments among them. It returns the
// positional arguments; done is true (with code) when the command must stop: --help or a
// bad option.
func parse(fs *config.FlagSet, name, synopsis string, args []string, sio IO) (cfg config.Config, pos []string, code int, done bool) {
	fs.SetOutput(io.Discard) // parse errors are printed below, once
	fs.Usage = func() {}
	var flat []string
	for {
		if err := fs.FlagSet.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(sio.Stdout)
				fs.PrintUsage(name, synopsis)
				return cfg, nil, exitOK, true
			}
			fmt.Fprintf(sio.Stderr, "bedside %s: %v (see bedside %s --help)\n", name, err, name)
			return cfg, nil, exitUsage, true
		}
		// Re-parse everything so that explicit flags are known to Parse below.
		rest := fs.Args()
		flat = append(flat, args[:len(args)-len(rest)]...)
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	cfg, err := fs.Parse(flat, sio.Env)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside %s: %v\n", name, err)
		return cfg, nil, exitUsage, true
	}
	return cfg, pos, exitOK, false
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runServe(ctx context.Context, args []string, sio IO) int {
	fs := config.NewFlagSet("serve", sio.Stderr)
	cfg, pos, code, done := parse(fs, "serve", "[options]", args, sio)
	if done {
		return code
	}
	if len(pos) > 0 {
		fmt.Fprintf(sio.Stderr, "bedside serve: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	log := newLogger(cfg, sio.Stderr)
	if p := gcPercent(cfg, sio.Env); p > 0 {
		debug.SetGCPercent(p)
	}
	svc, err := Start(ctx, cfg, log, Options{})
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitFail
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down: telling clients, closing connections", "timeout", cfg.ShutdownTimeout.String())
	case <-svc.Stopped():
		log.Error("web server stopped", "err", svc.Err())
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := svc.Shutdown(sctx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
		return exitFail
	}
	return exitOK
}

// openStore opens the database for a CLI command.
func openStore(ctx context.Context, cfg config.Config) (*sqlite.Store, error) {
	return sqlite.OpenWith(ctx, cfg.DataDir, sqlite.Options{DataKeyFile: cfg.DataKeyFile})
}

func runUser(ctx context.Context, args []string, sio IO) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(sio.Stderr, "Usage: bedside user add|list|disable|enable|signout|reset-mfa|break-glass [options]\n")
		return exitUsage
	}
	sub, args := args[0], args[1:]
	fs := config.NewFlagSet("user "+sub, sio.Stderr)
	var email, name, role, reason string
	var asJSON, revoke bool
	var dur time.Duration
	var synopsis string
	switch sub {
	case "add":
		fs.StringVar(&email, "email", "", "the account's email (its sign-in name)")
		fs.StringVar(&name, "name", "", "the name shown to patients and colleagues")
		fs.StringVar(&role, "role", "", "clinician, admin or staff")
		synopsis = "--email E --name N --role clinician|admin|staff [options]  (password on stdin, or prompted)"
	case "list":
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		synopsis = "[--json] [options]"
	case "disable", "enable", "signout", "reset-mfa":
		fs.StringVar(&email, "email", "", "the account's email")
		synopsis = "--email E [options]"
	case "break-glass":
		fs.StringVar(&email, "email", "", "the clinician's email")
		fs.DurationVar(&dur, "for", time.Hour, "how long the emergency access lasts (at most 12h)")
		fs.StringVar(&reason, "reason", "", "why (10 to 500 characters; shown to admins, kept out of the audit trail)")
		fs.BoolVar(&revoke, "revoke", false, "withdraw the clinician's emergency access now instead")
		synopsis = `--email E --for 1h --reason "..." | --email E --revoke [options]`
	default:
		fmt.Fprintf(sio.Stderr, "bedside user: unknown subcommand %q (add, list, disable, enable, signout, reset-mfa, break-glass)\n", sub)
		return exitUsage
	}
	cfg, _, code, done := parse(fs, "user "+sub, synopsis, args, sio)
	if done {
		return code
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user %s: %v\n", sub, err)
		return exitFail
	}
	defer st.Close()
	switch sub {
	case "add":
		return userAdd(ctx, st, cfg, email, name, role, sio)
	case "list":
		return userList(ctx, st, asJSON, sio)
	case "signout", "reset-mfa":
		return userSecurity(ctx, st, sub, email, sio)
	case "break-glass":
		return userBreakGlass(ctx, st, email, dur, reason, revoke, sio)
	default:
		return userSetDisabled(ctx, st, email, sub == "disable", sio)
	}
}

// userSecurity ends an account's sessions, or resets its second factors (which ends them
// too).
func userSecurity(ctx context.Context, st store.Store, sub, email string, sio IO) int {
	u, err := st.UserByEmail(ctx, auth.NormalizeEmail(email))
	if errors.Is(err, store.ErrNotFound) {
		fmt.Fprintf(sio.Stderr, "bedside user %s: no account with email %q\n", sub, email)
		return exitFail
	}
	if err == nil && sub == "reset-mfa" {
		err = st.DeleteSecondFactors(ctx, u.ID)
	}
	if err == nil {
		err = st.DeleteUserSessions(ctx, u.ID)
	}
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user %s: %v\n", sub, err)
		return exitFail
	}
	if sub == "reset-mfa" {
		recordCLI(ctx, st, audit.Event{Action: audit.MFAReset, SubjectID: u.ID}, sio)
		fmt.Fprintf(sio.Stdout, "Removed every second factor of %s and ended their sessions. At their next sign-in they set up a new one.\n", u.Email)
		return exitOK
	}
	recordCLI(ctx, st, audit.Event{Action: audit.SessionsEnded, SubjectID: u.ID}, sio)
	fmt.Fprintf(sio.Stdout, "Ended every session of %s. Calls in progress go on; anything new needs a fresh sign-in.\n", u.Email)
	return exitOK
}

// userBreakGlass grants (or withdraws) a clinician's emergency access to every visit.
func userBreakGlass(ctx context.Context, st store.Store, email string, d time.Duration, reason string, revoke bool, sio IO) int {
	u, err := st.UserByEmail(ctx, auth.NormalizeEmail(email))
	if errors.Is(err, store.ErrNotFound) {
		fmt.Fprintf(sio.Stderr, "bedside user break-glass: no account with email %q\n", email)
		return exitFail
	}
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user break-glass: %v\n", err)
		return exitFail
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	if revoke {
		n, err := st.RevokeBreakGlass(ctx, u.ID, now)
		if err != nil {
			fmt.Fprintf(sio.Stderr, "bedside user break-glass: %v\n", err)
			return exitFail
		}
		if n == 0 {
			fmt.Fprintf(sio.Stderr, "bedside user break-glass: %s has no emergency access to withdraw\n", u.Email)
			return exitFail
		}
		recordCLI(ctx, st, audit.Event{Action: audit.BreakGlassEnd, SubjectID: u.ID}, sio)
		fmt.Fprintf(sio.Stdout, "Withdrew the emergency access of %s.\n", u.Email)
		return exitOK
	}
	reason = strings.TrimSpace(reason)
	if n := len([]rune(reason)); n < 10 || n > 500 {
		fmt.Fprintln(sio.Stderr, "bedside user break-glass: --reason: say why, in 10 to 500 characters")
		return exitUsage
	}
	if d < time.Minute || d > 12*time.Hour {
		fmt.Fprintln(sio.Stderr, "bedside user break-glass: --for: from 1m to 12h")
		return exitUsage
	}
	if u.Role != store.RoleClinician || u.Disabled {
		fmt.Fprintln(sio.Stderr, "bedside user break-glass: emergency access is for active clinician accounts")
		return exitFail
	}
	g := store.BreakGlass{ID: store.NewID("brk"), UserID: u.ID, GrantedBy: audit.ActorFrom(cliContext(ctx)).ID, Reason: reason, CreatedAt: now, ExpiresAt: now.Add(d)}
	if err := st.CreateBreakGlass(ctx, g); err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user break-glass: %v\n", err)
		return exitFail
	}
	recordCLI(ctx, st, audit.Event{Action: audit.BreakGlassGrant, SubjectID: u.ID, Detail: map[string]string{"grant": g.ID, "minutes": fmt.Sprint(int(d.Minutes()))}}, sio)
	fmt.Fprintf(sio.Stdout, "BREAK-GLASS: %s may open every visit until %s. Every use is recorded; admins see the grant in the console.\n", u.Email, g.ExpiresAt.Format(time.RFC3339))
	return exitOK
}

func userAdd(ctx context.Context, st store.Store, cfg config.Config, email, name, role string, sio IO) int {
	email = auth.NormalizeEmail(email)
	if email == "" || !strings.Contains(email, "@") || len(email) > 254 {
		fmt.Fprintln(sio.Stderr, "bedside user add: --email: a valid email address is required")
		return exitUsage
	}
	name, err := visit.CleanName("--name", name, visit.MaxNameLength, true)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user add: %v\n", err)
		return exitUsage
	}
	r := store.Role(role)
	if r != store.RoleClinician && r != store.RoleAdmin && r != store.RoleStaff {
		fmt.Fprintln(sio.Stderr, "bedside user add: --role: must be clinician, admin or staff")
		return exitUsage
	}
	pw, err := readPassword(sio)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user add: %v\n", err)
		return exitUsage
	}
	if err := auth.CheckPasswordPolicy(pw); err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user add: %v\n", err)
		return exitUsage
	}
	hash, err := auth.HashPassword(pw)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user add: %v\n", err)
		return exitFail
	}
	u := store.User{ID: store.NewID("usr"), Email: email, Name: name, Role: r, PasswordHash: hash, CreatedAt: time.Now().UTC()}
	if err := st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			fmt.Fprintf(sio.Stderr, "bedside user add: an account with email %s already exists\n", email)
			return exitFail
		}
		fmt.Fprintf(sio.Stderr, "bedside user add: %v\n", err)
		return exitFail
	}
	recordCLI(ctx, st, audit.Event{Action: audit.UserCreate, SubjectID: u.ID, Detail: map[string]string{"role": string(u.Role)}}, sio)
	fmt.Fprintf(sio.Stdout, "Created %s %s <%s> (%s). They sign in at %s/signin.\n", u.Role, u.Name, u.Email, u.ID, cfg.PublicURL)
	if cfg.RequireMFA && (u.Role == store.RoleClinician || u.Role == store.RoleAdmin) {
		fmt.Fprintf(sio.Stdout, "A second factor is required (require-mfa). At the first sign-in, after the password, they are\n"+
			"asked to set one up before anything else: an authenticator app on their phone (they scan a QR code\n"+
			"and type the 6-digit code it shows) or a passkey. They then get 10 single-use recovery codes to\n"+
			"keep somewhere safe. Lost phone and codes: bedside user reset-mfa --email %s\n", u.Email)
	}
	return exitOK
}

// readPassword reads a new password: prompted twice without echo on a terminal, else the
// first line of stdin.
func readPassword(sio IO) (string, error) {
	if f, ok := sio.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(sio.Stderr, "Password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(sio.Stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(sio.Stderr, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(sio.Stderr)
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", errors.New("the passwords differ")
		}
		return string(a), nil
	}
	line, err := bufio.NewReader(io.LimitReader(sio.Stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password: give it on standard input (one line) or run in a terminal")
	}
	return line, nil
}

func userList(ctx context.Context, st store.Store, asJSON bool, sio IO) int {
	users, err := st.ListUsers(ctx)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user list: %v\n", err)
		return exitFail
	}
	if asJSON {
		type row struct {
			ID        string    `json:"id"`
			Email     string    `json:"email"`
			Name      string    `json:"name"`
			Role      string    `json:"role"`
			Disabled  bool      `json:"disabled"`
			CreatedAt time.Time `json:"created_at"`
		}
		out := []row{}
		for _, u := range users {
			out = append(out, row{u.ID, u.Email, u.Name, string(u.Role), u.Disabled, u.CreatedAt})
		}
		return printJSON(sio, out)
	}
	tw := tabwriter.NewWriter(sio.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tNAME\tROLE\tSTATUS\tCREATED")
	for _, u := range users {
		status := "active"
		if u.Disabled {
			status = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Email, u.Name, u.Role, status, u.CreatedAt.Format(time.DateOnly))
	}
	tw.Flush()
	return exitOK
}

func userSetDisabled(ctx context.Context, st store.Store, email string, disabled bool, sio IO) int {
	verb := map[bool]string{true: "disable", false: "enable"}[disabled]
	u, err := st.UserByEmail(ctx, auth.NormalizeEmail(email))
	if errors.Is(err, store.ErrNotFound) {
		fmt.Fprintf(sio.Stderr, "bedside user %s: no account with email %q\n", verb, email)
		return exitFail
	}
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user %s: %v\n", verb, err)
		return exitFail
	}
	if err := st.SetUserDisabled(ctx, u.ID, disabled); err != nil {
		fmt.Fprintf(sio.Stderr, "bedside user %s: %v\n", verb, err)
		return exitFail
	}
	action := audit.UserEnable
	if disabled {
		action = audit.UserDisable
		if err := st.DeleteUserSessions(ctx, u.ID); err != nil {
			fmt.Fprintf(sio.Stderr, "bedside user disable: %v\n", err)
			return exitFail
		}
	}
	recordCLI(ctx, st, audit.Event{Action: action, SubjectID: u.ID}, sio)
	fmt.Fprintf(sio.Stdout, "%sd %s\n", strings.ToUpper(verb[:1])+verb[1:], u.Email)
	return exitOK
}

func printJSON(sio IO, v any) int {
	enc := json.NewEncoder(sio.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(sio.Stderr, err)
		return exitFail
	}
	return exitOK
}

func runVisit(ctx context.Context, args []string, sio IO) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(sio.Stderr, "Usage: bedside visit create|list|revoke|invite [options]\n")
		return exitUsage
	}
	sub, args := args[0], args[1:]
	fs := config.NewFlagSet("visit "+sub, sio.Stderr)
	var clinician, patient, at, date, role, policy string
	var asJSON, privacy bool
	var synopsis string
	switch sub {
	case "create":
		fs.StringVar(&clinician, "clinician", "", "email of the clinician who holds the visit")
		fs.StringVar(&patient, "patient-name", "", "the patient's name, as the clinician will see it (optional)")
		fs.StringVar(&at, "at", "", "scheduled time, RFC 3339 (default: now)")
		fs.BoolVar(&privacy, "privacy", false, "privacy mode: relay-only ICE for everyone, so nobody's home IP address reaches the other party")
		fs.StringVar(&policy, "policy", "auto", "when the call goes through the SFU: auto (from the third person on), p2p (never) or sfu (always)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		synopsis = "--clinician EMAIL [--patient-name N] [--at RFC3339] [--privacy] [--policy auto|p2p|sfu] [--json] [options]"
	case "list":
		fs.StringVar(&date, "date", "", "the day, YYYY-MM-DD in UTC (default: today)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		synopsis = "[--date YYYY-MM-DD] [--json] [options]"
	case "revoke":
		synopsis = "VISIT_ID [options]"
	case "invite":
		fs.StringVar(&role, "role", "", "participant (camera and microphone, like the patient) or observer (sees and hears, publishes nothing)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		synopsis = "VISIT_ID --role participant|observer [--json] [options]"
	default:
		fmt.Fprintf(sio.Stderr, "bedside visit: unknown subcommand %q (create, list, revoke, invite)\n", sub)
		return exitUsage
	}
	cfg, pos, code, done := parse(fs, "visit "+sub, synopsis, args, sio)
	if done {
		return code
	}
	var scheduled time.Time
	switch sub {
	case "create":
		if clinician == "" {
			fmt.Fprintln(sio.Stderr, "bedside visit create: --clinician is required")
			return exitUsage
		}
		if at != "" {
			t, err := time.Parse(time.RFC3339, at)
			if err != nil {
				fmt.Fprintf(sio.Stderr, "bedside visit create: --at: %q is not an RFC 3339 time such as 2026-11-25T14:30:00+01:00\n", at)
				return exitUsage
			}
			scheduled = t
		}
		switch store.MediaPolicy(policy) {
		case store.PolicyAuto, store.PolicyP2P, store.PolicySFU:
		default:
			fmt.Fprintf(sio.Stderr, "bedside visit create: --policy: %q is not auto, p2p or sfu\n", policy)
			return exitUsage
		}
	case "revoke", "invite":
		if len(pos) != 1 {
			fmt.Fprintf(sio.Stderr, "bedside visit %s: give exactly one VISIT_ID\n", sub)
			return exitUsage
		}
		if sub == "invite" && role != string(store.GuestParticipant) && role != string(store.GuestObserver) {
			fmt.Fprintln(sio.Stderr, "bedside visit invite: --role: must be participant or observer")
			return exitUsage
		}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside visit %s: %v\n", sub, err)
		return exitFail
	}
	defer st.Close()
	m := visit.NewManager(st, visit.Config{LinkTTL: cfg.LinkTTL, Audit: audit.NewLog(st, nil)})
	ctx = cliContext(ctx)
	switch sub {
	case "create":
		return visitCreate(ctx, st, m, cfg, visit.NewVisit{PatientName: patient, ScheduledAt: scheduled, Privacy: privacy, Policy: store.MediaPolicy(policy)}, clinician, asJSON, sio)
	case "list":
		return visitList(ctx, m, date, asJSON, sio)
	case "invite":
		return visitInvite(ctx, m, cfg, pos[0], store.GuestRole(role), asJSON, sio)
	default:
		return visitRevoke(ctx, m, pos[0], sio)
	}
}

// visitInvite makes a guest link and prints it (the token is shown only now).
func visitInvite(ctx context.Context, m *visit.Manager, cfg config.Config, id string, role store.GuestRole, asJSON bool, sio IO) int {
	g, token, err := m.Invite(ctx, id, role)
	if err != nil {
		switch {
		case errors.Is(err, visit.ErrNotFound):
			fmt.Fprintf(sio.Stderr, "bedside visit invite: no visit %q\n", id)
		case errors.Is(err, visit.ErrVisitEnded):
			fmt.Fprintf(sio.Stderr, "bedside visit invite: visit %s has ended\n", id)
		case errors.Is(err, visit.ErrLinkRevoked):
			fmt.Fprintf(sio.Stderr, "bedside visit invite: the links of visit %s are revoked; make a new patient link first\n", id)
		default:
			fmt.Fprintf(sio.Stderr, "bedside visit invite: %v\n", err)
		}
		return exitFail
	}
	out := struct {
		VisitID   string    `json:"visit_id"`
		GuestID   string    `json:"guest_id"`
		Role      string    `json:"role"`
		GuestURL  string    `json:"guest_url"`
		ExpiresAt time.Time `json:"expires_at"`
	}{g.VisitID, g.ID, string(g.Role), cfg.PublicURL + "/v/" + token, g.ExpiresAt}
	if asJSON {
		return printJSON(sio, out)
	}
	what := "takes part with camera and microphone"
	if role == store.GuestObserver {
		what = "sees and hears the visit; camera and microphone stay off"
	}
	fmt.Fprintf(sio.Stdout, "Guest link (%s: %s; send it to the guest, it is shown only now): %s\nThe guest goes through the device check and waits to be admitted. The link expires at %s and is revoked with the visit.\n",
		role, what, out.GuestURL, g.ExpiresAt.Format(time.RFC3339))
	return exitOK
}

func visitCreate(ctx context.Context, st store.Store, m *visit.Manager, cfg config.Config, nv visit.NewVisit, clinician string, asJSON bool, sio IO) int {
	u, err := st.UserByEmail(ctx, auth.NormalizeEmail(clinician))
	if errors.Is(err, store.ErrNotFound) {
		fmt.Fprintf(sio.Stderr, "bedside visit create: --clinician: no account with email %q\n", clinician)
		return exitFail
	}
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside visit create: %v\n", err)
		return exitFail
	}
	nv.ClinicianID = u.ID
	v, token, err := m.Create(ctx, nv)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside visit create: %v\n", err)
		return exitFail
	}
	out := struct {
		VisitID       string    `json:"visit_id"`
		PatientURL    string    `json:"patient_url"`
		ClinicianURL  string    `json:"clinician_url"`
		ScheduledAt   time.Time `json:"scheduled_at"`
		LinkExpiresAt time.Time `json:"link_expires_at"`
		Privacy       bool      `json:"privacy"`
		Policy        string    `json:"policy"`
	}{v.ID, cfg.PublicURL + "/v/" + token, cfg.PublicURL + "/console/visits/" + v.ID, v.ScheduledAt, v.LinkExpiresAt, v.Privacy, string(v.Policy)}
	if asJSON {
		return printJSON(sio, out)
	}
	if v.Privacy {
		fmt.Fprintln(sio.Stdout, "Privacy mode: media goes only through the relay; nobody sees another's IP address.")
	}
	fmt.Fprintf(sio.Stdout, "Visit %s with %s at %s\nPatient link (send it to the patient; it is shown only now): %s\nClinician link: %s\nThe patient link expires at %s.\n",
		v.ID, u.Name, v.ScheduledAt.Format(time.RFC3339), out.PatientURL, out.ClinicianURL, v.LinkExpiresAt.Format(time.RFC3339))
	return exitOK
}

func visitList(ctx context.Context, m *visit.Manager, date string, asJSON bool, sio IO) int {
	day := time.Now().UTC().Truncate(24 * time.Hour)
	if date != "" {
		d, err := time.Parse(time.DateOnly, date)
		if err != nil {
			fmt.Fprintf(sio.Stderr, "bedside visit list: --date: %q is not YYYY-MM-DD\n", date)
			return exitUsage
		}
		day = d
	}
	vs, err := m.List(ctx, "", day, day.AddDate(0, 0, 1))
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside visit list: %v\n", err)
		return exitFail
	}
	if asJSON {
		type row struct {
			VisitID     string    `json:"visit_id"`
			State       string    `json:"state"`
			ClinicianID string    `json:"clinician_id"`
			ScheduledAt time.Time `json:"scheduled_at"`
			Revoked     bool      `json:"revoked"`
		}
		out := []row{}
		for _, v := range vs {
			out = append(out, row{v.ID, string(v.State), v.ClinicianID, v.ScheduledAt, v.RevokedAt != nil})
		}
		return printJSON(sio, out)
	}
	tw := tabwriter.NewWriter(sio.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VISIT\tSCHEDULED (UTC)\tSTATE\tLINK")
	for _, v := range vs {
		link := "valid"
		if v.RevokedAt != nil {
			link = "revoked"
		} else if time.Now().After(v.LinkExpiresAt) {
			link = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.ID, v.ScheduledAt.Format("2006-01-02 15:04"), v.State, link)
	}
	tw.Flush()
	return exitOK
}

func visitRevoke(ctx context.Context, m *visit.Manager, id string, sio IO) int {
	if _, err := m.Revoke(ctx, id); err != nil {
		if errors.Is(err, visit.ErrNotFound) {
			fmt.Fprintf(sio.Stderr, "bedside visit revoke: no visit %q\n", id)
			return exitFail
		}
		fmt.Fprintf(sio.Stderr, "bedside visit revoke: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(sio.Stdout, "Revoked the patient link and the guest links of visit %s. A running server disconnects the patient and guests within a few seconds.\n", id)
	return exitOK
}

// gcPercent is the GC target serve sets (0: none, Go's own): --gc-percent, unless GOGC is
// in the environment. The SFU's forwarding slows down while a collection runs; rarer
// collections cost memory (docs/benchmarks.md, "Allocations and GC").
func gcPercent(cfg config.Config, env []string) int {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOGC=") {
			return 0
		}
	}
	return cfg.GCPercent
}
