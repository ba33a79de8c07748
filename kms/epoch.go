package kms

import (
	"fmt"
	"time"

	"github.com/qkms/qkms/pq"
)

// Post-quantum epochs and link pauses (DESIGN.md "Post-quantum hybrid", issue 6).
//
// An epoch is the secret of one confirmed X-Wing exchange with a peer KME (package pq). The
// site that ran the exchange seals the epoch with its store (the master key; the replicated log
// only ever carries the sealed blob) and proposes EpochCmd; Apply keeps the blob as material of
// the pseudo-block "pq-epoch/<ID>" of the peer's pool and its metadata in Pool.Epochs, the last
// one being current. Hybrid and pqc keys are derived inside Apply (pq.HybridKey, pq.PQCKey)
// from the epoch the reservation names, so both sites derive the same bytes, request records
// keep the delivered bytes for retries like any key, and the audit fingerprints cover what
// the SAEs received. An epoch is kept until it was superseded, no reservation still waiting
// here names it, and a grace time for pushes still in flight (KeyTTL) has passed.

// EpochCmd records a confirmed PQ epoch shared with Peer. It is idempotent by ID.
type EpochCmd struct {
	Peer    string    `json:"peer"`
	ID      string    `json:"id"`      // pq.Epoch.ID (hex exchange ID)
	Created time.Time `json:"created"` // when this site confirmed it
	// Sealed is pq.Epoch.Marshal() sealed by the node's store for (Peer, EpochBlockID(ID)):
	// opaque here, never the secret in the clear.
	Sealed []byte `json:"sealed"`
	Size   int    `json:"size"` // length of the plaintext (Marshal's output)
}

