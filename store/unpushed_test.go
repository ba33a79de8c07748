package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/qkms/qkms/kms"
)

// unpushedIDs lists the index through Unpushed, and checks that UnpushedCount agrees.
func unpushedIDs(t *testing.T, db *DB) (ids []string) {
	t.Helper()
	if err := db.Unpushed(func(r *kms.Reservation) bool { ids = append(ids, r.KeyID); return true }); err != nil {
		t.Fatal(err)
	}
	if count, err := db.UnpushedCount(); err != nil || count != len(ids) {
		t.Fatalf("UnpushedCount: %d, %v; Unpushed lists %d", count, err, len(ids))
	}
	return ids
}

// The index follows every write of a reservation: it lists exactly this site's issued
// reservations the peer has not acknowledged, and survives a reopen, a reopen without
// WithSelf and a file of an earlier version that has no index.
func TestUnpushedIndex(t *testing.T) {
	path, key := filepath.Join(t.TempDir(), "node.db"), randomBytes(t, MasterKeySize)
	open := func(opts ...Option) *DB {
		db, err := Open(path, key, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open(WithSelf("KME-A"))
	exp := t0.Add(time.Hour)
	peers := reservation("k0-peer", exp, kms.KeyIssued) // issued by the peer, stored here
	peers.Owner, peers.Peer = "KME-B", "KME-A"
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		return errors.Join(
			tx.PutReservation(reservation("k1", exp, kms.KeyIssued)),
			tx.PutReservation(reservation("k2", exp, kms.KeyIssued)),
			tx.PutReservation(reservation("k3", exp, kms.KeyIssued)),
			tx.PutReservation(reservation("k4", exp, kms.KeyIssued)),
			tx.PutReservation(reservation("k5", exp, kms.KeyFetched)),
			tx.PutReservation(peers))
	})
	if got := unpushedIDs(t, db); !slices.Equal(got, []string{"k1", "k2", "k3", "k4"}) {
		t.Fatalf("unpushed %v", got)
	}
	var before []byte // k2's stored record
	mustView(t, db, func(ktx kms.Tx) error { before = bytes.Clone(ktx.(*tx).get(bucketResv, []byte("k2"))); return nil })
	mustUpdate(t, db, 2, func(tx kms.Tx) error {
		return errors.Join(tx.MarkPushed("KME-A", "k2"), tx.MarkPushed("KME-A", "k0-peer"), tx.MarkPushed("KME-A", "none"),
			tx.PutReservation(reservation("k3", exp, kms.KeyExpired)), tx.DeleteReservation("k4"))
	})
	want := []string{"k1"}
	if got := unpushedIDs(t, db); !slices.Equal(got, want) {
		t.Fatalf("after push, expiry and delete: unpushed %v, want %v", got, want)
	}
	mustView(t, db, func(ktx kms.Tx) error {
		if after := ktx.(*tx).get(bucketResv, []byte("k2")); !bytes.Equal(after, before) {
			t.Error("MarkPushed rewrote the reservation record")
		}
		for id, want := range map[string]bool{"k1": false, "k2": true, "k0-peer": false} {
			if r, err := ktx.Reservation(id); err != nil || r.Pushed != want {
				t.Errorf("%s: Pushed %v (%v), want %v", id, r.Pushed, err, want)
			}
		}
		return nil
	})
	// A record written as pushed leaves the index too.
	pushed := reservation("k7", exp, kms.KeyIssued)
	pushed.Pushed = true
	mustUpdate(t, db, 3, func(tx kms.Tx) error { return tx.PutReservation(pushed) })
	if got := unpushedIDs(t, db); !slices.Equal(got, want) {
		t.Fatalf("after a put of a pushed record: unpushed %v, want %v", got, want)
	}

	db.Close()
	db = open(WithSelf("KME-A"))
	if got := unpushedIDs(t, db); !slices.Equal(got, want) {
		t.Fatalf("after reopen: unpushed %v, want %v", got, want)
	}
	// Writes made without the index are caught up at the next open with it.
	db.Close()
	db = open()
	mustUpdate(t, db, 4, func(tx kms.Tx) error { return tx.PutReservation(reservation("k6", exp, kms.KeyIssued)) })
	if got := unpushedIDs(t, db); len(got) != 0 {
		t.Fatalf("without WithSelf: unpushed %v", got)
	}
	mustView(t, db, func(tx kms.Tx) error { // the records now say what the index said
		for id, want := range map[string]bool{"k1": false, "k2": true} {
			if r, err := tx.Reservation(id); err != nil || r.Pushed != want {
				t.Errorf("without the index, %s: Pushed %v (%v), want %v", id, r.Pushed, err, want)
			}
		}
		return nil
	})
	db.Close()
	db = open(WithSelf("KME-A"))
	want = []string{"k1", "k6"}
	if got := unpushedIDs(t, db); !slices.Equal(got, want) {
		t.Fatalf("reopened with WithSelf: unpushed %v, want %v", got, want)
	}
	// A file of an earlier version: no index at all.
	db.Close()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(btx *bolt.Tx) error {
		return errors.Join(btx.DeleteBucket(bucketUnpushed), btx.Bucket(bucketMeta).Delete(keyUnpushedFor))
	}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	db = open(WithSelf("KME-A"))
	if got := unpushedIDs(t, db); !slices.Equal(got, want) {
		t.Fatalf("file without an index: unpushed %v, want %v", got, want)
	}
	// Another site's view of the same records: the peer's reservation is its own.
	db.Close()
	db = open(WithSelf("KME-B"))
	if got := unpushedIDs(t, db); !slices.Equal(got, []string{"k0-peer"}) {
		t.Fatalf("as KME-B: unpushed %v", got)
	}
	db.Close()
}

