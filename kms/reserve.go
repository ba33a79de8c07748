package kms

import (
	"slices"

	"github.com/qkms/qkms/pq"
)

// applyPeerReserve stores reservations the peer site issued from blocks it owns, so this site's
// slaves can fetch the same bytes. It is idempotent by key ID: a reservation already stored (or
// finished and kept as a tombstone) is a no-op, so pushes and pulls may be retried; a
// reservation whose expiry has passed is acknowledged and not stored. A range in a block this
// site has not ingested or not yet verified fails the whole command with ErrNotConfirmed: the
// peer retries once the block is verified here. (The owner only allocates verified blocks, so
// the wait is short.) A range the block cannot hold, in a block discarded here or owned by
// someone else, is ErrBadRequest: the two sites disagree and nothing is stored.
func (m *Machine) applyPeerReserve(tx Tx, c *Command) *Result {
	pr := c.PeerReserve
	self := m.cfg.Self
	if pr.From == "" || pr.From == self {
		return fail(reject(ErrBadRequest, "peer reserve: sender %q must be another KME", pr.From))
	}
	if len(pr.Reservations) == 0 {
		return fail(reject(ErrBadRequest, "peer reserve: no reservations"))
	}
	pool, err := tx.Pool(pr.From)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		return fail(reject(ErrNotConfirmed, "peer reserve: no block of %q ingested here yet", pr.From))
	}
	bs := newBlockSet(tx)
	var accept []*Reservation
	seen := map[string]bool{}
	for i := range pr.Reservations {
		r := &pr.Reservations[i]
		if seen[r.KeyID] {
			return fail(reject(ErrBadRequest, "peer reserve: key ID %q sent twice", r.KeyID))
		}
		seen[r.KeyID] = true
		if err := m.checkPeerReservation(pr.From, r); err != nil {
			return fail(err)
		}
		old, err := tx.Reservation(r.KeyID)
		if err != nil {
			return fail(storageErr("read reservation", err))
		}
		if old != nil {
			if old.Owner == pr.From && sameAllocation(old, r) {
				continue
			}
			return fail(reject(ErrBadRequest, "peer reserve: key ID %q already holds another reservation", r.KeyID))
		}
		if !r.Expires.After(c.Time) {
			continue
		}
		if r.Epoch != "" && pool.epoch(r.Epoch) == nil {
			return fail(reject(ErrNotConfirmed, "peer reserve: post-quantum epoch %s not recorded here yet", r.Epoch))
		}
		for _, rg := range r.Ranges {
			b, err := bs.get(pr.From, rg.Block)
			if err != nil {
				return fail(err)
			}
			switch {
			case b == nil || b.State == BlockPending:
				return fail(reject(ErrNotConfirmed, "peer reserve: block %q not verified here yet", rg.Block))
			case b.State == BlockDiscarded:
				return fail(reject(ErrBadRequest, "peer reserve: block %q was discarded here", rg.Block))
			case b.Owner != pr.From:
				return fail(reject(ErrBadRequest, "peer reserve: block %q is not owned by %q", rg.Block, pr.From))
			case rg.Off+rg.Len > b.Bytes:
				return fail(reject(ErrBadRequest, "peer reserve: range [%d,%d) outside block %q of %d bytes", rg.Off, rg.Off+rg.Len, rg.Block, b.Bytes))
			case b.Released >= b.Bytes:
				return fail(reject(ErrBadRequest, "peer reserve: block %q is already used up", rg.Block))
			}
			// Next is, at the non-owning site, the high-water mark of ranges reserved by the
			// owner; a block with Next > 0 here can no longer change owner (applyTransfer).
			b.Next = max(b.Next, rg.Off+rg.Len)
			bs.touch(b)
		}
		accept = append(accept, r)
	}
	stored := make([]*Reservation, 0, len(accept))
	for _, r := range accept {
		st := &Reservation{
			KeyID:      r.KeyID,
			Peer:       pr.From,
			Owner:      pr.From,
			Master:     r.Master,
			Slaves:     slices.Clone(r.Slaves),
			Bits:       r.Bits,
			Ranges:     slices.Clone(r.Ranges),
			Provenance: r.Provenance,
			Issued:     r.Issued,
			Expires:    r.Expires,
			State:      KeyIssued,
			Epoch:      r.Epoch,
		}
		if err := tx.PutReservation(st); err != nil {
			return fail(storageErr("write reservation", err))
		}
		stored = append(stored, st)
		if r.Provenance != ProvenancePQC {
			pool.Reserved += int64(r.Bits / 8)
		}
		if e := pool.epoch(r.Epoch); e != nil {
			e.Keys++
			e.Live++
		}
	}
	if len(accept) == 0 {
		return &Result{}
	}
	if err := bs.flush(); err != nil {
		return fail(err)
	}
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	return m.auditOrFail(tx, c, &Result{}, keyEntries(EventKeyReserved, stored, nil)...)
}

