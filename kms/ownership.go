package kms

import "sort"

// DefaultOwner is the site that issues from the block at position seq of the pool between self
// and peer, when the proposer of the ingest names none. Blocks alternate between the two KME
// IDs (the lower ID in byte order owns even positions), so both ends compute the same owner for
// the same position without talking (DESIGN.md, cross-site allocation). This relies on both
// sites ingesting the link's blocks in the same order; a source that can lose blocks on one side
// should set IngestCmd.Owner from the link's own block numbering instead.
func DefaultOwner(self, peer string, seq uint64) string {
	lo, hi := self, peer
	if hi < lo {
		lo, hi = hi, lo
	}
	if seq%2 == 0 {
		return lo
	}
	return hi
}

// insertOwned adds a block to pool.Owned keeping Seq order. Blocks normally verify in ingest
// order, so the common case is an append.
func insertOwned(tx Tx, p *Pool, b *Block) error {
	for _, id := range p.Owned {
		if id == b.ID {
			return nil
		}
	}
	n := len(p.Owned)
	if n > 0 {
		last, err := tx.Block(p.Peer, p.Owned[n-1])
		if err != nil {
			return storageErr("read block "+p.Owned[n-1], err)
		}
		if last != nil && last.Seq > b.Seq {
			seqs := make([]uint64, n)
			for i, id := range p.Owned {
				o, err := tx.Block(p.Peer, id)
				if err != nil {
					return storageErr("read block "+id, err)
				}
				if o != nil {
					seqs[i] = o.Seq
				}
			}
			i := sort.Search(n, func(i int) bool { return seqs[i] > b.Seq })
			p.Owned = append(p.Owned[:i:i], append([]string{b.ID}, p.Owned[i:]...)...)
			return nil
		}
	}
	p.Owned = append(p.Owned, b.ID)
	return nil
}

func removeOwned(p *Pool, id string) {
	for i, o := range p.Owned {
		if o == id {
			p.Owned = append(p.Owned[:i:i], p.Owned[i+1:]...)
			return
		}
	}
}

// applyTransfer moves ownership of untouched blocks of Peer's pool to To. It is applied first at
// the giving site (after which it never allocates from them) and then, told by the giver, at the
// receiving site; a receiving site must not apply it before the giver has committed it. Only
// blocks nobody allocated from (Next == 0 here) move, so no reservation can straddle two
// owners. Blocks already owned by To are skipped (idempotent); Result.Transferred lists those
// that moved in this command. Pending blocks may move too: they join Owned when verified.
func (m *Machine) applyTransfer(tx Tx, c *Command) *Result {
	t := c.Transfer
	self := m.cfg.Self
	if t.Peer == "" || t.Peer == self || (t.To != self && t.To != t.Peer) {
		return fail(reject(ErrBadRequest, "transfer: To must be this KME or the peer %q", t.Peer))
	}
	if len(t.BlockIDs) == 0 {
		return fail(reject(ErrBadRequest, "transfer: no blocks"))
	}
	pool, err := tx.Pool(t.Peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		return fail(reject(ErrBadRequest, "transfer: no pool for peer %q", t.Peer))
	}
	bs := newBlockSet(tx)
	var move []*Block
	seen := map[string]bool{}
	for _, id := range t.BlockIDs {
		if seen[id] {
			return fail(reject(ErrBadRequest, "transfer: block %q named twice", id))
		}
		seen[id] = true
		b, err := bs.get(t.Peer, id)
		if err != nil {
			return fail(err)
		}
		switch {
		case b == nil:
			return fail(reject(ErrNotConfirmed, "transfer: block %q not ingested here yet", id))
		case b.Owner == t.To:
			continue
		case b.State == BlockDiscarded:
			return fail(reject(ErrBadRequest, "transfer: block %q was discarded", id))
		case b.Next != 0 || b.Released != 0:
			return fail(reject(ErrBadRequest, "transfer: block %q is already in use", id))
		}
		move = append(move, b)
	}
	res := &Result{}
	for _, b := range move {
		if b.State == BlockVerified {
			if b.Owner == self {
				removeOwned(pool, b.ID)
				pool.Available -= int64(b.Bytes)
			} else if t.To == self {
				b.Owner = self
				if err := insertOwned(tx, pool, b); err != nil {
					return fail(err)
				}
				pool.Available += int64(b.Bytes)
			}
		}
		b.Owner = t.To
		bs.touch(b)
		res.Transferred = append(res.Transferred, b.ID)
	}
	if len(move) == 0 {
		return res
	}
	if err := bs.flush(); err != nil {
		return fail(err)
	}
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	return m.auditOrFail(tx, c, res, &AuditEntry{Event: EventOwnership, Peer: t.Peer, Owner: t.To,
		Blocks: res.Transferred})
}
