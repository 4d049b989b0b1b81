package keyfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bedside/bedside/internal/keyfile"
)

func TestReadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "k.key")
	calls := 0
	mk := func() ([]byte, error) { calls++; return []byte("secret"), nil }
	data, created, err := keyfile.ReadOrCreate(path, mk)
	if err != nil || !created || string(data) != "secret" {
		t.Fatalf("first: %q %v %v", data, created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	data, created, err = keyfile.ReadOrCreate(path, mk)
	if err != nil || created || string(data) != "secret" || calls != 1 {
		t.Fatalf("second: %q %v %v (calls %d)", data, created, err, calls)
	}
}

func TestLooseModeRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o602} {
		path := filepath.Join(t.TempDir(), "k.key")
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := keyfile.Read(path); !errors.Is(err, keyfile.ErrLooseMode) {
			t.Errorf("mode %#o: err = %v, want ErrLooseMode", mode, err)
		}
		if _, _, err := keyfile.ReadOrCreate(path, func() ([]byte, error) { return []byte("y"), nil }); !errors.Is(err, keyfile.ErrLooseMode) {
			t.Errorf("mode %#o: ReadOrCreate err = %v, want ErrLooseMode", mode, err)
		}
	}
	path := filepath.Join(t.TempDir(), "k.key")
	os.WriteFile(path, []byte("x"), 0o400)
	if _, err := keyfile.Read(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}
