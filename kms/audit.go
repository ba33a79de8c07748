package kms

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// The audit trail (DESIGN.md invariant 5) is written by Apply itself: every command that
// changes key state appends its entries in the same transaction as the change, so the trail
// travels through the replicated log and is identical on every node of a site, and an entry
// exists exactly when its change does. Entries are hash-chained (each carries the hash of the
// one before), and the chain is checkpointed by signatures made outside the core (the site's
// leader signs the head and proposes a CheckpointCmd, which Apply records as an entry).
// Entries never hold key bytes; a key appears only as its keyed fingerprint (audit_fingerprint.go).

// AuditEvent names what an audit entry records.
type AuditEvent string

const (
	EventBlockIngested  AuditEvent = "block_ingested"  // a block of link key entered the pool
	EventBlockVerified  AuditEvent = "block_verified"  // its tag matched the peer's: usable
	EventBlockDiscarded AuditEvent = "block_discarded" // its tag differed: never used, material dropped
	EventBlockShredded  AuditEvent = "block_shredded"  // every byte released: material and data key destroyed
	EventKeyIssued      AuditEvent = "key_issued"      // keys reserved here and handed to the master SAE
	EventKeyReserved    AuditEvent = "key_reserved"    // the peer's reservation stored for our slaves
	EventKeyFetched     AuditEvent = "key_fetched"     // a slave SAE fetched keys
	// EventKeyRedelivered records a fetch's keys answered again to a retry of its request (the
	// slave's, with its idempotency key, or the site's own after an unknown outcome).
	EventKeyRedelivered AuditEvent = "key_redelivered"
	EventKeyExpired     AuditEvent = "key_expired" // keys expired before every slave fetched them
	EventKeyErased      AuditEvent = "key_erased"  // the bytes of keys were erased at this site
	EventOwnership      AuditEvent = "ownership_transferred"
	// EventFallbackUsed is reserved for keys derived without (or beyond) QKD key because policy
	// allowed a post-quantum fallback; the hybrid/PQC path emits it.
	EventFallbackUsed AuditEvent = "fallback_used"
	EventAdmin        AuditEvent = "admin"      // an operator action, or a refused admin call
	EventCheckpoint   AuditEvent = "checkpoint" // the site's signature over the chain head
)

// AuditEvents lists every event, for filters and documentation.
var AuditEvents = []AuditEvent{EventBlockIngested, EventBlockVerified, EventBlockDiscarded,
	EventBlockShredded, EventKeyIssued, EventKeyReserved, EventKeyFetched, EventKeyRedelivered, EventKeyExpired,
	EventKeyErased, EventOwnership, EventFallbackUsed, EventAdmin, EventCheckpoint}

// AuditHashSize is the size of Prev and Hash (SHA-256).
const AuditHashSize = sha256.Size

// AuditCheckpointLag bounds how far behind the head a checkpoint may sign: its Seq must be
// within this many entries of the head when it is applied. It lets the leader sign without
// stopping the log, and lets a verifier keep only this many recent hashes.
const AuditCheckpointLag = 1 << 16

// AuditEntry is one entry of a site's audit trail. Empty fields are omitted from the JSON.
type AuditEntry struct {
	Seq    uint64     `json:"seq"`  // position in the trail, from 1, without gaps
	Time   time.Time  `json:"time"` // the command's time (its proposer's clock)
	Event  AuditEvent `json:"event"`
	Peer   string     `json:"peer,omitempty"`  // the other KME of the link
	Owner  string     `json:"owner,omitempty"` // block owner (ingest, transfer) or issuing KME (keys)
	Blocks []string   `json:"blocks,omitempty"`
	KeyIDs []string   `json:"key_ids,omitempty"`
	Master string     `json:"master,omitempty"` // master SAE ID
	Slaves []string   `json:"slaves,omitempty"` // slave SAE IDs named at issue
	SAE    string     `json:"sae,omitempty"`    // the SAE that acted (the fetching slave)
	Actor  string     `json:"actor,omitempty"`  // admin: certificate ID of the caller
	Bits   int        `json:"bits,omitempty"`   // size of each key
	Bytes  int64      `json:"bytes,omitempty"`  // bytes of the block, or erased
	// Provenance of the keys (qkd, hybrid, pqc).
	Provenance Provenance `json:"provenance,omitempty"`
	// Fingerprints holds one keyed fingerprint per key ID (AuditKey.Fingerprint), when the
	// event handled the key's bytes at this site (issue, fetch).
	Fingerprints [][]byte         `json:"fingerprints,omitempty"`
	Detail       string           `json:"detail,omitempty"`
	Checkpoint   *AuditCheckpoint `json:"checkpoint,omitempty"`

	Prev []byte `json:"prev"` // Hash of entry Seq-1; AuditHashSize zero bytes for Seq 1
	Hash []byte `json:"hash"` // HashAuditEntry
}

