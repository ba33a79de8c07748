package pq

import (
	"crypto/rand"
	"fmt"

	"github.com/cloudflare/circl/kem/xwing"
)

// X-Wing (draft-connolly-cfrg-xwing-kem-05) from circl: ML-KEM-768 and X25519 combined by
//
//	ss = SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)
//
// so the shared secret stays secret while either component holds. These wrappers only fix the
// sizes, return errors instead of panics for malformed input, and keep the private key as its
// seed so it can be erased. TestXWingVectors reproduces the draft's test vectors.

const (
	xwingSeedSize         = xwing.SeedSize
	xwingEncapsSeedSize   = xwing.EncapsulationSeedSize
	xwingPublicKeySize    = xwing.PublicKeySize  // 1216
	xwingCiphertextSize   = xwing.CiphertextSize // 1120
	xwingSharedSecretSize = xwing.SharedKeySize  // 32
)

// xwingPrivateKey is a decapsulation key: X-Wing's private key is its 32-byte seed.
type xwingPrivateKey struct {
	seed [xwingSeedSize]byte
}

// xwingDeriveKeyPair derives the key pair of a seed (the draft's DeriveKeyPair).
func xwingDeriveKeyPair(seed []byte) (*xwingPrivateKey, []byte, error) {
	if len(seed) != xwingSeedSize {
		return nil, nil, fmt.Errorf("X-Wing seed of %d bytes, want %d", len(seed), xwingSeedSize)
	}
	sk := &xwingPrivateKey{}
	copy(sk.seed[:], seed)
	_, pk := xwing.DeriveKeyPairPacked(seed)
	return sk, pk, nil
}

func xwingGenerateKeyPair() (*xwingPrivateKey, []byte, error) {
	var seed [xwingSeedSize]byte
	defer clear(seed[:])
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, nil, err
	}
	return xwingDeriveKeyPair(seed[:])
}

// xwingEncapsulate encapsulates to pk; eseed (64 bytes) makes it deterministic for test
// vectors, nil draws fresh randomness. Returns (shared secret, ciphertext), the draft's order.
func xwingEncapsulate(pk, eseed []byte) (ss, ct []byte, err error) {
	if len(pk) != xwingPublicKeySize {
		return nil, nil, fmt.Errorf("%w: X-Wing public key of %d bytes", ErrMalformed, len(pk))
	}
	if eseed != nil && len(eseed) != xwingEncapsSeedSize {
		return nil, nil, fmt.Errorf("X-Wing encapsulation seed of %d bytes", len(eseed))
	}
	ss, ct, err = xwing.Encapsulate(pk, eseed)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: X-Wing public key: %v", ErrMalformed, err)
	}
	return ss, ct, nil
}

// decapsulate recovers the shared secret from ct. A tampered ML-KEM part does not fail here
// (implicit rejection, FIPS 203 §6.3): it yields an unrelated secret, caught by confirmation.
func (sk *xwingPrivateKey) decapsulate(ct []byte) ([]byte, error) {
	if len(ct) != xwingCiphertextSize {
		return nil, fmt.Errorf("X-Wing ciphertext of %d bytes", len(ct))
	}
	return xwing.Decapsulate(ct, sk.seed[:]), nil
}

// destroy erases the key (best effort: see the package doc).
func (sk *xwingPrivateKey) destroy() { clear(sk.seed[:]) }
