package kms

import (
	"fmt"
	"time"

	"github.com/qkms/qkms/pq"
)

// applyIssue is ETSI 014 Get key at the master's site. It allocates the keys from blocks this
// site owns, reads their bytes for the master and erases them here in the same command (the
// master holds them now; the peer keeps its copy for the slaves), records one reservation per
// key (kept until expiry so the peer can pull it and MarkPushed can find it), and returns the
// reservations to push to the peer.
func (m *Machine) applyIssue(tx Tx, c *Command) *Result {
	in := c.Issue
	self := m.cfg.Self
	if in.Self != self {
		return fail(reject(ErrBadRequest, "issue: command for KME %q applied at %q", in.Self, self))
	}
	peer, err := m.checkIssue(in.Master, in.Slaves, len(in.KeyIDs), in.Bits)
	if err != nil {
		return fail(err)
	}
	if in.Peer != peer {
		return fail(reject(ErrBadRequest, "issue: slaves are served by %q, not %q", peer, in.Peer))
	}
	if err := m.checkKeyIDs(in.KeyIDs); err != nil {
		return fail(err)
	}
	for _, id := range in.KeyIDs {
		old, err := tx.Reservation(id)
		if err != nil {
			return fail(storageErr("read reservation", err))
		}
		if old != nil {
			return fail(reject(ErrBadRequest, "issue: key ID %q already in use", id))
		}
	}
	expires := in.Expires
	if expires.IsZero() {
		expires = c.Time.Add(m.cfg.KeyTTL)
	}
	if !expires.After(c.Time) {
		return fail(reject(ErrBadRequest, "issue: expiry %s is not after %s", expires.Format(time.RFC3339), c.Time.Format(time.RFC3339)))
	}
	prov := in.Provenance
	switch prov {
	case "":
		prov = ProvenanceQKD
	case ProvenanceQKD, ProvenanceHybrid, ProvenancePQC:
	default:
		return fail(reject(ErrBadRequest, "issue: unknown provenance %q", prov))
	}

	pool, err := tx.Pool(peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool != nil && pool.Paused && prov != ProvenancePQC {
		return fail(reject(ErrNotEnoughKey, "the QKD link to %s is paused by the operator", peer))
	}
	var ep *pq.Epoch
	var epochID string
	if prov != ProvenanceQKD {
		cur := pool.CurrentEpoch()
		if cur == nil {
			return fail(reject(ErrNotEnoughKey, "no post-quantum epoch with %s yet; retry shortly", peer))
		}
		if ep, err = loadEpoch(tx, pool, cur.ID); err != nil {
			return fail(err)
		}
		defer ep.Destroy()
		epochID = cur.ID
		cur.Keys += uint64(len(in.KeyIDs))
	}
	if prov == ProvenancePQC {
		return m.issuePQC(tx, c, pool, ep, peer, expires)
	}
	bs := newBlockSet(tx)
	keyBytes := in.Bits / 8
	a, err := plan(bs, pool, self, len(in.KeyIDs), keyBytes)
	if err != nil {
		return fail(fmt.Errorf("kms: issue for %s to %s: %w", in.Master, peer, err))
	}
	// Read everything before the first write, so a storage failure leaves nothing half done.
	spanBytes := make([][]byte, len(a.spans))
	spanAt := make(map[string]int, len(a.spans))
	for i, s := range a.spans {
		buf, err := tx.ReadMaterial(peer, s.b.ID, s.from, s.to-s.from)
		if err != nil {
			return fail(storageErr("read material of block "+s.b.ID, err))
		}
		if len(buf) != s.to-s.from {
			return fail(storageErr("read material of block "+s.b.ID, errMissing("material")))
		}
		spanBytes[i] = buf
		spanAt[s.b.ID] = i
	}
	res := &Result{Keys: make([]Key, len(in.KeyIDs)), Reservations: make([]Reservation, len(in.KeyIDs))}
	for k, ranges := range a.keys {
		key := make([]byte, 0, keyBytes)
		for _, r := range ranges {
			i := spanAt[r.Block]
			off := r.Off - a.spans[i].from
			key = append(key, spanBytes[i][off:off+r.Len]...)
		}
		res.Reservations[k] = Reservation{
			KeyID:      in.KeyIDs[k],
			Peer:       peer,
			Owner:      self,
			Master:     in.Master,
			Slaves:     append([]string(nil), in.Slaves...),
			Bits:       in.Bits,
			Ranges:     ranges,
			Provenance: prov,
			Issued:     c.Time,
			Expires:    expires,
			State:      KeyIssued,
			Epoch:      epochID,
		}
		if key, err = deriveKey(&res.Reservations[k], ep, key); err != nil {
			return fail(err)
		}
		res.Keys[k] = Key{ID: in.KeyIDs[k], Bytes: key}
	}
	for i := range res.Reservations {
		r := res.Reservations[i]
		res.Keys[i].Res = &r
		if err := tx.PutReservation(&r); err != nil {
			return fail(storageErr("write reservation", err))
		}
	}
	for _, s := range a.spans {
		s.b.Next = s.to
		bs.release(s.b, s.from, s.to-s.from)
	}
	if err := bs.flush(); err != nil {
		return fail(err)
	}
	pool.Owned = pool.Owned[a.done:]
	pool.Available -= int64(len(in.KeyIDs)) * int64(keyBytes)
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	rs := make([]*Reservation, len(res.Reservations))
	for i := range res.Reservations {
		rs[i] = &res.Reservations[i]
	}
	es := keyEntries(EventKeyIssued, rs, m.fingerprints(res.Keys))
	for _, e := range keyEntries(EventKeyErased, rs, nil) {
		e.Detail = "handed to the master SAE; erased at the issuing site"
		es = append(es, e)
	}
	return m.auditOrFail(tx, c, res, append(es, bs.shredEntries()...)...)
}

// issuePQC issues pqc keys: derived from the epoch alone (pq.PQCKey), they take no link key,
// so the pool's blocks are untouched; only the epoch's key count moves.
func (m *Machine) issuePQC(tx Tx, c *Command, pool *Pool, ep *pq.Epoch, peer string, expires time.Time) *Result {
	in := c.Issue
	res := &Result{Keys: make([]Key, len(in.KeyIDs)), Reservations: make([]Reservation, len(in.KeyIDs))}
	for k, id := range in.KeyIDs {
		res.Reservations[k] = Reservation{
			KeyID: id, Peer: peer, Owner: m.cfg.Self, Master: in.Master,
			Slaves: append([]string(nil), in.Slaves...), Bits: in.Bits, Provenance: ProvenancePQC,
			Issued: c.Time, Expires: expires, State: KeyIssued, Epoch: ep.ID,
		}
		key, err := deriveKey(&res.Reservations[k], ep, nil)
		if err != nil {
			return fail(err)
		}
		res.Keys[k] = Key{ID: id, Bytes: key}
	}
	rs := make([]*Reservation, len(res.Reservations))
	for i := range res.Reservations {
		r := res.Reservations[i]
		res.Keys[i].Res = &r
		if err := tx.PutReservation(&r); err != nil {
			return fail(storageErr("write reservation", err))
		}
		rs[i] = &res.Reservations[i]
	}
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	es := keyEntries(EventKeyIssued, rs, m.fingerprints(res.Keys))
	es = append(es, fallbackEntries(rs, "pqc key derived from epoch "+ep.ID+": policy allowed the post-quantum fallback")...)
	for _, e := range keyEntries(EventKeyErased, rs, nil) {
		e.Detail = "handed to the master SAE; erased at the issuing site"
		es = append(es, e)
	}
	return m.auditOrFail(tx, c, res, es...)
}
