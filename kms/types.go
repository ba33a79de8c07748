package kms

import (
	"errors"
	"slices"
	"time"
)

// Provenance says where a key's bits come from (DESIGN.md invariant 6).
type Provenance string

const (
	ProvenanceQKD    Provenance = "qkd"
	ProvenanceHybrid Provenance = "hybrid"
	ProvenancePQC    Provenance = "pqc"
)

// BlockState is where a block stands in cross-site verification.
type BlockState uint8

const (
	// BlockPending: ingested, its tag not yet compared with the peer's; no bit may be used.
	BlockPending BlockState = iota
	// BlockVerified: both sites hold the same bits; usable.
	BlockVerified
	// BlockDiscarded: the peer's tag differed (or the peer lost it); never used, material dropped.
	BlockDiscarded
)

// Block is the metadata of one key block of a link's key stream, as held by one site.
// The bits themselves live in the Tx's material store, sealed.
type Block struct {
	Peer  string     `json:"peer"`  // KME ID of the site at the other end of the link
	ID    string     `json:"id"`    // block ID, identical at both ends
	Seq   uint64     `json:"seq"`   // position in this pool's ingest order (assigned by Apply)
	Bytes int        `json:"bytes"` // usable key bytes in the block
	Owner string     `json:"owner"` // KME ID that issues keys from this block
	State BlockState `json:"state"`
	// Tag is the keyed fingerprint compared with the peer (computed outside the core; not secret).
	Tag []byte `json:"tag"`
	// Next is the owner's allocation cursor: bytes [0, Next) are allocated.
	Next int `json:"next"`
	// Released counts bytes this site has finished with (delivered, expired or void).
	// When Released == Bytes the block's material is dropped (crypto-shredding).
	Released int       `json:"released"`
	QBER     float64   `json:"qber"`
	Ingested time.Time `json:"ingested"`
}

// Range is a run of bytes of one block.
type Range struct {
	Block string `json:"block"`
	Off   int    `json:"off"`
	Len   int    `json:"len"`
}

// KeyState is the lifecycle of a reservation at one site.
type KeyState uint8

const (
	KeyIssued  KeyState = iota // reserved; at the owner it was handed to the master
	KeyFetched                 // every slave fetched it
	KeyExpired                 // expired before every slave fetched it
)

// Reservation says which bits make key KeyID and who may have them.
type Reservation struct {
	KeyID      string     `json:"key_id"` // UUID
	Peer       string     `json:"peer"`   // the other site's KME ID
	Owner      string     `json:"owner"`  // KME ID of the site that issued it (the master's site)
	Master     string     `json:"master"` // master SAE ID
	Slaves     []string   `json:"slaves"` // slave SAE ID first, then additional slaves
	Fetched    []string   `json:"fetched,omitempty"`
	Bits       int        `json:"bits"`
	Ranges     []Range    `json:"ranges"`
	Provenance Provenance `json:"provenance"`
	Issued     time.Time  `json:"issued"`
	Expires    time.Time  `json:"expires"`
	State      KeyState   `json:"state"`
	// Pushed is set at the owner once the peer confirmed it stored the reservation, if that
	// comes while it is Issued (Tx.MarkPushed; the store may keep it apart from the record).
	Pushed bool `json:"pushed"`
	// Epoch is the PQ epoch a hybrid or pqc key is derived from (EpochCmd); empty for qkd.
	Epoch string `json:"epoch,omitempty"`
}

// Pool is the per-peer summary a site keeps; derived counters are kept current by Apply.
type Pool struct {
	Peer    string `json:"peer"`
	NextSeq uint64 `json:"next_seq"`
	// Owned lists the verified blocks owned here with free bytes, in Seq order. A pool read
	// from the store may share this array with other readers: replace the slice (reslice,
	// append, insert, remove into a new array), never write its elements in place.
	Owned     []string `json:"owned"`
	Available int64    `json:"available"` // free bytes in Owned blocks
	Pending   int64    `json:"pending"`   // bytes in blocks awaiting verification
	Reserved  int64    `json:"reserved"`  // bytes of live reservations awaiting fetch at this site
	// Paused: the operator paused the link (LinkCmd); no qkd or hybrid key is issued on it.
	Paused bool `json:"paused,omitempty"`
	// Epochs are the PQ epochs shared with the peer, oldest first; the last is current.
	Epochs []EpochInfo `json:"epochs,omitempty"`
}

