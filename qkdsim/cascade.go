package qkdsim

import (
	"errors"
	"io"
)

// STUB: owned by the Cascade helper, who replaces this file. The signatures are the contract.

// CascadeVariant selects the Cascade parameters.
type CascadeVariant string

const (
	CascadeOriginal CascadeVariant = "original"
	CascadeYan      CascadeVariant = "yan"
)

// ReconcileStats counts what reconciliation revealed and how long it talked.
type ReconcileStats struct {
	LeakedBits int64 // every parity bit revealed on the channel
	RoundTrips int
	Messages   int
}

// CascadeAlice answers Bob's parity queries on her key until he is done. Her key is unchanged.
func CascadeAlice(ch Channel, key Bits, v CascadeVariant) (ReconcileStats, error) {
	return ReconcileStats{}, errors.New("qkdsim: cascade not implemented")
}

// CascadeBob corrects key in place towards Alice's, given the estimated QBER. Bob drives the
// protocol and draws the shuffles from rnd.
func CascadeBob(ch Channel, key Bits, qber float64, v CascadeVariant, rnd io.Reader) (ReconcileStats, error) {
	return ReconcileStats{}, errors.New("qkdsim: cascade not implemented")
}
