package kmstest

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/qkms/qkms/kms"
)

var _ kms.AuditTx = (*Tx)(nil)

func cloneEntry(e *kms.AuditEntry) *kms.AuditEntry {
	c := *e
	c.Blocks = slices.Clone(e.Blocks)
	c.KeyIDs = slices.Clone(e.KeyIDs)
	c.Slaves = slices.Clone(e.Slaves)
	c.Fingerprints = make([][]byte, len(e.Fingerprints))
	for i, f := range e.Fingerprints {
		c.Fingerprints[i] = bytes.Clone(f)
	}
	if e.Fingerprints == nil {
		c.Fingerprints = nil
	}
	if e.Checkpoint != nil {
		cp := *e.Checkpoint
		cp.Head = bytes.Clone(cp.Head)
		cp.Signature = bytes.Clone(cp.Signature)
		c.Checkpoint = &cp
	}
	c.Prev = bytes.Clone(e.Prev)
	c.Hash = bytes.Clone(e.Hash)
	return &c
}

// AppendAudit stores e; its Seq must follow the head, as a real store's key order requires.
func (t *Tx) AppendAudit(e *kms.AuditEntry) error {
	if err := t.write(); err != nil {
		return err
	}
	if want := uint64(len(t.audit)) + 1; e.Seq != want {
		return fmt.Errorf("kmstest: audit entry %d appended at position %d", e.Seq, want)
	}
	t.audit = append(t.audit, cloneEntry(e))
	return nil
}

func (t *Tx) AuditHead() (uint64, []byte, error) {
	if len(t.audit) == 0 {
		return 0, nil, nil
	}
	last := t.audit[len(t.audit)-1]
	return last.Seq, bytes.Clone(last.Hash), nil
}

func (t *Tx) Audit(from uint64, fn func(*kms.AuditEntry) bool) error {
	for i := max(from, 1) - 1; i < uint64(len(t.audit)); i++ {
		if !fn(cloneEntry(t.audit[i])) {
			return nil
		}
	}
	return nil
}

// AuditTrail returns a copy of every audit entry, in order.
func (t *Tx) AuditTrail() []*kms.AuditEntry {
	out := make([]*kms.AuditEntry, len(t.audit))
	for i, e := range t.audit {
		out[i] = cloneEntry(e)
	}
	return out
}