// checkPeerReservation checks what a pushed reservation says on its own: issued by the sender
// for this site, for slaves served here, with ranges that add up to its size.
func (m *Machine) checkPeerReservation(from string, r *Reservation) error {
	if r.KeyID == "" || len(r.KeyID) > maxKeyIDLen {
		return reject(ErrBadRequest, "peer reserve: malformed key ID")
	}
	if r.Owner != from || r.Peer != m.cfg.Self {
		return reject(ErrBadRequest, "peer reserve: key %q issued by %q for %q, not by %q for %q", r.KeyID, r.Owner, r.Peer, from, m.cfg.Self)
	}
	if r.Master == "" || len(r.Slaves) == 0 {
		return reject(ErrBadRequest, "peer reserve: key %q names no master or no slave", r.KeyID)
	}
	for _, s := range r.Slaves {
		kme, ok := m.cfg.Registry.KME(s)
		if !ok {
			return reject(ErrUnknownSAE, "peer reserve: unknown slave SAE %q", s)
		}
		if kme != m.cfg.Self {
			return reject(ErrBadRequest, "peer reserve: slave SAE %q is not served by this KME", s)
		}
	}
	switch r.Provenance {
	case ProvenanceQKD, "":
		if r.Epoch != "" {
			return reject(ErrBadRequest, "peer reserve: qkd key %q names a post-quantum epoch", r.KeyID)
		}
	case ProvenanceHybrid, ProvenancePQC:
		if r.Epoch == "" || len(r.Epoch) > maxEpochID {
			return reject(ErrBadRequest, "peer reserve: %s key %q names no post-quantum epoch", r.Provenance, r.KeyID)
		}
	default:
		return reject(ErrBadRequest, "peer reserve: key %q has unknown provenance %q", r.KeyID, r.Provenance)
	}
	if r.Provenance == ProvenancePQC {
		// A pqc key takes no link key: it is derived from the epoch alone.
		if r.Bits <= 0 || r.Bits%8 != 0 || r.Bits/8 > pq.MaxKeyBytes || len(r.Ranges) != 0 {
			return reject(ErrBadRequest, "peer reserve: pqc key %q has a malformed size or ranges", r.KeyID)
		}
		return nil
	}
	if r.Bits <= 0 || r.Bits%8 != 0 || len(r.Ranges) == 0 {
		return reject(ErrBadRequest, "peer reserve: key %q has a malformed size", r.KeyID)
	}
	total := 0
	for _, rg := range r.Ranges {
		if rg.Off < 0 || rg.Len <= 0 || rg.Block == "" {
			return reject(ErrBadRequest, "peer reserve: key %q has a malformed range", r.KeyID)
		}
		total += rg.Len
	}
	if total*8 != r.Bits {
		return reject(ErrBadRequest, "peer reserve: ranges of key %q hold %d bits, not %d", r.KeyID, total*8, r.Bits)
	}
	return nil
}

// sameAllocation says whether two reservations of one key ID name the same bits for the same
// SAEs, so a repeated push is recognised as such.
func sameAllocation(a, b *Reservation) bool {
	return a.Master == b.Master && a.Bits == b.Bits && a.Provenance == b.Provenance && a.Epoch == b.Epoch &&
		slices.Equal(a.Slaves, b.Slaves) && slices.Equal(a.Ranges, b.Ranges)
}

// applyMarkPushed records that the peer stored these reservations (the owner's push queue may
// forget them). Unknown or already expired IDs are skipped: the ack may arrive late.
func (m *Machine) applyMarkPushed(tx Tx, c *Command) *Result {
	ids := c.MarkPushed.KeyIDs
	if len(ids) == 0 {
		return fail(reject(ErrBadRequest, "mark pushed: no key IDs"))
	}
	for _, id := range ids {
		if err := tx.MarkPushed(m.cfg.Self, id); err != nil {
			return fail(storageErr("mark reservation pushed", err))
		}
	}
	return &Result{}
}
