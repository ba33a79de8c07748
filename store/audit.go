package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/qkms/qkms/kms"
)

// The audit trail (kms/audit.go) is kept in bucketAudit: big-endian Seq -> auditRecordVersion |
// Hash(32) | the entry's canonical encoding (kms.AppendAuditCanonical, what Hash is taken
// over). Records of recordVersion, written before, hold the entry's JSON instead and are still
// read. Keys sort in Seq order, so the head is the last key and an export is a cursor walk; the
// hash beside the body lets AuditHead skip decoding. The bucket is created by the first append,
// so stores written before the trail existed open unchanged. The trail holds no key bytes and
// is not sealed: it is public to the site's auditors.
var bucketAudit = []byte("audit")

// auditRecordVersion marks audit records in canonical encoding. Every request appends two to
// four entries, each with a key ID and a fingerprint per key; the canonical form is computed
// for the hash anyway, where JSON was a second, reflective encoding (and base64) of each.
const auditRecordVersion = 2

var _ kms.AuditTx = (*tx)(nil)

func (t *tx) AppendAudit(e *kms.AuditEntry) error {
	if err := t.checkWritable("append audit"); err != nil {
		return err
	}
	if len(e.Hash) != kms.AuditHashSize {
		return fmt.Errorf("store: append audit entry %d: hash of %d bytes", e.Seq, len(e.Hash))
	}
	b := t.bucket(bucketAudit)
	if b == nil {
		var err error
		if b, err = t.btx.CreateBucketIfNotExists(bucketAudit); err != nil {
			return fmt.Errorf("store: append audit entry %d: %w", e.Seq, err)
		}
		b.FillPercent = appendFill
	}
	// The trail only grows: its end is read once per transaction, then followed.
	if !t.auditNextKnown {
		if k, _ := b.Cursor().Last(); k != nil {
			t.auditNext = binary.BigEndian.Uint64(k) + 1
		}
		t.auditNextKnown = true
	}
	if e.Seq < t.auditNext {
		return fmt.Errorf("store: append audit entry %d after entry %d", e.Seq, t.auditNext-1)
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], e.Seq)
	v := make([]byte, 0, 1+kms.AuditHashSize+512)
	v = append(append(v, auditRecordVersion), e.Hash...)
	v = kms.AppendAuditCanonical(v, e)
	if err := b.Put(key[:], v); err != nil {
		return fmt.Errorf("store: append audit entry %d: %w", e.Seq, err)
	}
	t.auditNext = e.Seq + 1
	return nil
}

func (t *tx) AuditHead() (uint64, []byte, error) {
	b := t.bucket(bucketAudit)
	if b == nil {
		return 0, nil, nil
	}
	k, v := b.Cursor().Last()
	if k == nil {
		return 0, nil, nil
	}
	if len(k) != 8 || len(v) < 1+kms.AuditHashSize || (v[0] != auditRecordVersion && v[0] != recordVersion) {
		return 0, nil, fmt.Errorf("store: audit head: record format: %w", ErrTampered)
	}
	return binary.BigEndian.Uint64(k), bytes.Clone(v[1 : 1+kms.AuditHashSize]), nil
}

// Audit walks the trail from Seq from. It holds a cursor, so fn must not write to the store.
func (t *tx) Audit(from uint64, fn func(*kms.AuditEntry) bool) error {
	b := t.bucket(bucketAudit)
	if b == nil {
		return nil
	}
	var start [8]byte
	binary.BigEndian.PutUint64(start[:], from)
	c := b.Cursor()
	for k, v := c.Seek(start[:]); k != nil; k, v = c.Next() {
		if len(k) != 8 || len(v) < 1+kms.AuditHashSize {
			return fmt.Errorf("store: audit entry: record format: %w", ErrTampered)
		}
		e, err := decodeAuditRecord(v)
		if err != nil {
			return fmt.Errorf("store: audit entry %d: %v: %w", binary.BigEndian.Uint64(k), err, ErrTampered)
		}
		if !fn(e) {
			return nil
		}
	}
	return nil
}

// decodeAuditRecord decodes a record of either version (at least 1+AuditHashSize bytes).
func decodeAuditRecord(v []byte) (*kms.AuditEntry, error) {
	body := v[1+kms.AuditHashSize:]
	var e *kms.AuditEntry
	switch v[0] {
	case auditRecordVersion:
		var err error
		if e, err = kms.DecodeAuditCanonical(body); err != nil {
			return nil, err
		}
	case recordVersion:
		e = new(kms.AuditEntry)
		if err := json.Unmarshal(body, e); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("record version %d", v[0])
	}
	e.Hash = bytes.Clone(v[1 : 1+kms.AuditHashSize])
	return e, nil
}
