package qkdsim

import "errors"

// STUB: owned by the privacy-amplification helper, who replaces this file. The signatures are
// the contract.

// ErrAuthFailed means a classical-channel message failed authentication.
var ErrAuthFailed = errors.New("qkdsim: classical channel authentication failed")

// AuthKey is one party's store of authentication key: a long-lived hash key plus one-time pads,
// bootstrapped from a pre-shared key and refilled from produced key.
type AuthKey struct{}

// NewAuthKey bootstraps from a pre-shared key shared by both ends.
func NewAuthKey(psk []byte) (*AuthKey, error) { return nil, errors.New("qkdsim: auth not implemented") }

// Refill adds produced key bytes to the pad store (both ends add the same bytes in the same order).
func (k *AuthKey) Refill(p []byte) {}

// Available is the number of pad bits left.
func (k *AuthKey) Available() int { return 0 }

// Consumed is the number of key bits spent on tags so far.
func (k *AuthKey) Consumed() int64 { return 0 }

// Authenticate wraps ch so every message carries a Wegman-Carter tag; alice says which end this is
// (the two directions use separate pads).
func Authenticate(ch Channel, k *AuthKey, alice bool) Channel { return ch }
