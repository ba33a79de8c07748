package store

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/qkms/qkms/kms"
)

// The index of unpushed reservations. A node that becomes leader pushes again every
// reservation its site issued that the peer has not acknowledged (kms.Reservation.Pushed).
// Finding them by reading every stored reservation took about a microsecond a record: with the
// default key_ttl of 10 minutes a busy site holds millions, so each leader change cost seconds
// of CPU and a read transaction as long. The store therefore keeps their key IDs apart, in
// bucketUnpushed, updated with every write of a reservation; the leader reads only those.
//
// The index also carries the acknowledgement itself: MarkPushed removes the entry and leaves
// the record as it is (rewriting every pushed reservation was 4% of the CPU with 3-node sites),
// and Reservation reports Pushed for an Issued reservation of this site that the index does
// not hold. Before the index is dropped or rebuilt (an open naming no site or another one),
// foldUnpushed writes what it knows into the records.

// WithSelf names this site (its KME ID), whose issued and unacknowledged reservations the
// store indexes for Unpushed. Without it Unpushed lists nothing.
func WithSelf(kmeID string) Option { return func(db *DB) { db.self = kmeID } }

// unpushed reports whether r belongs in the index.
func (db *DB) unpushed(r *kms.Reservation) bool {
	return db.self != "" && r.Owner == db.self && r.State == kms.KeyIssued && !r.Pushed
}

// indexUnpushed runs at open (and after Restore): it builds the index from the stored
// reservations when it was built for another site, or not at all (a file of an earlier
// version, or opened without WithSelf). Without WithSelf it drops the index, which writes
// would not keep current. Either way an index it replaces is first folded into the records.
func (db *DB) indexUnpushed(btx *bolt.Tx) error {
	meta := btx.Bucket(bucketMeta)
	old, idx := meta.Get(keyUnpushedFor), btx.Bucket(bucketUnpushed)
	if bytes.Equal(old, []byte(db.self)) && idx != nil {
		return nil
	}
	if old != nil && idx != nil {
		if err := foldUnpushed(btx, string(old)); err != nil {
			return fmt.Errorf("index unpushed reservations: %w", err)
		}
	}
	if err := btx.DeleteBucket(bucketUnpushed); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return fmt.Errorf("index unpushed reservations: %w", err)
	}
	if db.self == "" {
		return meta.Delete(keyUnpushedFor)
	}
	idx, err := btx.CreateBucket(bucketUnpushed)
	if err != nil {
		return fmt.Errorf("index unpushed reservations: %w", err)
	}
	idx.FillPercent = appendFill
	var r kms.Reservation
	err = btx.Bucket(bucketResv).ForEach(func(k, v []byte) error {
		if err := decodeReservationRecord(v, &r); err != nil {
			return fmt.Errorf("reservation %q: %w", k, err)
		}
		if db.unpushed(&r) {
			return idx.Put(k, []byte{})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("index unpushed reservations: %w", err)
	}
	return meta.Put(keyUnpushedFor, []byte(db.self))
}

// foldUnpushed writes into the records what the index of site self knows and they may not: an
// Issued reservation of self that the index does not hold is pushed (MarkPushed removed its
// entry without rewriting it). It runs before the index is dropped.
func foldUnpushed(btx *bolt.Tx, self string) error {
	resv, idx := btx.Bucket(bucketResv), btx.Bucket(bucketUnpushed)
	var marked [][]byte
	var r kms.Reservation
	err := resv.ForEach(func(k, v []byte) error {
		if err := decodeReservationRecord(v, &r); err != nil {
			return fmt.Errorf("reservation %q: %w", k, err)
		}
		if r.Owner == self && r.State == kms.KeyIssued && !r.Pushed && idx.Get(k) == nil {
			marked = append(marked, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range marked {
		raw := resv.Get(k)
		if err := decodeReservationRecord(raw, &r); err != nil {
			return fmt.Errorf("reservation %q: %w", k, err)
		}
		r.Pushed = true // the record keeps its expiry fields (raw[1:10], either version)
		if err := resv.Put(k, encodeReservation(raw[1:10], &r)); err != nil {
			return err
		}
	}
	return nil
}

// indexReservation keeps r's entry in the index right after r was written. A reservation
// another site issued never has one (its Owner is fixed when it is issued), so its writes, all
// of a slave site's, cost no lookup here.
func (t *tx) indexReservation(id []byte, r *kms.Reservation) error {
	if t.db.self == "" || r.Owner != t.db.self {
		return nil
	}
	idx := t.bucket(bucketUnpushed)
	if t.db.unpushed(r) {
		return idx.Put(id, []byte{})
	}
	return idx.Delete(id) // cheap when absent: nothing is written
}

// MarkPushed records that the peer stored reservation keyID, if self issued it and it is still
// Issued and unmarked. With the index (WithSelf naming self) that is the removal of its entry:
// the record itself is not rewritten, and Reservation reports Pushed for an Issued reservation
// of this site that the index does not hold.
func (t *tx) MarkPushed(self, keyID string) error {
	if err := t.checkWritable("mark reservation pushed"); err != nil {
		return err
	}
	if self != "" && self == t.db.self {
		if err := t.bucket(bucketUnpushed).Delete([]byte(keyID)); err != nil {
			return fmt.Errorf("store: mark reservation %s pushed: %w", keyID, err)
		}
		return nil
	}
	r, err := t.Reservation(keyID)
	if err != nil || r == nil || r.Owner != self || r.State != kms.KeyIssued || r.Pushed {
		return err
	}
	r.Pushed = true
	return t.PutReservation(r)
}

// pushedByIndex completes r.Pushed, just decoded, from the index: an Issued reservation of this
// site is pushed unless the index holds it.
func (t *tx) pushedByIndex(r *kms.Reservation) {
	if !t.db.unpushed(r) {
		return
	}
	r.Pushed = t.get(bucketUnpushed, []byte(r.KeyID)) == nil
}

// UnpushedCount returns how many reservations this site (WithSelf) issued that the peer has
// not acknowledged. It walks the index's pages: a few while the peer channel works, and about a
// page per hundred reservations while it is down.
func (db *DB) UnpushedCount() (int, error) {
	count := 0
	err := db.View(func(ktx kms.Tx) error {
		if b := ktx.(*tx).btx.Bucket(bucketUnpushed); b != nil {
			count = b.Stats().KeyN
		}
		return nil
	})
	return count, err
}

// Unpushed calls fn for each reservation this site (WithSelf) issued that the peer has not
// acknowledged, in key ID order (which is issue order), until fn returns false.
func (db *DB) Unpushed(fn func(*kms.Reservation) bool) error {
	return db.View(func(ktx kms.Tx) error {
		t := ktx.(*tx)
		if t.btx.Bucket(bucketUnpushed) == nil {
			return nil
		}
		return t.iterate(bucketUnpushed, nil, func(k []byte) (bool, error) {
			r, err := t.Reservation(string(k))
			if err != nil || r == nil || !db.unpushed(r) {
				return err == nil, err
			}
			return fn(r), nil
		})
	})
}
