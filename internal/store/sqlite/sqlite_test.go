package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/store/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestReopenKeepsDataAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{ID: "usr_1", Email: "a@example.org", Name: "A", Role: store.RoleAdmin, PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, dir) // migrations run again and must be a no-op
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.UserByEmail(ctx, "a@example.org"); err != nil {
		t.Fatalf("user lost after reopen: %v", err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "bedside.db"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %v, want %v", path, got, want)
		}
	}
}
