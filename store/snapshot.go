package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Snapshot writes a consistent copy of the whole store file to w (bbolt Tx.WriteTo under one
// read transaction, so writers are not blocked) and returns the bytes written. The copy holds
// only sealed material and the raft index it reflects; it is what raft ships to a lagging node.
func (db *DB) Snapshot(w io.Writer) (int64, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bolt == nil {
		return 0, ErrClosed
	}
	if err := db.flush(); err != nil {
		return 0, err
	}
	var n int64
	err := db.bolt.View(func(btx *bolt.Tx) error {
		var err error
		n, err = btx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: snapshot %s: %w", db.path, err)
	}
	return n, nil
}

// Restore replaces the whole state with a snapshot read from r. The snapshot is written to a
// temporary file beside the store, fsynced, and checked to be a bbolt file sealed under this
// node's master key (ErrWrongMasterKey otherwise) before it atomically replaces the store by
// rename; a failure before the rename leaves the DB as it was. The DB stays usable.
func (db *DB) Restore(r io.Reader) error {
	tmp := db.path + ".restore"
	if err := writeSynced(tmp, r); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore %s: %w", db.path, err)
	}
	if err := db.validateSnapshot(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore %s: snapshot rejected: %w", db.path, err)
	}

	db.mu.Lock()
	defer db.mu.Unlock()
	if db.bolt == nil {
		os.Remove(tmp)
		return ErrClosed
	}
	// Deferred updates are replaced with everything else; committing them first leaves bbolt
	// no open transaction to wait for.
	if err := db.flush(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore %s: %w", db.path, err)
	}
	if err := db.bolt.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore %s: close: %w", db.path, err)
	}
	db.bolt = nil
	// Data keys of the old state must not outlive it.
	db.keys.clear()
	renameErr := os.Rename(tmp, db.path)
	if renameErr == nil {
		renameErr = syncDir(filepath.Dir(db.path))
	}
	// Reopen whatever is at path now: the snapshot, or the old file if the rename failed.
	b, err := db.openBolt(db.path)
	if err != nil {
		return fmt.Errorf("store: restore %s: reopen: %w", db.path, errors.Join(renameErr, err))
	}
	db.bolt = b
	if renameErr != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore %s: %w", db.path, renameErr)
	}
	return nil
}

// validateSnapshot checks that the file at path is a consistent bbolt file written by a store
// sealed under this node's master key. (bbolt would initialise an empty file as a fresh
// database, which must not replace a node's state.)
func (db *DB) validateSnapshot(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return errors.New("empty snapshot")
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if err != nil {
		return err
	}
	defer b.Close()
	return b.View(func(btx *bolt.Tx) error {
		meta := btx.Bucket(bucketMeta)
		if meta == nil || meta.Get(keyCheck) == nil {
			return errors.New("not a qkms store (no master-key check record)")
		}
		if err := db.verifyCheck(meta.Get(keyCheck)); err != nil {
			return err
		}
		// Drain the whole channel: Check's goroutine uses btx until it closes it.
		var first error
		for err := range btx.Check() {
			if first == nil {
				first = fmt.Errorf("inconsistent bbolt file: %w", err)
			}
		}
		return first
	})
}

func writeSynced(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
