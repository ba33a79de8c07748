package store

import (
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/qkms/qkms/kms"
)

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// openTestDB opens a fresh store in a temporary directory with a random master key.
func openTestDB(t testing.TB) (*DB, []byte) {
	t.Helper()
	key := randomBytes(t, MasterKeySize)
	db, err := Open(filepath.Join(t.TempDir(), "node.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, key
}

func mustUpdate(t testing.TB, db *DB, index uint64, fn func(kms.Tx) error) {
	t.Helper()
	if err := db.Update(index, fn); err != nil {
		t.Fatalf("update %d: %v", index, err)
	}
}

func mustView(t testing.TB, db *DB, fn func(kms.Tx) error) {
	t.Helper()
	if err := db.View(fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}
