package qkdsim

import (
	"errors"
	"io"
)

// STUB: owned by the privacy-amplification helper, who replaces this file. The signatures are
// the contract.

// AmplifyAlice draws a Toeplitz seed from rnd, sends it to Bob and returns m bits hashed from key.
func AmplifyAlice(ch Channel, key Bits, m int, rnd io.Reader) (Bits, error) {
	return Bits{}, errors.New("qkdsim: amplify not implemented")
}

// AmplifyBob receives Alice's seed and returns the same m bits from his (reconciled) key.
func AmplifyBob(ch Channel, key Bits, m int) (Bits, error) {
	return Bits{}, errors.New("qkdsim: amplify not implemented")
}
