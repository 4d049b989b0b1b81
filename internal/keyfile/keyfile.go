// Package keyfile reads and creates the secret key files Bedside keeps beside its data: the
// application key that encrypts patient fields and the audit checkpoint signing key. A key
// file is created on first start with mode 0600, and one that others can read (any group or
// world bit set) is refused: a key anyone on the machine can read protects nothing.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrLooseMode says a key file can be read by others than its owner.
var ErrLooseMode = errors.New("key file is readable by others")

// Read returns the contents of the key file at path, refusing one whose mode lets the group
// or others in.
func Read(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s (mode %#o; run chmod 600 %s): %w", path, perm, path, ErrLooseMode)
	}
	return os.ReadFile(path)
}

// ReadOrCreate returns the key in path; when the file does not exist it is created, with
// mode 0600 (and its directory with 0700), holding what create returns. created says which
// happened.
func ReadOrCreate(path string, create func() ([]byte, error)) (data []byte, created bool, err error) {
	data, err = Read(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return data, false, err
	}
	if data, err = create(); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process made it first: use theirs
		data, err = Read(path)
		return data, false, err
	}
	if err != nil {
		return nil, false, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return nil, false, err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, false, err
	}
	return data, true, nil
}
