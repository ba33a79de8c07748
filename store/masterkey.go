package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// MasterKeySize is the size of a node's master key: AES-256.
const MasterKeySize = 32

// MasterKeyEnv is the environment variable LoadMasterKey reads when no key file is configured.
const MasterKeyEnv = "QKMS_MASTER_KEY"

// LoadMasterKey loads a node's 32-byte master key.
//
// If path is not empty it names a file holding the key as 64 hex characters (surrounding white
// space ignored) or as exactly 32 raw bytes. The file must not be readable, writable or
// executable by group or others (mode & 0o077 == 0, i.e. chmod 600), because whoever reads it can
// unseal every key of the node. If path is empty the key is read from the environment variable
// QKMS_MASTER_KEY as 64 hex characters.
//
// Errors never contain key bytes.
func LoadMasterKey(path string) ([]byte, error) {
	if path == "" {
		v, ok := os.LookupEnv(MasterKeyEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("store: no master key: set %s to 64 hex characters or configure a key file (create one with `qkms certs`)", MasterKeyEnv)
		}
		key, err := parseMasterKey([]byte(v), false)
		if err != nil {
			return nil, fmt.Errorf("store: master key from %s: %w", MasterKeyEnv, err)
		}
		return key, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: master key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: master key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: master key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("store: master key file %s has mode %#o, accessible to group or others; run `chmod 600 %s`", path, perm, path)
	}
	// A key file is small; refuse anything that is clearly not one before reading it whole.
	if fi.Size() > 1024 {
		return nil, fmt.Errorf("store: master key file %s is %d bytes; want 64 hex characters or 32 raw bytes", path, fi.Size())
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil && len(data) > 0 {
		return nil, fmt.Errorf("store: master key file %s: %w", path, err)
	}
	defer clear(data)
	key, err := parseMasterKey(data, true)
	if err != nil {
		return nil, fmt.Errorf("store: master key file %s: %w", path, err)
	}
	return key, nil
}

var errMasterKeyFormat = errors.New("want 64 hex characters (256 bits)")

// parseMasterKey decodes a master key: 64 hex characters, or, if allowRaw, exactly 32 raw bytes.
// Its errors never echo the input (encoding/hex's do), so no key bytes reach a log.
func parseMasterKey(data []byte, allowRaw bool) ([]byte, error) {
	if allowRaw && len(data) == MasterKeySize {
		return bytes.Clone(data), nil
	}
	s := bytes.TrimSpace(data)
	if len(s) != 2*MasterKeySize {
		return nil, errMasterKeyFormat
	}
	key := make([]byte, MasterKeySize)
	if _, err := hex.Decode(key, s); err != nil {
		clear(key)
		return nil, errMasterKeyFormat
	}
	return key, nil
}

// GenerateMasterKey writes a fresh random master key to path as 64 hex characters and a
// newline, with mode 0600. It refuses to overwrite an existing file: replacing a node's master
// key makes its whole store unreadable.
func GenerateMasterKey(path string) error {
	key := make([]byte, MasterKeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("store: generate master key: %w", err)
	}
	text := make([]byte, 2*MasterKeySize+1)
	defer clear(text)
	hex.Encode(text, key)
	text[len(text)-1] = '\n'

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("store: generate master key: %w", err)
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("store: generate master key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("store: generate master key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: generate master key %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so a created or renamed entry in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync directory %s: %w", dir, err)
	}
	return nil
}

// The check value lets Open tell a wrong master key from a good one before any key is read:
// a GCM seal of a fixed label under the master key.
var (
	checkLabel = []byte("qkms/store master-key check v1")
	checkAAD   = []byte("qkms/store/check/v1")
)

func (db *DB) newCheck() ([]byte, error) {
	nonce := make([]byte, db.master.NonceSize(), db.master.NonceSize()+len(checkLabel)+db.master.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("store: master-key check: %w", err)
	}
	return db.master.Seal(nonce, nonce, checkLabel, checkAAD), nil
}

func (db *DB) verifyCheck(check []byte) error {
	ns := db.master.NonceSize()
	if len(check) < ns {
		return ErrWrongMasterKey
	}
	pt, err := db.master.Open(nil, check[:ns], check[ns:], checkAAD)
	if err != nil || !bytes.Equal(pt, checkLabel) {
		return ErrWrongMasterKey
	}
	return nil
}