// Clone returns a copy that shares no slice with p, for callers that keep a pool beyond the
// transaction it was read in.
func (p *Pool) Clone() *Pool {
	c := *p
	c.Owned = slices.Clone(p.Owned)
	c.Epochs = slices.Clone(p.Epochs)
	return &c
}

// Tx is the storage the core runs on: one transaction of the node's store. Apply reads and
// writes only through it, so a batch of commands is atomic and a crash leaves either all of it
// or none. Getters return (nil, nil) when the record does not exist.
type Tx interface {
	Pool(peer string) (*Pool, error)
	PutPool(p *Pool) error
	Block(peer, id string) (*Block, error)
	PutBlock(b *Block) error
	Reservation(keyID string) (*Reservation, error)
	PutReservation(r *Reservation) error
	// MarkPushed records that the peer stored reservation keyID, if it is one site self issued
	// that is still Issued and not marked yet (Reservation.Pushed); otherwise it does nothing.
	MarkPushed(self, keyID string) error
	DeleteReservation(keyID string) error
	// ExpiredBefore lists up to limit key IDs of reservations (any state, tombstones included)
	// with Expires <= t, earliest first.
	ExpiredBefore(t time.Time, limit int) ([]string, error)
	// Request returns the record of an already applied request ID, or nil.
	Request(reqID string) (*RequestRecord, error)
	// PutRequest records an applied request ID. The keys it delivered are sealed at rest.
	PutRequest(reqID string, rec *RequestRecord) error
	// ExpireRequests deletes up to limit request records applied before t and returns how
	// many it deleted.
	ExpireRequests(before time.Time, limit int) (int, error)

	// Blocks calls fn for each block of peer's pool in Seq order until fn returns false.
	Blocks(peer string, fn func(*Block) bool) error
	// BlocksNewestFirst is Blocks in descending Seq order: blocks awaiting verification are
	// the newest, so finding them does not cost a walk over the whole pool.
	BlocksNewestFirst(peer string, fn func(*Block) bool) error
	// Pools calls fn for each pool until fn returns false.
	Pools(fn func(*Pool) bool) error
	// Reservations calls fn for each stored reservation (any state) until fn returns false.
	Reservations(fn func(*Reservation) bool) error

	// PutMaterial stores a block's key material, sealed outside the core (opaque here).
	PutMaterial(peer, blockID string, sealed []byte) error
	// ReadMaterial returns plaintext bytes [off, off+n) of a block.
	ReadMaterial(peer, blockID string, off, n int) ([]byte, error)
	// EraseMaterial destroys bytes [off, off+n) of a block.
	EraseMaterial(peer, blockID string, off, n int) error
	// DropMaterial destroys all of a block's material and its data key.
	DropMaterial(peer, blockID string) error

	// The audit trail is written in the same transaction as the change it records.
	AuditTx
}

// RequestRecord is what a site keeps of an applied request ID for the deduplication window
// (Config.RequestTTL): a retry after an unknown outcome (a lost answer, a leader change) gets
// the first application's answer instead of a second application or a refusal. For Issue and
// Fetch that answer holds the delivered keys, which the store keeps sealed and erases with the
// record, so the same SAE asking again through the same request gets the same keys.
type RequestRecord struct {
	Kind string        `json:"kind"`
	At   time.Time     `json:"at"` // command time of the first application
	Keys []RecordedKey `json:"keys,omitempty"`
}

// RecordedKey is one key a recorded request delivered.
type RecordedKey struct {
	ID         string     `json:"id"`
	Bytes      []byte     `json:"bytes"`
	Provenance Provenance `json:"provenance"`
}

// Sentinel errors callers branch on. Messages are written for the SAE that will read them.
var (
	ErrBadRequest     = errors.New("kms: bad request")
	ErrNotEnoughKey   = errors.New("kms: not enough key material")
	ErrUnknownSAE     = errors.New("kms: unknown SAE")
	ErrUnauthorized   = errors.New("kms: not authorized")
	ErrKeyNotFound    = errors.New("kms: one or more keys specified are not found on KME")
	ErrNotConfirmed   = errors.New("kms: reservation not yet confirmed by the issuing site")
	ErrAlreadyApplied = errors.New("kms: request already processed")
)
