package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qkms/qkms/kms"
)

func TestSnapshotRestore(t *testing.T) {
	key := randomBytes(t, MasterKeySize)
	src, err := Open(filepath.Join(t.TempDir(), "src.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := uint64(1); i <= 20; i++ {
		if err := applyNumbered(src, i); err != nil {
			t.Fatal(err)
		}
	}
	var snap bytes.Buffer
	n, err := src.Snapshot(&snap)
	if err != nil || n != int64(snap.Len()) {
		t.Fatalf("Snapshot = %d, %v (buffer %d)", n, err, snap.Len())
	}

	dst, err := Open(filepath.Join(t.TempDir(), "dst.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for i := uint64(1); i <= 30; i++ { // a different, longer history that the snapshot replaces
		if err := applyNumbered(dst, i); err != nil {
			t.Fatal(err)
		}
	}
	mustView(t, dst, func(tx kms.Tx) error { _, err := tx.ReadMaterial(peerB, "b-24", 0, 1); return err })

	// Rejected snapshots leave the DB as it was.
	other, _ := openTestDB(t)
	if err := applyNumbered(other, 1); err != nil {
		t.Fatal(err)
	}
	var foreign bytes.Buffer
	if _, err := other.Snapshot(&foreign); err != nil {
		t.Fatal(err)
	}
	rejects := map[string][]byte{
		"other master key": foreign.Bytes(),
		"garbage":          bytes.Repeat([]byte("x"), 8192),
		"truncated":        snap.Bytes()[:4096],
	}
	for name, data := range rejects {
		if err := dst.Restore(bytes.NewReader(data)); err == nil {
			t.Fatalf("Restore accepted %s", name)
		} else if name == "other master key" && !errors.Is(err, ErrWrongMasterKey) {
			t.Fatalf("Restore of %s: err = %v, want ErrWrongMasterKey", name, err)
		}
		if idx, _ := dst.AppliedIndex(); idx != 30 {
			t.Fatalf("after rejected %s: applied %d, want 30", name, idx)
		}
	}

	if err := dst.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if n := dst.keys.len(); n != 0 {
		t.Fatalf("%d data keys of the replaced state still cached", n)
	}
	if got := checkNumbered(t, dst); got != 20 {
		t.Fatalf("restored applied index %d, want 20", got)
	}
	// Still usable, and durable: continue the history and reopen.
	for i := uint64(21); i <= 25; i++ {
		if err := applyNumbered(dst, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst, err = Open(dst.Path(), key)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkNumbered(t, dst); got != 25 {
		t.Fatalf("applied after restore, updates and reopen = %d, want 25", got)
	}
	if err := dst.Restore(strings.NewReader("")); err == nil {
		t.Fatal("Restore accepted an empty snapshot")
	}
}
