package qkdsim

import (
	"errors"
	"io"
)

// STUB: owned by the Cascade helper, who replaces this file. The signatures are the contract.

// ErrVerifyFailed means the reconciled keys differ; the block must be dropped at both ends.
var ErrVerifyFailed = errors.New("qkdsim: verification failed: keys differ after reconciliation")

// VerifyAlice draws a hash seed from rnd, sends seed and tag, and learns Bob's verdict.
// leaked is the number of tag bits revealed.
func VerifyAlice(ch Channel, key Bits, rnd io.Reader) (leaked int, err error) {
	return 0, errors.New("qkdsim: verify not implemented")
}

// VerifyBob checks Alice's tag against his key and tells her the verdict.
func VerifyBob(ch Channel, key Bits) (leaked int, err error) {
	return 0, errors.New("qkdsim: verify not implemented")
}