// AuditCheckpoint is a site's ML-DSA-65 signature over the hash of entry Seq of its trail.
type AuditCheckpoint struct {
	KME       string `json:"kme"`    // the signing site
	Seq       uint64 `json:"seq"`    // entry whose hash is signed
	Head      []byte `json:"head"`   // that entry's Hash
	Signer    string `json:"signer"` // key ID of the signing key (identity.KeyID)
	Signature []byte `json:"sig"`
}

// AuditTx is the part of a Tx that holds the audit trail. The node's store and kmstest
// implement it; Apply appends entries only when its Tx does (test doubles of the layers above
// that do not care about the trail need not implement it).
type AuditTx interface {
	// AppendAudit stores e (Seq, Prev and Hash already set) after the current head.
	AppendAudit(e *AuditEntry) error
	// AuditHead returns the Seq and Hash of the last entry, or (0, nil) for an empty trail.
	AuditHead() (seq uint64, hash []byte, err error)
	// Audit calls fn for each entry with Seq >= from, in Seq order, until fn returns false.
	Audit(from uint64, fn func(*AuditEntry) bool) error
}

// auditVersion is the first byte of the canonical encoding; a new layout gets a new version.
const auditVersion byte = 1

// AppendAuditCanonical appends the canonical encoding of e (every field but Hash, Prev first)
// to b. It is the exact input of the hash: length-prefixed fields in a fixed order, so no two
// entries share an encoding and any implementation can reproduce it without a JSON library.
//
//	version(1) | prev(32) | uvarint seq | varint unix-seconds | uvarint nanoseconds |
//	str event | str peer | str owner | list blocks | list key_ids | str master | list slaves |
//	str sae | str actor | varint bits | varint bytes | str provenance | list fingerprints |
//	str detail | checkpoint: 0, or 1 | str kme | uvarint seq | str head | str signer | str sig
//
// where str is uvarint length then bytes and list is uvarint count then strs.
func AppendAuditCanonical(b []byte, e *AuditEntry) []byte {
	b = append(b, auditVersion)
	b = appendBlob(b, e.Prev)
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendVarint(b, e.Time.Unix())
	b = binary.AppendUvarint(b, uint64(e.Time.Nanosecond()))
	b = appendStr(b, string(e.Event))
	b = appendStr(b, e.Peer)
	b = appendStr(b, e.Owner)
	b = appendList(b, e.Blocks)
	b = appendList(b, e.KeyIDs)
	b = appendStr(b, e.Master)
	b = appendList(b, e.Slaves)
	b = appendStr(b, e.SAE)
	b = appendStr(b, e.Actor)
	b = binary.AppendVarint(b, int64(e.Bits))
	b = binary.AppendVarint(b, e.Bytes)
	b = appendStr(b, string(e.Provenance))
	b = binary.AppendUvarint(b, uint64(len(e.Fingerprints)))
	for _, f := range e.Fingerprints {
		b = appendBlob(b, f)
	}
	b = appendStr(b, e.Detail)
	if cp := e.Checkpoint; cp == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = appendStr(b, cp.KME)
		b = binary.AppendUvarint(b, cp.Seq)
		b = appendBlob(b, cp.Head)
		b = appendStr(b, cp.Signer)
		b = appendBlob(b, cp.Signature)
	}
	return b
}

