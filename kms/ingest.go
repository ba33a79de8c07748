package kms

import "bytes"

// applyIngest adds a block of link key to the pool of Peer: the pool is created on the first
// block, the block gets the next sequence number and waits, Pending, for the tag comparison
// with the peer (no bit of it may be used before). Re-ingesting a known block with the same size
// is a no-op, so a source may retry.
func (m *Machine) applyIngest(tx Tx, c *Command) *Result {
	in := c.Ingest
	self := m.cfg.Self
	switch {
	case in.Peer == "" || in.Peer == self:
		return fail(reject(ErrBadRequest, "ingest: peer %q must be another KME", in.Peer))
	case in.BlockID == "":
		return fail(reject(ErrBadRequest, "ingest: empty block ID"))
	case in.Bytes <= 0:
		return fail(reject(ErrBadRequest, "ingest: block %q has %d bytes", in.BlockID, in.Bytes))
	case in.Owner != "" && in.Owner != self && in.Owner != in.Peer:
		return fail(reject(ErrBadRequest, "ingest: owner %q is neither %q nor %q", in.Owner, self, in.Peer))
	case len(in.Sealed) == 0:
		return fail(reject(ErrBadRequest, "ingest: block %q has no material", in.BlockID))
	}
	old, err := tx.Block(in.Peer, in.BlockID)
	if err != nil {
		return fail(storageErr("read block", err))
	}
	if old != nil {
		if old.Bytes != in.Bytes || (in.Owner != "" && old.Owner != in.Owner) {
			return fail(reject(ErrBadRequest, "ingest: block %q already ingested with other metadata", in.BlockID))
		}
		return &Result{}
	}
	pool, err := tx.Pool(in.Peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		pool = &Pool{Peer: in.Peer}
	}
	b := &Block{
		Peer:     in.Peer,
		ID:       in.BlockID,
		Seq:      pool.NextSeq,
		Bytes:    in.Bytes,
		Owner:    in.Owner,
		State:    BlockPending,
		Tag:      bytes.Clone(in.Tag),
		QBER:     in.QBER,
		Ingested: c.Time,
	}
	if b.Owner == "" {
		b.Owner = DefaultOwner(self, in.Peer, b.Seq)
	}
	pool.NextSeq++
	pool.Pending += int64(b.Bytes)
	if err := tx.PutMaterial(b.Peer, b.ID, in.Sealed); err != nil {
		return fail(storageErr("store material", err))
	}
	if err := tx.PutBlock(b); err != nil {
		return fail(storageErr("write block", err))
	}
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	return m.auditOrFail(tx, c, &Result{}, &AuditEntry{Event: EventBlockIngested, Peer: b.Peer,
		Owner: b.Owner, Blocks: []string{b.ID}, Bytes: int64(b.Bytes)})
}

// applyVerify records the outcome of the tag comparison with the peer. A match makes the block
// usable (and, when this site owns it, available for issuing); a mismatch discards it and drops
// its material, so it is never used. Repeating the same outcome is a no-op; reversing an
// outcome is refused, since a verified block may already be in use and a discarded one has no
// material left.
func (m *Machine) applyVerify(tx Tx, c *Command) *Result {
	v := c.Verify
	b, err := tx.Block(v.Peer, v.BlockID)
	if err != nil {
		return fail(storageErr("read block", err))
	}
	if b == nil {
		return fail(reject(ErrNotConfirmed, "verify: block %q of peer %q not ingested here yet", v.BlockID, v.Peer))
	}
	switch {
	case b.State == BlockVerified && v.Match, b.State == BlockDiscarded && !v.Match:
		return &Result{}
	case b.State != BlockPending:
		return fail(reject(ErrBadRequest, "verify: block %q already settled the other way", v.BlockID))
	}
	pool, err := tx.Pool(v.Peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		return fail(storageErr("read pool", errMissing("pool "+v.Peer)))
	}
	pool.Pending -= int64(b.Bytes)
	if v.Match {
		b.State = BlockVerified
		if b.Owner == m.cfg.Self {
			if err := insertOwned(tx, pool, b); err != nil {
				return fail(err)
			}
			pool.Available += int64(b.Bytes)
		}
	} else {
		b.State = BlockDiscarded
		if err := tx.DropMaterial(b.Peer, b.ID); err != nil {
			return fail(storageErr("drop material", err))
		}
	}
	if err := tx.PutBlock(b); err != nil {
		return fail(storageErr("write block", err))
	}
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	e := &AuditEntry{Event: EventBlockVerified, Peer: b.Peer, Owner: b.Owner, Blocks: []string{b.ID}, Bytes: int64(b.Bytes)}
	if !v.Match {
		e.Event, e.Detail = EventBlockDiscarded, "tag differs from the peer's; material dropped"
	}
	return m.auditOrFail(tx, c, &Result{}, e)
}

// errMissing is an inconsistency of the stored state (a record that must exist does not).
type errMissing string

func (e errMissing) Error() string { return string(e) + " missing" }
