package kms

import "time"

// Command is one state change of a site. Commands are proposed by a node, carried through the
// replicated log, and applied by Machine.Apply on every node of the site in log order. Apply
// must be deterministic: everything it needs (time, key IDs, the sealed material) is in the
// command, never read from the environment.
type Command struct {
	Time  time.Time `json:"t"`             // proposer's clock
	ReqID string    `json:"rid,omitempty"` // idempotency key; a repeated ReqID is not applied twice

	Ingest      *IngestCmd      `json:"ingest,omitempty"`
	Verify      *VerifyCmd      `json:"verify,omitempty"`
	Issue       *IssueCmd       `json:"issue,omitempty"`
	Fetch       *FetchCmd       `json:"fetch,omitempty"`
	PeerReserve *PeerReserveCmd `json:"peer_reserve,omitempty"`
	MarkPushed  *MarkPushedCmd  `json:"mark_pushed,omitempty"`
	Expire      *ExpireCmd      `json:"expire,omitempty"`
	Transfer    *TransferCmd    `json:"transfer,omitempty"`
	Admin       *AdminCmd       `json:"admin,omitempty"`
	Checkpoint  *CheckpointCmd  `json:"checkpoint,omitempty"`
	Zeroize     *ZeroizeCmd     `json:"zeroize,omitempty"`
	Epoch       *EpochCmd       `json:"epoch,omitempty"`
	Link        *LinkCmd        `json:"link,omitempty"`
}

// IngestCmd adds a block of link key to the pool of Peer.
type IngestCmd struct {
	Peer    string  `json:"peer"`
	BlockID string  `json:"block"`
	Bytes   int     `json:"bytes"`
	Owner   string  `json:"owner"`
	Tag     []byte  `json:"tag"`
	QBER    float64 `json:"qber"`
	Sealed  []byte  `json:"sealed"` // material sealed by the node's store; opaque to the core
}

// VerifyCmd records the outcome of comparing a block's tag with the peer's.
type VerifyCmd struct {
	Peer    string `json:"peer"`
	BlockID string `json:"block"`
	Match   bool   `json:"match"`
}

// IssueCmd is ETSI 014 Get key at the master's site: reserve Number keys of Bits bits for
// Master and Slaves from blocks this site owns in the pool of Peer.
type IssueCmd struct {
	Self       string     `json:"self"` // this site's KME ID
	Peer       string     `json:"peer"`
	Master     string     `json:"master"`
	Slaves     []string   `json:"slaves"`
	Bits       int        `json:"bits"`
	KeyIDs     []string   `json:"key_ids"` // one fresh UUID per key, drawn by the proposer
	Expires    time.Time  `json:"expires"`
	Provenance Provenance `json:"provenance"`
}

// FetchCmd is ETSI 014 Get key with key IDs at a slave's site.
type FetchCmd struct {
	Master string   `json:"master"`
	Caller string   `json:"caller"` // slave SAE ID from the client certificate
	KeyIDs []string `json:"key_ids"`
}

// PeerReserveCmd stores reservations the peer site issued (pushed or pulled).
type PeerReserveCmd struct {
	From         string        `json:"from"` // the peer's KME ID, from its certificate
	Reservations []Reservation `json:"reservations"`
}

// MarkPushedCmd records that the peer acknowledged these reservations.
type MarkPushedCmd struct {
	KeyIDs []string `json:"key_ids"`
}

// ExpireCmd expires up to Limit reservations whose expiry is at or before Command.Time.
type ExpireCmd struct {
	Limit int `json:"limit"`
}

// TransferCmd moves ownership of untouched blocks (Next == 0) of Peer's pool to To.
type TransferCmd struct {
	Peer     string   `json:"peer"`
	BlockIDs []string `json:"blocks"`
	To       string   `json:"to"`
}

// AdminCmd records an operator action, or a refused call to the admin API, in the audit trail.
// It changes no other state.
type AdminCmd struct {
	Action  string `json:"action"`            // the admin API method, e.g. "/qkms.v1.Admin/Zeroize"
	Actor   string `json:"actor"`             // certificate ID of the caller
	Outcome string `json:"outcome,omitempty"` // e.g. "denied", "done"
	Peer    string `json:"peer,omitempty"`    // the pool acted on, if any
	Detail  string `json:"detail,omitempty"`  // reason given by the operator, role of a refused caller
}

// CheckpointCmd records the site's signature over entry Seq of its audit trail, whose hash is
// Head. The signature is made outside the core by the leader (site/audit.go).
type CheckpointCmd = AuditCheckpoint

// Key is one delivered key: its ID and bytes. Results holding Keys never leave the process.
type Key struct {
	ID    string
	Bytes []byte
	Res   *Reservation
}

// Result is what Apply returns for one command. It is kept in memory only: it may hold key
// bytes, so it is never logged or persisted.
type Result struct {
	Err          error
	Keys         []Key
	Reservations []Reservation // Issue: to push to the peer; Verify: nothing
	Expired      []string      // Expire, Zeroize: key IDs expired or voided
	Transferred  []string      // Transfer: blocks whose ownership moved
	Zeroized     []string      // Zeroize: blocks whose material was erased
	// Replayed says the keys repeat what an earlier application of the same request ID
	// delivered (a retry after an unknown outcome, or an SAE's Idempotency-Key).
	Replayed bool
}