// DecodeAuditCanonical decodes an entry written by AppendAuditCanonical (every field but
// Hash, which is not part of it). The node's store keeps entries in this form: it is the
// form their hash is taken over, so storing it costs no second encoding.
func DecodeAuditCanonical(b []byte) (*AuditEntry, error) {
	r := wireReader{b: b}
	if r.byte() != auditVersion {
		return nil, fmt.Errorf("kms: audit entry: not canonical encoding version %d: %w", auditVersion, ErrShortWire)
	}
	e := &AuditEntry{}
	e.Prev = []byte(r.str())
	e.Seq = r.uvarint()
	e.Time = r.unixTime()
	e.Event = AuditEvent(r.str())
	e.Peer = r.str()
	e.Owner = r.str()
	e.Blocks = r.strs()
	e.KeyIDs = r.strs()
	e.Master = r.str()
	e.Slaves = r.strs()
	e.SAE = r.str()
	e.Actor = r.str()
	e.Bits = r.int()
	e.Bytes = r.varint()
	e.Provenance = Provenance(r.str())
	if n := r.count(); n > 0 {
		e.Fingerprints = make([][]byte, n)
		for i := range e.Fingerprints {
			e.Fingerprints[i] = []byte(r.str())
		}
	}
	e.Detail = r.str()
	if r.bool() {
		e.Checkpoint = &AuditCheckpoint{KME: r.str(), Seq: r.uvarint(), Head: []byte(r.str()),
			Signer: r.str(), Signature: []byte(r.str())}
	}
	if err := r.end(); err != nil {
		return nil, fmt.Errorf("kms: audit entry: %w", err)
	}
	return e, nil
}

// HashAuditEntry is SHA-256 of the canonical encoding of e, which starts with e.Prev: the
// link of the hash chain. scratch, if not nil, is reused for the encoding.
func HashAuditEntry(e *AuditEntry, scratch []byte) []byte {
	enc := AppendAuditCanonical(scratch[:0], e)
	h := sha256.Sum256(enc)
	return h[:]
}

// audit appends entries to the trail of tx, chaining them after its head, with the command's
// time. It is a write like any other: called only once the command passed every check.
func (m *Machine) audit(tx Tx, c *Command, es ...*AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	seq, head, err := tx.AuditHead()
	if err != nil {
		return storageErr("read audit head", err)
	}
	if head == nil {
		head = make([]byte, AuditHashSize)
	}
	var scratch []byte
	for _, e := range es {
		e.Seq, e.Time, e.Prev = seq+1, c.Time.UTC(), head
		scratch = AppendAuditCanonical(scratch[:0], e)
		h := sha256.Sum256(scratch)
		e.Hash = h[:]
		if err := tx.AppendAudit(e); err != nil {
			return storageErr(fmt.Sprintf("append audit entry %d", e.Seq), err)
		}
		seq, head = e.Seq, e.Hash
	}
	return nil
}

// auditOrFail appends entries and turns a failure into the command's Result, so apply
// functions end with `return m.auditOrFail(tx, c, res, entries...)`.
func (m *Machine) auditOrFail(tx Tx, c *Command, res *Result, es ...*AuditEntry) *Result {
	if err := m.audit(tx, c, es...); err != nil {
		return fail(err)
	}
	return res
}

// fingerprints returns the keyed fingerprints of keys, or nil when no audit key is configured.
func (m *Machine) fingerprints(keys []Key) [][]byte {
	if m.cfg.AuditKey == nil {
		return nil
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = m.cfg.AuditKey.Fingerprint(k.ID, k.Bytes)
	}
	return out
}

