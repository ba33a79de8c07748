package kms

// ZeroizeCmd erases the whole pool of Peer at this site: the operator's answer to a
// compromised or suspect link (issue 5, "zeroize a pool"). It is local to the site; the peer
// keeps its copy until its own operator zeroizes it, and no later reservation can name the
// erased blocks here (they are used up or discarded).
type ZeroizeCmd struct {
	Peer   string `json:"peer"`
	Actor  string `json:"actor,omitempty"`  // certificate ID of the operator, for the audit trail
	Reason string `json:"reason,omitempty"` // given by the operator, for the audit trail
}

// applyZeroize drops the material of every block of Peer's pool that still holds some (the
// store destroys the block's data key: crypto-shredding), marks every live reservation of the
// pool expired (its slaves can no longer fetch it; a tombstone stays for TombstoneTTL so a
// retried push cannot revive it), and resets the pool's counters, so stored_key_count drops to
// 0 at once. Blocks are left used up (Released = Next = Bytes) so nothing allocates from them
// again, and pending blocks become discarded so a late tag comparison cannot make them usable
// without material. Like every command it is all-or-nothing: every check comes before the
// first write. Result.Expired lists the keys voided, Result.Zeroized the blocks erased.
func (m *Machine) applyZeroize(tx Tx, c *Command) *Result {
	z := c.Zeroize
	switch {
	case z.Peer == "" || z.Peer == m.cfg.Self:
		return fail(reject(ErrBadRequest, "zeroize: peer %q must be another KME", z.Peer))
	case len(z.Actor)+len(z.Reason) > maxAdminRecord:
		return fail(reject(ErrBadRequest, "zeroize: actor and reason longer than %d bytes", maxAdminRecord))
	}
	pool, err := tx.Pool(z.Peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		return fail(reject(ErrBadRequest, "zeroize: no pool for peer %q at this KME", z.Peer))
	}
	// Collect first: the store's iterators must not see writes.
	var blocks []*Block
	if err := tx.Blocks(z.Peer, func(b *Block) bool {
		if b.State != BlockDiscarded && b.Released < b.Bytes {
			blocks = append(blocks, b)
		}
		return true
	}); err != nil {
		return fail(storageErr("list blocks", err))
	}
	var live []*Reservation
	if err := tx.Reservations(func(r *Reservation) bool {
		if r.Peer == z.Peer && r.State == KeyIssued {
			live = append(live, r)
		}
		return true
	}); err != nil {
		return fail(storageErr("list reservations", err))
	}

	res := &Result{}
	var held []*Reservation // voided keys whose bytes were still held here (not the issuer)
	for _, r := range live {
		r.State = KeyExpired
		r.Expires = r.Expires.Add(m.cfg.TombstoneTTL)
		if err := tx.PutReservation(r); err != nil {
			return fail(storageErr("write reservation", err))
		}
		res.Expired = append(res.Expired, r.KeyID)
		if r.Owner != m.cfg.Self {
			held = append(held, r)
		}
	}
	var erased int64
	for _, b := range blocks {
		erased += int64(b.Bytes - b.Released)
		b.Released, b.Next = b.Bytes, b.Bytes
		if b.State == BlockPending {
			b.State = BlockDiscarded
		}
		if err := tx.PutBlock(b); err != nil {
			return fail(storageErr("write block "+b.ID, err))
		}
		if err := tx.DropMaterial(b.Peer, b.ID); err != nil {
			return fail(storageErr("drop material of block "+b.ID, err))
		}
		res.Zeroized = append(res.Zeroized, b.ID)
	}
	// PQ epochs of the link are key material too: shred them (a new exchange makes the next).
	for _, e := range pool.Epochs {
		if err := tx.DropMaterial(z.Peer, EpochBlockID(e.ID)); err != nil {
			return fail(storageErr("drop epoch "+e.ID, err))
		}
	}
	pool.Owned, pool.Available, pool.Pending, pool.Reserved, pool.Epochs = nil, 0, 0, 0, nil
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}

	detail := "zeroize"
	if z.Reason != "" {
		detail += ": " + z.Reason
	}
	es := []*AuditEntry{{Event: EventAdmin, Actor: z.Actor, Peer: z.Peer, Bytes: erased, Detail: detail}}
	for _, e := range keyEntries(EventKeyExpired, live, nil) {
		e.Detail = "zeroized"
		es = append(es, e)
	}
	for _, e := range keyEntries(EventKeyErased, held, nil) {
		e.Detail = "zeroized"
		es = append(es, e)
	}
	for _, b := range blocks {
		es = append(es, &AuditEntry{Event: EventBlockShredded, Peer: b.Peer, Owner: b.Owner,
			Blocks: []string{b.ID}, Bytes: int64(b.Bytes), Detail: "zeroized"})
	}
	return m.auditOrFail(tx, c, res, es...)
}
