package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/bedside/bedside/internal/keyfile"
)

// A checkpoint is a signed statement "the trail held Size rows and its last hash was Hash",
// in the C2SP tlog-checkpoint layout (origin line, size, base64 hash, then one extension
// line with the time) and signed as a C2SP signed note with Ed25519
// (golang.org/x/mod/sumdb/note). Checkpoints are appended to a file an operator ships
// elsewhere (and logged): rows deleted from the end of the trail are then caught against the
// last checkpoint, and rows rewritten with fresh hashes against any checkpoint after them.
type Checkpoint struct {
	Origin string
	Size   int64
	Hash   []byte
	Time   time.Time
}

// Text is the checkpoint body that is signed.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\ntime %s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash), c.Time.UTC().Format(time.RFC3339))
}

func parseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, errors.New("too few lines")
	}
	var c Checkpoint
	c.Origin = lines[0]
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 {
		return Checkpoint{}, fmt.Errorf("bad size %q", lines[1])
	}
	c.Size = n
	if c.Hash, err = base64.StdEncoding.DecodeString(lines[2]); err != nil || len(c.Hash) != len(Genesis) {
		return Checkpoint{}, fmt.Errorf("bad hash %q", lines[2])
	}
	for _, l := range lines[3:] {
		if v, ok := strings.CutPrefix(l, "time "); ok {
			if c.Time, err = time.Parse(time.RFC3339, v); err != nil {
				return Checkpoint{}, fmt.Errorf("bad time %q", v)
			}
		}
	}
	return c, nil
}

// LoadSigner reads the checkpoint signing key from path (a note signer key,
// "PRIVATE+KEY+name+hash+key"), creating it on first use with mode 0600; the matching
// verifier key is written beside it as path+".pub". A key file others can read is refused.
func LoadSigner(path string) (signer note.Signer, vkey string, created bool, err error) {
	data, created, err := keyfile.ReadOrCreate(path, func() ([]byte, error) {
		var id [4]byte
		rand.Read(id[:])
		skey, _, err := note.GenerateKey(rand.Reader, "bedside-audit-"+hex.EncodeToString(id[:]))
		return []byte(skey + "\n"), err
	})
	if err != nil {
		return nil, "", false, fmt.Errorf("audit key: %w", err)
	}
	skey := strings.TrimSpace(string(data))
	if signer, err = note.NewSigner(skey); err != nil {
		return nil, "", false, fmt.Errorf("audit key %s: not a signer key: %w", path, err)
	}
	if vkey, err = verifierKey(skey); err != nil {
		return nil, "", false, fmt.Errorf("audit key %s: %w", path, err)
	}
	if err := os.WriteFile(path+".pub", []byte(vkey+"\n"), 0o644); err != nil && created {
		return nil, "", false, fmt.Errorf("audit public key: %w", err)
	}
	return signer, vkey, created, nil
}

// verifierKey derives the public verifier key of a note signer key.
func verifierKey(skey string) (string, error) {
	// PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return "", errors.New("malformed signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 33 || raw[0] != 1 {
		return "", errors.New("not an Ed25519 signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// NewVerifier parses a verifier key ("name+hash+key").
func NewVerifier(vkey string) (note.Verifier, error) {
	return note.NewVerifier(strings.TrimSpace(vkey))
}

// Head is what a checkpointer reads of the trail: its size and last hash.
type Head interface {
	AuditHead(ctx context.Context) (size int64, hash []byte, err error)
}

// Checkpointer appends signed checkpoints to a file.
type Checkpointer struct {
	head   Head
	signer note.Signer
	path   string
	now    func() time.Time

	mu   sync.Mutex
	last int64 // size of the last checkpoint written (or found in the file)
}

// NewCheckpointer returns a Checkpointer writing to path. now may be nil (time.Now).
func NewCheckpointer(head Head, signer note.Signer, path string, now func() time.Time) *Checkpointer {
	if now == nil {
		now = time.Now
	}
	c := &Checkpointer{head: head, signer: signer, path: path, now: now, last: -1}
	if data, err := os.ReadFile(path); err == nil {
		if cps, err := parseNotes(data, nil); err == nil && len(cps) > 0 {
			c.last = cps[len(cps)-1].Size
		}
	}
	return c
}

// Write signs a checkpoint of the trail as it is now and appends it to the file. Unless
// force is set, nothing is written when the trail has not grown since the last one.
// written is false when there was nothing to write.
func (c *Checkpointer) Write(ctx context.Context, force bool) (cp Checkpoint, written bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	size, hash, err := c.head.AuditHead(ctx)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint: %w", err)
	}
	if size == 0 || (!force && size == c.last) {
		return Checkpoint{}, false, nil
	}
	cp = Checkpoint{Origin: c.signer.Name(), Size: size, Hash: hash, Time: c.now().UTC().Truncate(time.Second)}
	msg, err := note.Sign(&note.Note{Text: cp.Text()}, c.signer)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint: %w", err)
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint file: %w", err)
	}
	// One write of the whole note and its separating blank line: appends of this size are
	// not interleaved with another process's.
	_, err = f.Write(append(msg, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("checkpoint file: %w", err)
	}
	c.last = size
	return cp, true, nil
}

// Path is the checkpoint file.
func (c *Checkpointer) Path() string { return c.path }

// ReadCheckpoints reads a checkpoint file and checks every signature with v. A missing
// file is no checkpoints.
func ReadCheckpoints(path string, v note.Verifier) ([]Checkpoint, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseNotes(data, v)
}

// parseNotes splits a file of signed notes (each followed by a blank line) and opens each;
// with v nil the signatures are not checked.
func parseNotes(data []byte, v note.Verifier) ([]Checkpoint, error) {
	var out []Checkpoint
	rest := data
	for n := 1; len(bytes.TrimSpace(rest)) > 0; n++ {
		rest = bytes.TrimLeft(rest, "\n")
		// text, blank line, signature lines, blank line
		i := bytes.Index(rest, []byte("\n\n"))
		if i < 0 {
			return out, fmt.Errorf("checkpoint %d: truncated", n)
		}
		j := bytes.Index(rest[i+2:], []byte("\n\n"))
		end := len(rest)
		if j >= 0 {
			end = i + 2 + j + 1
		}
		msg := rest[:end]
		rest = rest[end:]
		var text string
		if v != nil {
			nt, err := note.Open(msg, note.VerifierList(v))
			if err != nil {
				return out, fmt.Errorf("checkpoint %d: signature does not verify with key %s: %w", n, v.Name(), err)
			}
			text = nt.Text
		} else {
			text = string(msg[:i+1])
		}
		cp, err := parseCheckpoint(text)
		if err != nil {
			return out, fmt.Errorf("checkpoint %d: %w", n, err)
		}
		out = append(out, cp)
	}
	return out, nil
}
