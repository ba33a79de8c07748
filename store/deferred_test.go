package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// openDeferred opens a fresh store whose raft updates commit every maxUpdates updates or after
// maxDelay.
func openDeferred(t *testing.T, maxUpdates int, maxDelay time.Duration) (*DB, string, []byte) {
	t.Helper()
	key := randomBytes(t, MasterKeySize)
	path := filepath.Join(t.TempDir(), "node.db")
	db, err := Open(path, key, WithDeferredCommit(maxUpdates, maxDelay))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path, key
}

// pending reports whether db holds applied updates it has not committed.
func (db *DB) pending() bool {
	db.wmu.Lock()
	defer db.wmu.Unlock()
	return db.open != nil
}

func putReservations(ids ...string) func(kms.Tx) error {
	return func(tx kms.Tx) error {
		for _, id := range ids {
			if err := tx.PutReservation(reservation(id, t0.Add(time.Hour), kms.KeyIssued)); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestDeferredCommit checks what a deferred update is: applied at once, committed with the
// ones after it, visible to every read (which commits it first), and to MissingReservations
// without a commit.
func TestDeferredCommit(t *testing.T) {
	db, _, _ := openDeferred(t, 3, time.Hour)
	mustUpdate(t, db, 1, putReservations("k1"))
	mustUpdate(t, db, 2, putReservations("k2"))
	if !db.pending() {
		t.Fatal("two updates of three committed already")
	}
	missing, err := db.MissingReservations([]string{"k1", "k2", "k3"})
	if err != nil || !slices.Equal(missing, []string{"k3"}) {
		t.Fatalf("MissingReservations = %v, %v; want [k3]", missing, err)
	}
	if !db.pending() {
		t.Fatal("MissingReservations committed the deferred updates")
	}
	mustUpdate(t, db, 3, putReservations("k3"))
	if db.pending() {
		t.Fatal("the third update did not commit the transaction")
	}
	if missing, err := db.MissingReservations([]string{"k1", "k2", "k3", "k4"}); err != nil || !slices.Equal(missing, []string{"k4"}) {
		t.Fatalf("after the commit, MissingReservations = %v, %v; want [k4]", missing, err)
	}

	mustUpdate(t, db, 4, putReservations("k4"))
	if applied, err := db.AppliedIndex(); err != nil || applied != 4 {
		t.Fatalf("AppliedIndex = %d, %v; want 4", applied, err)
	}
	if db.pending() {
		t.Fatal("AppliedIndex read the file without committing the deferred update first")
	}
	mustUpdate(t, db, 5, putReservations("k5"))
	mustView(t, db, func(tx kms.Tx) error {
		if r, err := tx.Reservation("k5"); err != nil || r == nil {
			t.Errorf("View does not see the deferred update: %v, %v", r, err)
		}
		return nil
	})
	// An index already applied is refused without harm to the updates waiting.
	mustUpdate(t, db, 6, putReservations("k6"))
	if err := db.Update(6, putReservations("k7")); !errors.Is(err, ErrStaleIndex) {
		t.Fatalf("Update of an applied index: %v, want ErrStaleIndex", err)
	}
	if missing, _ := db.MissingReservations([]string{"k6", "k7"}); !slices.Equal(missing, []string{"k7"}) {
		t.Fatalf("after a stale update, missing %v; want [k7]", missing)
	}
}

// TestDeferredCommitTimer checks that a deferred update is committed maxDelay after it, with no
// read and no update after it.
func TestDeferredCommitTimer(t *testing.T) {
	db, _, _ := openDeferred(t, 1000, 20*time.Millisecond)
	mustUpdate(t, db, 1, putReservations("k1"))
	if !db.pending() {
		t.Fatal("the update was committed at once")
	}
	// bbolt lets one write transaction run at a time: this one begins once the timer has
	// committed the deferred one.
	begun := make(chan error, 1)
	go func() {
		btx, err := db.bolt.Begin(true)
		if err == nil {
			err = btx.Rollback()
		}
		begun <- err
	}()
	select {
	case err := <-begun:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deferred update was not committed within 10 s of a 20 ms delay")
	}
	if db.pending() {
		t.Fatal("a write transaction began while the deferred one was open")
	}
}

// TestDeferredCommitRestart checks that Close commits the deferred updates, and that a crash
// (the process ends with the transaction open) leaves the file at the last commit, from which
// raft applies the rest again.
func TestDeferredCommitRestart(t *testing.T) {
	db, path, key := openDeferred(t, 100, time.Hour)
	mustUpdate(t, db, 1, putReservations("k1"))
	mustUpdate(t, db, 2, putReservations("k2"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, key, WithDeferredCommit(100, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if applied, _ := db.AppliedIndex(); applied != 2 {
		t.Fatalf("after Close and Open, applied index %d, want 2", applied)
	}
	mustUpdate(t, db, 3, putReservations("k3"))
	// A crash: the open transaction is never committed (what the process's end does to it).
	db.wmu.Lock()
	db.endOpenLocked(false)
	db.wmu.Unlock()
	db.bolt.Close()
	db.bolt = nil

	db, err = Open(path, key, WithDeferredCommit(100, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if applied, _ := db.AppliedIndex(); applied != 2 {
		t.Fatalf("after a crash, applied index %d, want 2 (the last commit)", applied)
	}
	if missing, _ := db.MissingReservations([]string{"k2", "k3"}); !slices.Equal(missing, []string{"k3"}) {
		t.Fatalf("after a crash, missing %v; want [k3]", missing)
	}
	mustUpdate(t, db, 3, putReservations("k3")) // raft applies index 3 again
	if missing, _ := db.MissingReservations([]string{"k3"}); len(missing) != 0 {
		t.Fatalf("index 3 applied again, missing %v", missing)
	}
}

// TestDeferredCommitFailure checks that an update failing after others were deferred rolls all
// of them back and stops the DB: the FSM stops on it and raft applies them again at the next
// start.
func TestDeferredCommitFailure(t *testing.T) {
	db, _, _ := openDeferred(t, 100, time.Hour)
	mustUpdate(t, db, 1, putReservations("k1"))
	boom := errors.New("boom")
	if err := db.Update(2, func(tx kms.Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing update: %v", err)
	}
	if err := db.Update(3, putReservations("k3")); !errors.Is(err, boom) {
		t.Fatalf("update after a failure: %v, want the failure", err)
	}
	if err := db.View(func(kms.Tx) error { return nil }); !errors.Is(err, boom) {
		t.Fatalf("view after a failure: %v, want the failure", err)
	}
	if missing, _ := db.MissingReservations([]string{"k1"}); !slices.Equal(missing, []string{"k1"}) {
		t.Fatalf("the update before the failure was not rolled back: missing %v", missing)
	}
}

// TestDeferredCommitSnapshot checks that a snapshot holds the deferred updates.
func TestDeferredCommitSnapshot(t *testing.T) {
	db, _, key := openDeferred(t, 100, time.Hour)
	mustUpdate(t, db, 1, putReservations("k1"))
	var snap bytes.Buffer
	if _, err := db.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if db.pending() {
		t.Fatal("Snapshot copied the file without committing the deferred update")
	}
	// What the snapshot holds, restored into another node of the site (same master key).
	other, err := Open(filepath.Join(t.TempDir(), "other.db"), key, WithDeferredCommit(100, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	if missing, _ := other.MissingReservations([]string{"k1"}); len(missing) != 0 {
		t.Fatalf("the snapshot lacks the deferred update: missing %v", missing)
	}
}

// TestDeferredCommitPlainUpdate checks that an Update without an index commits the deferred
// updates before its own.
func TestDeferredCommitPlainUpdate(t *testing.T) {
	db, _, _ := openDeferred(t, 100, time.Hour)
	mustUpdate(t, db, 1, putReservations("k1"))
	mustUpdate(t, db, 0, putReservations("k2"))
	if db.pending() {
		t.Fatal("an Update without index left the deferred update open")
	}
	if missing, _ := db.MissingReservations([]string{"k1", "k2"}); len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	if applied, _ := db.AppliedIndex(); applied != 1 {
		t.Fatalf("applied index %d, want 1", applied)
	}
}
