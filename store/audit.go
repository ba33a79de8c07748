package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/qkms/qkms/kms"
)

// The audit trail (kms/audit.go) is kept in bucketAudit: big-endian Seq -> recordVersion |
// Hash(32) | JSON of the entry. Keys sort in Seq order, so the head is the last key and an
// export is a cursor walk; the hash beside the body lets AuditHead skip decoding. The bucket is
// created by the first append, so stores written before the trail existed open unchanged. The
// trail holds no key bytes and is not sealed: it is public to the site's auditors.
var bucketAudit = []byte("audit")

var _ kms.AuditTx = (*tx)(nil)

func (t *tx) AppendAudit(e *kms.AuditEntry) error {
	if err := t.checkWritable("append audit"); err != nil {
		return err
	}
	if len(e.Hash) != kms.AuditHashSize {
		return fmt.Errorf("store: append audit entry %d: hash of %d bytes", e.Seq, len(e.Hash))
	}
	b, err := t.btx.CreateBucketIfNotExists(bucketAudit)
	if err != nil {
		return fmt.Errorf("store: append audit entry %d: %w", e.Seq, err)
	}
	b.FillPercent = appendFill
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], e.Seq)
	if k, _ := b.Cursor().Last(); k != nil && bytes.Compare(k, key[:]) >= 0 {
		return fmt.Errorf("store: append audit entry %d after entry %d", e.Seq, binary.BigEndian.Uint64(k))
	}
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("store: append audit entry %d: %w", e.Seq, err)
	}
	v := make([]byte, 0, 1+kms.AuditHashSize+len(body))
	v = append(append(append(v, recordVersion), e.Hash...), body...)
	if err := b.Put(key[:], v); err != nil {
		return fmt.Errorf("store: append audit entry %d: %w", e.Seq, err)
	}
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
	if len(k) != 8 || len(v) < 1+kms.AuditHashSize || v[0] != recordVersion {
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
		if len(k) != 8 || len(v) < 1+kms.AuditHashSize || v[0] != recordVersion {
			return fmt.Errorf("store: audit entry: record format: %w", ErrTampered)
		}
		e := new(kms.AuditEntry)
		if err := json.Unmarshal(v[1+kms.AuditHashSize:], e); err != nil {
			return fmt.Errorf("store: audit entry %d: %v: %w", binary.BigEndian.Uint64(k), err, ErrTampered)
		}
		if !fn(e) {
			return nil
		}
	}
	return nil
}
