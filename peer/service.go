package peer

import (
	"context"

	"github.com/qkms/qkms/kms"
)

// Service is what a site does with peer requests; the site wiring implements it on top of its
// replicated store. from is the caller's KME ID taken from its verified certificate. Inputs
// are validated before a Service method is called (see the Max* limits). A returned error
// carrying a gRPC status is passed through; the kms sentinel errors map to the matching codes
// (see statusOf); any other error is reported to the caller as Internal without its text.
type Service interface {
	// CompareBlocks compares the caller's tags with this site's tags of the same blocks and
	// returns one verdict per tag. Comparisons of tags must be constant-time.
	CompareBlocks(ctx context.Context, from string, tags []BlockTag) ([]Verdict, error)
	// PushReservations stores reservations issued by from (each has Owner == from). A
	// reservation already stored with the same content is accepted again. Every key ID is
	// either accepted or rejected.
	PushReservations(ctx context.Context, from string, rs []kms.Reservation) (accepted []string, rejected []Reject, err error)
	// PullReservations returns the reservations this site issued under keyIDs for from;
	// unknown IDs are left out.
	PullReservations(ctx context.Context, from string, keyIDs []string) ([]kms.Reservation, error)
	// RequestBlocks commits the transfer to from of untouched blocks totalling about
	// wantBytes and returns their IDs. A repeated requestID must return the recorded
	// answer instead of transferring more (kms.Command.ReqID).
	RequestBlocks(ctx context.Context, from, requestID string, wantBytes int64) ([]string, error)
	// OfferEpoch answers a pq.Offer from from (the initiator) with a pq.Reply, remembering
	// the pending exchange; it records nothing.
	OfferEpoch(ctx context.Context, from string, offer []byte) ([]byte, error)
	// ConfirmEpoch checks from's pq.Confirmation against the pending exchange and records the
	// epoch; it returns the epoch ID. A tag that does not verify must yield no epoch (and an
	// error wrapping pq.ErrConfirmation, answered FAILED_PRECONDITION).
	ConfirmEpoch(ctx context.Context, from string, confirm []byte) (string, error)
}

// BlockTag is a keyed fingerprint of one block: not secret, it reveals nothing of the bits
// without the tag key.
type BlockTag struct {
	BlockID string
	Tag     []byte
}

// Outcome is the result of comparing one block's tags.
type Outcome uint8

const (
	// OutcomeMatch: both sites hold the same bits; the block may be used.
	OutcomeMatch Outcome = iota + 1
	// OutcomeMismatch: the tags differ; both sites discard the block.
	OutcomeMismatch
	// OutcomeUnknown: the responder has not ingested the block yet; compare again later.
	OutcomeUnknown
)

func (o Outcome) String() string {
	switch o {
	case OutcomeMatch:
		return "match"
	case OutcomeMismatch:
		return "mismatch"
	case OutcomeUnknown:
		return "unknown"
	}
	return "invalid"
}

// Verdict is the responder's outcome for one block.
type Verdict struct {
	BlockID string
	Outcome Outcome
}

// RejectReason says whether a rejected reservation may be pushed again.
type RejectReason uint8

const (
	// RejectRetryLater: not stored now but may be later (e.g. a block not yet verified here).
	RejectRetryLater RejectReason = iota + 1
	// RejectInvalid: will never be stored (conflicting reservation, unknown block, overlap).
	RejectInvalid
)

func (r RejectReason) String() string {
	switch r {
	case RejectRetryLater:
		return "retry-later"
	case RejectInvalid:
		return "invalid"
	}
	return "unspecified"
}

// Reject is one reservation the responder did not store, with why.
type Reject struct {
	KeyID  string
	Reason RejectReason
	Detail string // for logs; never key material
}