// BenchmarkUnpushed is what a new leader reads to push again what the peer has not
// acknowledged, among 200,000 stored reservations of which 100 are unacknowledged: through the
// index, and (scan) by reading every reservation as before the index.
func BenchmarkUnpushed(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "node.db"), randomBytes(b, MasterKeySize), WithSelf("KME-A"), WithoutFsync())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const n, unacked = 200_000, 100
	exp := t0.Add(time.Hour)
	for i := 0; i < n; i += 10_000 {
		mustUpdate(b, db, uint64(1+i/10_000), func(tx kms.Tx) error {
			for j := i; j < i+10_000; j++ {
				r := reservation(fmt.Sprintf("%036d", j), exp, kms.KeyIssued)
				r.Pushed = j%(n/unacked) != 0
				if err := tx.PutReservation(r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			c := 0
			if err := db.Unpushed(func(*kms.Reservation) bool { c++; return true }); err != nil || c != unacked {
				b.Fatalf("%d unpushed, %v", c, err)
			}
		}
	})
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			c := 0
			mustView(b, db, func(tx kms.Tx) error {
				return tx.Reservations(func(r *kms.Reservation) bool {
					if r.Owner == "KME-A" && r.State == kms.KeyIssued && !r.Pushed {
						c++
					}
					return true
				})
			})
			if c != unacked {
				b.Fatalf("%d unpushed", c)
			}
		}
	})
}

// A snapshot carries the index with the records, acknowledgements held only by the index
// included; a snapshot of a store without the index (an earlier version) gets one built at
// Restore.
func TestUnpushedAfterRestore(t *testing.T) {
	key := randomBytes(t, MasterKeySize)
	open := func(name string, opts ...Option) *DB {
		db, err := Open(filepath.Join(t.TempDir(), name), key, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	exp := t0.Add(time.Hour)
	fill := func(db *DB) {
		mustUpdate(t, db, 1, func(tx kms.Tx) error {
			return errors.Join(tx.PutReservation(reservation("k1", exp, kms.KeyIssued)),
				tx.PutReservation(reservation("k2", exp, kms.KeyIssued)))
		})
		mustUpdate(t, db, 2, func(tx kms.Tx) error { return tx.MarkPushed("KME-A", "k2") })
	}
	check := func(db *DB, what string) {
		t.Helper()
		if got := unpushedIDs(t, db); !slices.Equal(got, []string{"k1"}) {
			t.Errorf("%s: unpushed %v, want [k1]", what, got)
		}
		mustView(t, db, func(tx kms.Tx) error {
			if r, err := tx.Reservation("k2"); err != nil || !r.Pushed {
				t.Errorf("%s: k2 not pushed (%v)", what, err)
			}
			return nil
		})
	}
	for _, srcOpts := range [][]Option{{WithSelf("KME-A")}, nil} {
		src := open("src.db", srcOpts...)
		fill(src)
		var snap bytes.Buffer
		if _, err := src.Snapshot(&snap); err != nil {
			t.Fatal(err)
		}
		dst := open("dst.db", WithSelf("KME-A"))
		mustUpdate(t, dst, 1, func(tx kms.Tx) error { return tx.PutReservation(reservation("k9", exp, kms.KeyIssued)) })
		if err := dst.Restore(&snap); err != nil {
			t.Fatal(err)
		}
		check(dst, fmt.Sprintf("restored from a store opened with %d options", len(srcOpts)))
	}
}
