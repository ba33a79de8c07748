package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/qkms/qkms/kms"
)

// Request records (kms.RequestRecord) let a retried request get its first answer. Their keys
// are sealed under the master key, with the request ID as additional data, and go with the
// record when it expires (kms Config.RequestTTL).
//
// bucketRequests: request ID -> requestVersion | at (8) | nonce | AES-256-GCM(record body),
// the body in kms's binary encoding (kms.AppendRequestRecord); records of version 2, written
// before, hold JSON and are still read.
// bucketReqTime:  expiryNanos(at) | request ID -> empty, for ExpireRequests.

const (
	requestVersion     = 3
	requestVersionJSON = 2
)

var (
	requestAAD     = []byte("qkms request record v3\x00")
	requestAADJSON = []byte("qkms request record v2\x00")
)

func (t *tx) Request(reqID string) (*kms.RequestRecord, error) {
	raw := t.get(bucketRequests, []byte(reqID))
	if raw == nil {
		return nil, nil
	}
	ns := t.db.master.NonceSize()
	if len(raw) < 1+8+ns || (raw[0] != requestVersion && raw[0] != requestVersionJSON) {
		return nil, fmt.Errorf("store: request %q: record format: %w", reqID, ErrTampered)
	}
	aad := requestAAD
	if raw[0] == requestVersionJSON {
		aad = requestAADJSON
	}
	plain, err := t.db.master.Open(nil, raw[9:9+ns], raw[9+ns:], append(append([]byte(nil), aad...), reqID...))
	if err != nil {
		return nil, fmt.Errorf("store: request %q: %w", reqID, ErrTampered)
	}
	defer clear(plain)
	var rec *kms.RequestRecord
	if raw[0] == requestVersionJSON {
		rec = new(kms.RequestRecord)
		err = json.Unmarshal(plain, rec)
	} else {
		rec, err = kms.DecodeRequestRecord(plain)
	}
	if err != nil {
		return nil, fmt.Errorf("store: request %q: record body: %w", reqID, ErrTampered)
	}
	return rec, nil
}

func (t *tx) PutRequest(reqID string, rec *kms.RequestRecord) error {
	if err := t.checkWritable("put request"); err != nil {
		return err
	}
	// Sized so that appending never moves the keys to a new array, leaving a copy to wipe.
	size := 32 + len(rec.Kind)
	for _, k := range rec.Keys {
		size += 3*binary.MaxVarintLen64 + len(k.ID) + len(k.Bytes) + len(k.Provenance)
	}
	plain := kms.AppendRequestRecord(make([]byte, 0, size), rec)
	defer clear(plain)
	ns := t.db.master.NonceSize()
	v := make([]byte, 9+ns, 9+ns+len(plain)+t.db.master.Overhead())
	v[0] = requestVersion
	at := expiryNanos(rec.At)
	binary.BigEndian.PutUint64(v[1:9], at)
	if _, err := rand.Read(v[9 : 9+ns]); err != nil {
		return fmt.Errorf("store: put request %q: %w", reqID, err)
	}
	v = t.db.master.Seal(v, v[9:9+ns], plain, append(append([]byte(nil), requestAAD...), reqID...))
	reqs := t.bucket(bucketRequests)
	if old := t.get(bucketRequests, []byte(reqID)); len(old) >= 9 {
		if err := t.bucket(bucketReqTime).Delete(reqTimeKey(old[1:9], reqID)); err != nil {
			return fmt.Errorf("store: put request %q: %w", reqID, err)
		}
	}
	if err := reqs.Put([]byte(reqID), v); err != nil {
		return fmt.Errorf("store: put request %q: %w", reqID, err)
	}
	if err := t.bucket(bucketReqTime).Put(reqTimeKey(v[1:9], reqID), []byte{}); err != nil {
		return fmt.Errorf("store: put request %q: %w", reqID, err)
	}
	return nil
}

func (t *tx) ExpireRequests(before time.Time, limit int) (int, error) {
	if err := t.checkWritable("expire requests"); err != nil {
		return 0, err
	}
	var bound [8]byte
	binary.BigEndian.PutUint64(bound[:], expiryNanos(before))
	var due [][]byte
	c := t.bucket(bucketReqTime).Cursor()
	for k, _ := c.First(); k != nil && len(due) < limit; k, _ = c.Next() {
		if len(k) < 8 || string(k[:8]) >= string(bound[:]) {
			break
		}
		due = append(due, append([]byte(nil), k...))
	}
	for _, k := range due {
		if err := t.bucket(bucketReqTime).Delete(k); err != nil {
			return 0, fmt.Errorf("store: expire requests: %w", err)
		}
		if err := t.bucket(bucketRequests).Delete(k[8:]); err != nil {
			return 0, fmt.Errorf("store: expire requests: %w", err)
		}
	}
	return len(due), nil
}

func reqTimeKey(at []byte, reqID string) []byte {
	return append(append(make([]byte, 0, 8+len(reqID)), at...), reqID...)
}
