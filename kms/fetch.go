package kms

import (
	"slices"

	"github.com/qkms/qkms/pq"
)

// msgNotFound is the message ETSI GS QKD 014 prescribes for unknown key IDs (status 400).
const msgNotFound = "one or more keys specified are not found on KME"

// applyFetch is ETSI 014 Get key with key IDs at a slave's site. All-or-nothing over the
// requested IDs:
//   - an ID with no reservation here fails with ErrKeyNotFound and lists it in Error.Absent,
//     so the node can pull the reservation from the issuing site and retry;
//   - a key issued by another master than the one named, or not naming the caller as slave or
//     additional slave, fails with ErrUnauthorized (the 401 rule, clause 5.3);
//   - a key issued here (its bytes went to the master), expired, or already fetched by this
//     caller fails with ErrKeyNotFound: for that caller the key is gone from the KME.
//
// The bytes are erased after the last named slave fetched them; the reservation stays as a
// tombstone until its expiry plus Config.TombstoneTTL so a retried push cannot revive it.
func (m *Machine) applyFetch(tx Tx, c *Command) *Result {
	f := c.Fetch
	if err := m.ValidateFetch(f.Master, f.Caller, f.KeyIDs); err != nil {
		return fail(err)
	}
	rs := make([]*Reservation, len(f.KeyIDs))
	var absent []string
	for i, id := range f.KeyIDs {
		r, err := tx.Reservation(id)
		if err != nil {
			return fail(storageErr("read reservation", err))
		}
		if r == nil {
			absent = append(absent, id)
		}
		rs[i] = r
	}
	if len(absent) > 0 {
		return fail(&Error{Kind: ErrKeyNotFound, Msg: msgNotFound, Absent: absent})
	}
	for _, r := range rs {
		if r.Master != f.Master || !slices.Contains(r.Slaves, f.Caller) {
			return fail(reject(ErrUnauthorized, "SAE %q is not a slave of these keys", f.Caller))
		}
	}
	for _, r := range rs {
		if r.Owner == m.cfg.Self || r.State != KeyIssued || !r.Expires.After(c.Time) ||
			slices.Contains(r.Fetched, f.Caller) {
			return fail(reject(ErrKeyNotFound, msgNotFound))
		}
	}
	bs := newBlockSet(tx)
	res := &Result{Keys: make([]Key, len(rs))}
	eps := epochCache{tx: tx}
	defer eps.destroy()
	mat, err := readRuns(tx, rs)
	defer mat.clear()
	if err != nil {
		return fail(err)
	}
	for i, r := range rs {
		key := make([]byte, 0, r.Bits/8)
		for _, rg := range r.Ranges {
			b, ok := mat.bytes(r.Peer, rg)
			if !ok {
				return fail(storageErr("read material of key "+r.KeyID, errMissing("material")))
			}
			key = append(key, b...)
		}
		if r.Provenance == ProvenanceHybrid || r.Provenance == ProvenancePQC {
			ep, err := eps.get(r.Peer, r.Epoch)
			if err != nil {
				return fail(err)
			}
			if key, err = deriveKey(r, ep, key); err != nil {
				return fail(err)
			}
		}
		res.Keys[i] = Key{ID: r.KeyID, Bytes: key}
	}
	pools := map[string]*Pool{}
	var poolOrder []string
	for i, r := range rs {
		r.Fetched = append(r.Fetched, f.Caller)
		done := len(r.Fetched) == len(r.Slaves)
		if done {
			r.State = KeyFetched
		}
		cp := *r
		res.Keys[i].Res = &cp
		if done {
			if err := m.release(tx, bs, pools, &poolOrder, r); err != nil {
				return fail(err)
			}
			r.Expires = r.Expires.Add(m.cfg.TombstoneTTL)
		}
		if err := tx.PutReservation(r); err != nil {
			return fail(storageErr("write reservation", err))
		}
	}
	if err := finish(tx, bs, pools, poolOrder); err != nil {
		return fail(err)
	}
	es := keyEntries(EventKeyFetched, rs, m.fingerprints(res.Keys))
	for _, e := range es {
		e.SAE = f.Caller
	}
	es = append(es, fallbackEntries(rs, "pqc key fetched: the issuing site's policy allowed the post-quantum fallback")...)
	var done []*Reservation
	for _, r := range rs {
		if r.State == KeyFetched {
			done = append(done, r)
		}
	}
	for _, e := range keyEntries(EventKeyErased, done, nil) {
		e.Detail = "fetched by every slave"
		es = append(es, e)
	}
	return m.auditOrFail(tx, c, res, append(es, bs.shredEntries()...)...)
}

