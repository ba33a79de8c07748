package pq

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha3"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/kem/mlkem/mlkem768"
)

// X-Wing, draft-connolly-cfrg-xwing-kem-05: ML-KEM-768 and X25519 combined by
//
//	ss = SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)
//
// so the shared secret is secret while either component holds (the draft's §6 security
// argument relies on ML-KEM's ciphertext binding the ML-KEM part, hence ct_M is left out).
//
// This is assembled here from circl's ML-KEM-768 (FIPS 203) and the standard library's X25519
// and SHA-3 rather than taken from circl's kem/xwing because circl's X25519 (dh/x25519, via
// math/fp25519) imports golang.org/x/crypto/cryptobyte, which this module does not depend on.
// Encodings and outputs are the draft's exactly: TestXWingVectors reproduces the draft's test
// vectors (the checksum circl's own test uses). Should the module take golang.org/x/crypto,
// this file can give way to circl's kem/xwing without any change on the wire.
//
// One deliberate deviation: crypto/ecdh refuses an X25519 exchange that yields the all-zero
// secret (a low-order point, RFC 7748 §6.1), where the draft currently ignores it (its issue 28).
// Encapsulating to such a key fails with ErrMalformed; decapsulating such a ciphertext fails,
// and the exchange ends with ErrConfirmation, as for any tampered ciphertext.

const (
	xwingSeedSize         = 32
	xwingEncapsSeedSize   = 64
	xwingPublicKeySize    = mlkem768.PublicKeySize + 32  // 1216
	xwingCiphertextSize   = mlkem768.CiphertextSize + 32 // 1120
	xwingSharedSecretSize = 32
	xwingLabel            = `\.//^\`
)

// xwingPrivateKey is a decapsulation key, expanded. The X25519 scalar is kept as bytes so it can
// be cleared; crypto/ecdh keys are opaque.
type xwingPrivateKey struct {
	m   *mlkem768.PrivateKey
	x   [32]byte // X25519 scalar
	xpk [32]byte // X25519 public key
}

// xwingDeriveKeyPair is the draft's expandDecapsulationKey: SHAKE-256(seed) gives the ML-KEM-768
// seed (d || z, 64 bytes) and the X25519 scalar (32 bytes).
func xwingDeriveKeyPair(seed []byte) (*xwingPrivateKey, []byte, error) {
	if len(seed) != xwingSeedSize {
		return nil, nil, fmt.Errorf("X-Wing seed of %d bytes", len(seed))
	}
	expanded := sha3.SumSHAKE256(seed, mlkem768.KeySeedSize+32)
	defer clear(expanded)
	pkM, skM := mlkem768.NewKeyFromSeed(expanded[:mlkem768.KeySeedSize])
	sk := &xwingPrivateKey{m: skM}
	copy(sk.x[:], expanded[mlkem768.KeySeedSize:])
	x, err := ecdh.X25519().NewPrivateKey(sk.x[:])
	if err != nil {
		return nil, nil, err
	}
	copy(sk.xpk[:], x.PublicKey().Bytes())
	pk := make([]byte, xwingPublicKeySize)
	pkM.Pack(pk[:mlkem768.PublicKeySize])
	copy(pk[mlkem768.PublicKeySize:], sk.xpk[:])
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

var errLowOrder = errors.New("X25519 low-order point")

// xwingEncapsulate encapsulates to pk with the 64-byte encapsulation seed eseed (ML-KEM's m,
// then the ephemeral X25519 scalar), or fresh randomness if eseed is nil. It returns
// (shared secret, ciphertext), the draft's order.
func xwingEncapsulate(pk, eseed []byte) (ss, ct []byte, err error) {
	if len(pk) != xwingPublicKeySize {
		return nil, nil, fmt.Errorf("X-Wing public key of %d bytes", len(pk))
	}
	var seed [xwingEncapsSeedSize]byte
	defer clear(seed[:])
	if eseed == nil {
		if _, err := rand.Read(seed[:]); err != nil {
			return nil, nil, err
		}
	} else if len(eseed) != xwingEncapsSeedSize {
		return nil, nil, fmt.Errorf("X-Wing encapsulation seed of %d bytes", len(eseed))
	} else {
		copy(seed[:], eseed)
	}
	var pkM mlkem768.PublicKey
	if err := pkM.Unpack(pk[:mlkem768.PublicKeySize]); err != nil { // FIPS 203 §7.2 modulus check
		return nil, nil, err
	}
	pkX, err := ecdh.X25519().NewPublicKey(pk[mlkem768.PublicKeySize:])
	if err != nil {
		return nil, nil, err
	}
	ek, err := ecdh.X25519().NewPrivateKey(seed[32:])
	if err != nil {
		return nil, nil, err
	}
	ssX, err := ek.ECDH(pkX)
	if err != nil {
		return nil, nil, errLowOrder
	}
	defer clear(ssX)
	ct = make([]byte, xwingCiphertextSize)
	var ssM [mlkem768.SharedKeySize]byte
	defer clear(ssM[:])
	pkM.EncapsulateTo(ct[:mlkem768.CiphertextSize], ssM[:], seed[:32])
	copy(ct[mlkem768.CiphertextSize:], ek.PublicKey().Bytes())
	return xwingCombine(ssM[:], ssX, ct[mlkem768.CiphertextSize:], pk[mlkem768.PublicKeySize:]), ct, nil
}

// decapsulate recovers the shared secret from ct. A tampered ML-KEM part does not fail here
// (implicit rejection, FIPS 203 §6.3): it yields an unrelated secret, caught by confirmation.
func (sk *xwingPrivateKey) decapsulate(ct []byte) ([]byte, error) {
	if len(ct) != xwingCiphertextSize {
		return nil, fmt.Errorf("X-Wing ciphertext of %d bytes", len(ct))
	}
	ctX, err := ecdh.X25519().NewPublicKey(ct[mlkem768.CiphertextSize:])
	if err != nil {
		return nil, err
	}
	x, err := ecdh.X25519().NewPrivateKey(sk.x[:])
	if err != nil {
		return nil, err
	}
	ssX, err := x.ECDH(ctX)
	if err != nil {
		return nil, errLowOrder
	}
	defer clear(ssX)
	var ssM [mlkem768.SharedKeySize]byte
	defer clear(ssM[:])
	sk.m.DecapsulateTo(ssM[:], ct[:mlkem768.CiphertextSize])
	return xwingCombine(ssM[:], ssX, ct[mlkem768.CiphertextSize:], sk.xpk[:]), nil
}

// destroy erases the key (best effort: see the package doc).
func (sk *xwingPrivateKey) destroy() {
	if sk.m != nil {
		*sk.m = mlkem768.PrivateKey{}
	}
	clear(sk.x[:])
}

func xwingCombine(ssM, ssX, ctX, pkX []byte) []byte {
	h := sha3.New256()
	h.Write(ssM)
	h.Write(ssX)
	h.Write(ctX)
	h.Write(pkX)
	h.Write([]byte(xwingLabel))
	return h.Sum(nil)
}
