package app

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/store"
)

// cliActor is the actor of changes made from the command line: the operator at the
// machine, who holds the data directory.
var cliActor = audit.Actor{ID: "cli", Role: "system"}

// cliContext carries the CLI actor, for the parts that record with the context's actor.
func cliContext(ctx context.Context) context.Context {
	a := cliActor
	if u := os.Getenv("USER"); u != "" && len(u) < 32 {
		a.ID = "cli:" + u
	}
	return audit.WithActor(ctx, a)
}

// recordCLI records an event done from the command line.
func recordCLI(ctx context.Context, st store.Store, e audit.Event, sio IO) {
	a := audit.ActorFrom(cliContext(ctx))
	e.ActorID, e.ActorRole = a.ID, a.Role
	if err := audit.NewLog(st, nil).Record(ctx, e); err != nil {
		fmt.Fprintf(sio.Stderr, "warning: the audit trail could not record %s: %v\n", e.Action, err)
	}
}

func runAudit(ctx context.Context, args []string, sio IO) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(sio.Stderr, "Usage: bedside audit verify|export|checkpoint [options]\n")
		return exitUsage
	}
	sub, args := args[0], args[1:]
	fs := config.NewFlagSet("audit "+sub, sio.Stderr)
	var since, until, pubFile string
	var synopsis string
	switch sub {
	case "verify":
		fs.StringVar(&pubFile, "public-key", "", "verifier key of the checkpoint signer (default: <audit-key-file>.pub, else derived from audit-key-file)")
		synopsis = "[--audit-checkpoint-file F] [--public-key F] [options]"
	case "export":
		fs.StringVar(&since, "since", "", "first time to export, RFC 3339 or YYYY-MM-DD (UTC) (required)")
		fs.StringVar(&until, "until", "", "export rows before this time, RFC 3339 or YYYY-MM-DD (default: all)")
		synopsis = "--since TIME [--until TIME] [options]   (JSON lines on standard output)"
	case "checkpoint":
		synopsis = "[options]   (sign and append a checkpoint of the trail now)"
	default:
		fmt.Fprintf(sio.Stderr, "bedside audit: unknown subcommand %q (verify, export, checkpoint)\n", sub)
		return exitUsage
	}
	cfg, _, code, done := parse(fs, "audit "+sub, synopsis, args, sio)
	if done {
		return code
	}
	var from, to time.Time
	if sub == "export" {
		var err error
		if since == "" {
			fmt.Fprintln(sio.Stderr, "bedside audit export: --since is required (for everything: --since 2000-01-01)")
			return exitUsage
		}
		if from, err = parseWhen(since); err != nil {
			fmt.Fprintf(sio.Stderr, "bedside audit export: --since: %v\n", err)
			return exitUsage
		}
		if until != "" {
			if to, err = parseWhen(until); err != nil {
				fmt.Fprintf(sio.Stderr, "bedside audit export: --until: %v\n", err)
				return exitUsage
			}
		}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside audit %s: %v\n", sub, err)
		return exitFail
	}
	defer st.Close()
	switch sub {
	case "verify":
		return auditVerify(ctx, st, cfg, pubFile, sio)
	case "export":
		return auditExport(ctx, st, from, to, sio)
	default:
		signer, _, _, err := audit.LoadSigner(cfg.AuditKeyFile)
		if err != nil {
			fmt.Fprintf(sio.Stderr, "bedside audit checkpoint: %v\n", err)
			return exitFail
		}
		cp, written, err := audit.NewCheckpointer(st, signer, cfg.AuditCheckpointFile, nil).Write(ctx, true)
		if err != nil {
			fmt.Fprintf(sio.Stderr, "bedside audit checkpoint: %v\n", err)
			return exitFail
		}
		if !written {
			fmt.Fprintln(sio.Stdout, "The audit trail is empty: nothing to sign.")
			return exitOK
		}
		fmt.Fprintf(sio.Stdout, "Checkpoint of %d rows (hash %s) appended to %s\n", cp.Size, base64.StdEncoding.EncodeToString(cp.Hash), cfg.AuditCheckpointFile)
		return exitOK
	}
}

func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2026-11-25T09:00:00Z) nor YYYY-MM-DD", s)
}

// checkpointVerifier returns the verifier of the checkpoint signatures: from the file
// given, else <audit-key-file>.pub, else derived from the signing key itself.
func checkpointVerifier(cfg config.Config, pubFile string) (note.Verifier, error) {
	path := pubFile
	if path == "" {
		path = cfg.AuditKeyFile + ".pub"
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && pubFile == "" {
		if _, vkey, _, err := audit.LoadSigner(cfg.AuditKeyFile); err == nil {
			return audit.NewVerifier(vkey)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return audit.NewVerifier(string(data))
}

func auditVerify(ctx context.Context, st store.Store, cfg config.Config, pubFile string, sio IO) int {
	v, err := checkpointVerifier(cfg, pubFile)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside audit verify: %v\n", err)
		return exitFail
	}
	cps, cpErr := audit.ReadCheckpoints(cfg.AuditCheckpointFile, v)
	rep, err := audit.Verify(ctx, st, cps)
	if err != nil {
		fmt.Fprintf(sio.Stderr, "bedside audit verify: %v\n", err)
		return exitFail
	}
	ok := rep.OK() && cpErr == nil
	if cpErr != nil {
		fmt.Fprintf(sio.Stdout, "FAIL: checkpoint file %s: %v\n", cfg.AuditCheckpointFile, cpErr)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(sio.Stdout, "FAIL: %s\n", p.Message)
	}
	if ok {
		fmt.Fprintf(sio.Stdout, "OK: %d rows, the hash chain is intact", rep.Rows)
		if rep.Checkpoints > 0 {
			lc := rep.LastCheckpoint
			fmt.Fprintf(sio.Stdout, "; %d signed checkpoints match (the last: %d rows at %s)", rep.Checkpoints, lc.Size, lc.Time.UTC().Format(time.RFC3339))
			if rep.Rows > lc.Size {
				fmt.Fprintf(sio.Stdout, "; rows %d to %d are newer than the last checkpoint", lc.Size+1, rep.Rows)
			}
		} else {
			fmt.Fprintf(sio.Stdout, "; no checkpoints in %s, so rows deleted from the end could not be noticed", cfg.AuditCheckpointFile)
		}
		fmt.Fprintln(sio.Stdout, ".")
		return exitOK
	}
	return exitFail
}

func auditExport(ctx context.Context, st store.Store, from, to time.Time, sio IO) int {
	w := bufio.NewWriter(sio.Stdout)
	enc := json.NewEncoder(w)
	var last, n int64
	for {
		batch, err := st.AuditEntries(ctx, last, 1000)
		if err != nil {
			fmt.Fprintf(sio.Stderr, "bedside audit export: %v\n", err)
			return exitFail
		}
		for _, en := range batch {
			last = en.Seq
			if en.Time.Before(from) || (!to.IsZero() && !en.Time.Before(to)) {
				continue
			}
			if err := enc.Encode(en.ToJSON()); err != nil {
				fmt.Fprintf(sio.Stderr, "bedside audit export: %v\n", err)
				return exitFail
			}
			n++
		}
		if len(batch) < 1000 {
			break
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(sio.Stderr, "bedside audit export: %v\n", err)
		return exitFail
	}
	detail := map[string]string{"since": from.UTC().Format(time.RFC3339), "rows": fmt.Sprint(n)}
	if !to.IsZero() {
		detail["until"] = to.UTC().Format(time.RFC3339)
	}
	recordCLI(ctx, st, audit.Event{Action: audit.AuditExport, Detail: detail}, sio)
	return exitOK
}