// LinkCmd pauses or resumes the issuing of QKD key on the link with Peer (an operator action,
// recorded in the audit trail). While paused no qkd or hybrid key is issued on the link;
// pqc keys, which use no link key, still are.
type LinkCmd struct {
	Peer   string `json:"peer"`
	Paused bool   `json:"paused"`
	Actor  string `json:"actor,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// EpochInfo is what a pool keeps of one epoch; the secret itself is sealed material.
type EpochInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Size    int       `json:"size"`
	// Keys counts the keys derived from the epoch at this site (issued here or reserved for the
	// peer), for pq.RefreshPolicy.
	Keys uint64 `json:"keys"`
	// Live counts reservations of the peer stored here, naming this epoch, not yet finished.
	Live int64 `json:"live"`
	// Superseded is when a newer epoch was recorded (zero while current).
	Superseded time.Time `json:"superseded,omitzero"`
}

// EpochBlockID is the material name under which an epoch's sealed secret is kept in its
// peer's pool; callers seal with it (store.DB.Seal(peer, EpochBlockID(id), ...)).
func EpochBlockID(id string) string { return epochPrefix + id }

const (
	epochPrefix = "pq-epoch/"
	maxEpochID  = 64
	maxEpochLen = 1024
)

// CurrentEpoch returns the epoch keys with the peer derive from now, or nil.
func (p *Pool) CurrentEpoch() *EpochInfo {
	if p == nil || len(p.Epochs) == 0 {
		return nil
	}
	return &p.Epochs[len(p.Epochs)-1]
}

func (p *Pool) epoch(id string) *EpochInfo {
	for i := range p.Epochs {
		if p.Epochs[i].ID == id {
			return &p.Epochs[i]
		}
	}
	return nil
}

func (m *Machine) applyEpoch(tx Tx, c *Command) *Result {
	e := c.Epoch
	switch {
	case e.Peer == "" || e.Peer == m.cfg.Self:
		return fail(reject(ErrBadRequest, "epoch: peer %q must be another KME", e.Peer))
	case e.ID == "" || len(e.ID) > maxEpochID:
		return fail(reject(ErrBadRequest, "epoch: malformed ID"))
	case len(e.Sealed) == 0 || e.Size <= 0 || e.Size > maxEpochLen:
		return fail(reject(ErrBadRequest, "epoch %s: no sealed secret", e.ID))
	}
	pool, err := tx.Pool(e.Peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		pool = &Pool{Peer: e.Peer}
	}
	if pool.epoch(e.ID) != nil {
		return &Result{}
	}
	if err := tx.PutMaterial(e.Peer, EpochBlockID(e.ID), e.Sealed); err != nil {
		return fail(storageErr("store epoch "+e.ID, err))
	}
	if cur := pool.CurrentEpoch(); cur != nil {
		cur.Superseded = c.Time
	}
	pool.Epochs = append(pool.Epochs, EpochInfo{ID: e.ID, Created: e.Created, Size: e.Size})
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	return m.auditOrFail(tx, c, &Result{}, &AuditEntry{Event: EventAdmin, Actor: m.cfg.Self, Peer: e.Peer,
		Detail: "pq epoch " + e.ID + " established"})
}

// retireEpochs drops epochs of pool that are superseded, named by no waiting reservation, and
// older than the grace time; it reports whether pool changed.
func (m *Machine) retireEpochs(tx Tx, pool *Pool, now time.Time) (bool, []*AuditEntry, error) {
	grace := max(m.cfg.KeyTTL, m.cfg.TombstoneTTL)
	var es []*AuditEntry
	keep := pool.Epochs[:0:0]
	for _, e := range pool.Epochs {
		if e.Superseded.IsZero() || e.Live > 0 || now.Before(e.Superseded.Add(grace)) {
			keep = append(keep, e)
			continue
		}
		if err := tx.DropMaterial(pool.Peer, EpochBlockID(e.ID)); err != nil {
			return false, nil, storageErr("drop epoch "+e.ID, err)
		}
		es = append(es, &AuditEntry{Event: EventAdmin, Actor: m.cfg.Self, Peer: pool.Peer,
			Detail: "pq epoch " + e.ID + " retired and erased"})
	}
	if len(keep) == len(pool.Epochs) {
		return false, nil, nil
	}
	pool.Epochs = keep
	return true, es, nil
}

func (m *Machine) applyLink(tx Tx, c *Command) *Result {
	l := c.Link
	switch {
	case l.Peer == "" || l.Peer == m.cfg.Self:
		return fail(reject(ErrBadRequest, "link: peer %q must be another KME", l.Peer))
	case len(l.Actor)+len(l.Reason) > maxAdminRecord:
		return fail(reject(ErrBadRequest, "link: actor and reason longer than %d bytes", maxAdminRecord))
	}
	pool, err := tx.Pool(l.Peer)
	if err != nil {
		return fail(storageErr("read pool", err))
	}
	if pool == nil {
		pool = &Pool{Peer: l.Peer}
	}
	pool.Paused = l.Paused
	if err := tx.PutPool(pool); err != nil {
		return fail(storageErr("write pool", err))
	}
	detail := "link resumed"
	if l.Paused {
		detail = "link paused"
	}
	if l.Reason != "" {
		detail += ": " + l.Reason
	}
	actor := l.Actor
	if actor == "" {
		actor = m.cfg.Self
	}
	return m.auditOrFail(tx, c, &Result{}, &AuditEntry{Event: EventAdmin, Actor: actor, Peer: l.Peer, Detail: detail})
}

// LoadEpoch unseals epoch id of pool, for readers outside the state machine (the peer
// channel's MAC keys). The epoch holds its secret: Destroy it after use.
func LoadEpoch(tx Tx, pool *Pool, id string) (*pq.Epoch, error) { return loadEpoch(tx, pool, id) }

// loadEpoch unseals epoch id of peer's pool.
func loadEpoch(tx Tx, pool *Pool, id string) (*pq.Epoch, error) {
	info := pool.epoch(id)
	if info == nil {
		return nil, reject(ErrNotEnoughKey, "post-quantum epoch %s with %s is not known here", id, pool.Peer)
	}
	b, err := tx.ReadMaterial(pool.Peer, EpochBlockID(id), 0, info.Size)
	if err != nil {
		return nil, storageErr("read epoch "+id, err)
	}
	ep, err := pq.ParseEpoch(b)
	clear(b)
	if err != nil {
		return nil, storageErr("read epoch "+id, err)
	}
	return ep, nil
}

// deriveKey turns the QKD bytes of r (empty for pqc) into the key its provenance says, with
// the epoch ep; the QKD bytes are erased. qkd keys are returned as they are.
func deriveKey(r *Reservation, ep *pq.Epoch, qkd []byte) ([]byte, error) {
	if r.Provenance == ProvenanceQKD || r.Provenance == "" {
		return qkd, nil
	}
	// Both sites fill the context alike: the issuer, and the other end of the epoch.
	kc := pq.KeyContext{KeyID: r.KeyID, SourceKME: r.Owner, TargetKME: ep.Peer(r.Owner), MasterSAE: r.Master, SlaveSAEs: r.Slaves}
	var key []byte
	var err error
	if r.Provenance == ProvenanceHybrid {
		key, err = pq.HybridKey(qkd, ep, kc, r.Bits/8)
		clear(qkd)
	} else {
		key, err = pq.PQCKey(ep, kc, r.Bits/8)
	}
	if err != nil {
		return nil, fmt.Errorf("kms: derive %s key %s: %w: %w", r.Provenance, r.KeyID, ErrStorage, err)
	}
	return key, nil
}

// fallbackEntries records the keys derived without QKD key (EventFallbackUsed).
func fallbackEntries(rs []*Reservation, detail string) []*AuditEntry {
	var pqc []*Reservation
	for _, r := range rs {
		if r.Provenance == ProvenancePQC {
			pqc = append(pqc, r)
		}
	}
	es := keyEntries(EventFallbackUsed, pqc, nil)
	for _, e := range es {
		e.Detail = detail
	}
	return es
}

// retireAllEpochs runs retireEpochs over every pool (few: one per peer KME).
func (m *Machine) retireAllEpochs(tx Tx, now time.Time) ([]*AuditEntry, error) {
	var pools []*Pool
	if err := tx.Pools(func(p *Pool) bool {
		if len(p.Epochs) > 1 {
			pools = append(pools, p)
		}
		return true
	}); err != nil {
		return nil, storageErr("list pools", err)
	}
	var out []*AuditEntry
	for _, p := range pools {
		changed, es, err := m.retireEpochs(tx, p, now)
		if err != nil {
			return nil, err
		}
		if changed {
			if err := tx.PutPool(p); err != nil {
				return nil, storageErr("write pool", err)
			}
		}
		out = append(out, es...)
	}
	return out, nil
}