// release counts a reservation's ranges released at this (non-owning) site; flush erases them,
// or drops the material of blocks fully released.
func (m *Machine) release(tx Tx, bs *blockSet, pools map[string]*Pool, order *[]string, r *Reservation) error {
	for _, rg := range r.Ranges {
		b, err := bs.get(r.Peer, rg.Block)
		if err != nil {
			return err
		}
		if b == nil {
			return storageErr("release key "+r.KeyID, errMissing("block "+rg.Block))
		}
		bs.release(b, rg.Off, rg.Len)
	}
	p, ok := pools[r.Peer]
	if !ok {
		var err error
		if p, err = tx.Pool(r.Peer); err != nil {
			return storageErr("read pool", err)
		}
		if p == nil {
			return storageErr("release key "+r.KeyID, errMissing("pool "+r.Peer))
		}
		pools[r.Peer] = p
		*order = append(*order, r.Peer)
	}
	if r.Provenance != ProvenancePQC {
		p.Reserved -= int64(r.Bits / 8)
	}
	if r.Epoch != "" {
		if e := p.epoch(r.Epoch); e != nil && e.Live > 0 {
			e.Live--
		}
	}
	return nil
}

// epochCache unseals each epoch a command needs once.
type epochCache struct {
	tx    Tx
	pools map[string]*Pool
	eps   map[string]*pq.Epoch
}

func (c *epochCache) get(peer, id string) (*pq.Epoch, error) {
	if ep := c.eps[id]; ep != nil {
		return ep, nil
	}
	if c.pools == nil {
		c.pools, c.eps = map[string]*Pool{}, map[string]*pq.Epoch{}
	}
	p := c.pools[peer]
	if p == nil {
		var err error
		if p, err = c.tx.Pool(peer); err != nil {
			return nil, storageErr("read pool", err)
		}
		if p == nil {
			return nil, storageErr("read epoch "+id, errMissing("pool "+peer))
		}
		c.pools[peer] = p
	}
	ep, err := loadEpoch(c.tx, p, id)
	if err != nil {
		return nil, err
	}
	c.eps[id] = ep
	return ep, nil
}

func (c *epochCache) destroy() {
	for _, ep := range c.eps {
		ep.Destroy()
	}
}

// finish writes the blocks and pools a command changed.
func finish(tx Tx, bs *blockSet, pools map[string]*Pool, order []string) error {
	if err := bs.flush(); err != nil {
		return err
	}
	for _, peer := range order {
		if err := tx.PutPool(pools[peer]); err != nil {
			return storageErr("write pool", err)
		}
	}
	return nil
}

// runs holds the material of many ranges, read a run of adjacent ranges at a time: the keys of
// one request lie side by side in their blocks, and a read decrypts whole segments, which
// reading key by key did once for each key.
type runs map[string][]run // by peer and block

type run struct {
	off int
	buf []byte
}

func runKey(peer, block string) string { return peer + "\x00" + block }

// readRuns reads the ranges of rs.
func readRuns(tx Tx, rs []*Reservation) (runs, error) {
	byBlock := map[string][]Range{}
	var order []string
	peers := map[string]string{}
	for _, r := range rs {
		for _, rg := range r.Ranges {
			k := runKey(r.Peer, rg.Block)
			if _, ok := byBlock[k]; !ok {
				order = append(order, k)
				peers[k] = r.Peer
			}
			byBlock[k] = append(byBlock[k], rg)
		}
	}
	out := make(runs, len(order))
	for _, k := range order {
		for _, rg := range mergeRanges(byBlock[k]) {
			buf, err := tx.ReadMaterial(peers[k], rg.Block, rg.Off, rg.Len)
			if err != nil || len(buf) != rg.Len {
				return out, storageErr("read material of block "+rg.Block, errOr(err, "material"))
			}
			out[k] = append(out[k], run{off: rg.Off, buf: buf})
		}
	}
	return out, nil
}

// bytes returns the material of rg, which readRuns read (false if it did not).
func (m runs) bytes(peer string, rg Range) ([]byte, bool) {
	for _, r := range m[runKey(peer, rg.Block)] {
		if rg.Off >= r.off && rg.Off+rg.Len <= r.off+len(r.buf) {
			return r.buf[rg.Off-r.off : rg.Off-r.off+rg.Len], true
		}
	}
	return nil, false
}

// clear wipes the material read.
func (m runs) clear() {
	for _, rs := range m {
		for _, r := range rs {
			clear(r.buf)
		}
	}
}

func errOr(err error, what string) error {
	if err != nil {
		return err
	}
	return errMissing(what)
}