// applyAdmin records an operator action (or a refused admin call) proposed by the admin API.
func (m *Machine) applyAdmin(tx Tx, c *Command) *Result {
	a := c.Admin
	if a.Action == "" || a.Actor == "" {
		return fail(reject(ErrBadRequest, "admin: action and actor are required"))
	}
	if len(a.Action)+len(a.Actor)+len(a.Detail) > maxAdminRecord {
		return fail(reject(ErrBadRequest, "admin: record longer than %d bytes", maxAdminRecord))
	}
	detail := a.Action
	if a.Outcome != "" {
		detail += ": " + a.Outcome
	}
	if a.Detail != "" {
		detail += ": " + a.Detail
	}
	return m.auditOrFail(tx, c, &Result{}, &AuditEntry{Event: EventAdmin, Actor: a.Actor, Peer: a.Peer, Detail: detail})
}

// maxAdminRecord bounds the text of an admin record (it is replicated and kept forever).
const maxAdminRecord = 4096

// applyCheckpoint records the site's signature over an earlier entry of its trail. The core
// cannot sign (the key and the randomness live outside it); it checks that the signed head is
// the hash it holds at that position, so a checkpoint never vouches for another chain.
func (m *Machine) applyCheckpoint(tx Tx, c *Command) *Result {
	cp := c.Checkpoint
	if cp.KME != m.cfg.Self {
		return fail(reject(ErrBadRequest, "checkpoint: signed by %q, not this KME %q", cp.KME, m.cfg.Self))
	}
	if cp.Seq == 0 || len(cp.Head) != AuditHashSize || cp.Signer == "" || len(cp.Signature) == 0 {
		return fail(reject(ErrBadRequest, "checkpoint: seq, head, signer and signature are required"))
	}
	head, _, err := tx.AuditHead()
	if err != nil {
		return fail(storageErr("read audit head", err))
	}
	if cp.Seq > head || head-cp.Seq >= AuditCheckpointLag {
		return fail(reject(ErrBadRequest, "checkpoint: entry %d is not within the last %d of %d", cp.Seq, AuditCheckpointLag, head))
	}
	var at *AuditEntry
	if err := tx.Audit(cp.Seq, func(e *AuditEntry) bool { at = e; return false }); err != nil {
		return fail(storageErr("read audit entry", err))
	}
	if at == nil || at.Seq != cp.Seq || string(at.Hash) != string(cp.Head) {
		return fail(reject(ErrBadRequest, "checkpoint: head does not match entry %d of this trail", cp.Seq))
	}
	rec := *cp
	return m.auditOrFail(tx, c, &Result{}, &AuditEntry{Event: EventCheckpoint, Checkpoint: &rec})
}

// keyEntries records ev for reservations, one entry per run of consecutive reservations of
// the same link, issuer, SAEs, size and provenance (a command's keys normally share them all).
// fps, when not nil, holds one fingerprint per reservation. Bytes counts the key bytes of
// the run.
func keyEntries(ev AuditEvent, rs []*Reservation, fps [][]byte) []*AuditEntry {
	var out []*AuditEntry
	var cur *AuditEntry
	var last *Reservation
	for i, r := range rs {
		if cur == nil || r.Peer != last.Peer || r.Owner != last.Owner || r.Master != last.Master ||
			r.Bits != last.Bits || r.Provenance != last.Provenance || !slices.Equal(r.Slaves, last.Slaves) {
			cur = &AuditEntry{Event: ev, Peer: r.Peer, Owner: r.Owner, Master: r.Master,
				Slaves: slices.Clone(r.Slaves), Bits: r.Bits, Provenance: r.Provenance}
			out = append(out, cur)
			last = r
		}
		cur.KeyIDs = append(cur.KeyIDs, r.KeyID)
		cur.Bytes += int64(r.Bits / 8)
		if fps != nil {
			cur.Fingerprints = append(cur.Fingerprints, fps[i])
		}
	}
	return out
}

// shredEntries records the blocks whose material a blockSet flush destroyed.
func (s *blockSet) shredEntries() []*AuditEntry {
	out := make([]*AuditEntry, 0, len(s.shredded))
	for _, b := range s.shredded {
		out = append(out, &AuditEntry{Event: EventBlockShredded, Peer: b.Peer, Owner: b.Owner,
			Blocks: []string{b.ID}, Bytes: int64(b.Bytes)})
	}
	return out
}
