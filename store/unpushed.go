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
// would not keep current.
func (db *DB) indexUnpushed(btx *bolt.Tx) error {
	meta := btx.Bucket(bucketMeta)
	if bytes.Equal(meta.Get(keyUnpushedFor), []byte(db.self)) && btx.Bucket(bucketUnpushed) != nil {
		return nil
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

// indexReservation keeps r's entry in the index right after r was written.
func (t *tx) indexReservation(id []byte, r *kms.Reservation) error {
	if t.db.self == "" {
		return nil
	}
	idx := t.bucket(bucketUnpushed)
	if t.db.unpushed(r) {
		return idx.Put(id, []byte{})
	}
	return idx.Delete(id) // cheap when absent: nothing is written
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
