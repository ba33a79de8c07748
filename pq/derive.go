package pq

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Per-key derivation. Both sites call the same function with the same KeyContext and epoch and
// get the same bytes; only the key ID (and the epoch ID) cross the wire.
//
// Construction (ETSI TS 103 744 CatKDF; NIST SP 800-56C rev2 §2 hybrid secret Z' = Z || T and §5
// two-step KDF), HKDF-SHA-256 (RFC 5869):
//
//	hybrid: PRK = HKDF-Extract(salt = "", IKM = QKD key || epoch secret)
//	pqc:    PRK = HKDF-Extract(salt = "", IKM = epoch secret)
//	key     = HKDF-Expand(PRK, info, n)
//	info    = label | uint32 n | len16 key ID | key ID | len16 source KME | ... | len16 master SAE |
//	          ... | uint16 #slaves | len16 slave ... | len16 epoch ID | epoch ID | epoch transcript hash
//
// where label is "qkms hybrid key v1" or "qkms pqc key v1", so a hybrid and a pqc key of the same
// key ID are unrelated, and n is bound so a shorter key is not a prefix of a longer one. The
// epoch transcript hash covers the KEM public key and ciphertext and both KME IDs, so the whole
// transcript the issue asks for (key ID, KME IDs, SAE IDs, ciphertext) is in every key.
//
// Why HKDF-SHA-256 rather than SHA-3/KMAC: both are approved by SP 800-56C; HKDF is what ETSI
// CatKDF specifies, it is in the standard library (crypto/hkdf, FIPS 140-3 validated module),
// runs on SHA-NI in a few µs per key (see BenchmarkHybridKey), and the exchange already uses it. The
// concatenation combiner's security — the output is pseudorandom if either the QKD key or the
// epoch secret is, even if the attacker knows or chooses the other — rests on HMAC being a
// "dual PRF" keyed through its message input, the assumption under TLS 1.3's hybrid key exchange
// and analysed by Bindel, Brendel, Fischlin, Goncalves and Stebila (PQCrypto 2019, "Hybrid Key
// Encapsulation Mechanisms and Authenticated Key Exchange"). The epoch secret has a fixed length
// and comes last, so the concatenation splits one way only. KMAC256 would rest on the Keccak
// sponge instead; it would be an equally sound choice but needs code outside the standard
// library (crypto/sha3 has cSHAKE, not KMAC).

// KeyContext is the public transcript of one key: who issued it, to whom, under which ID. Both
// sites must fill it identically (from the reservation), or their keys differ.
type KeyContext struct {
	KeyID     string   // ETSI key ID (UUID) — binding it stops key-ID confusion (arXiv 2509.12478)
	SourceKME string   // KME ID of the site that issued the key (the master SAE's site)
	TargetKME string   // KME ID of the other site
	MasterSAE string   // master SAE ID
	SlaveSAEs []string // slave SAE ID first, then additional slaves, in the reservation's order
}

// MaxKeyBytes is the longest key one derivation yields (RFC 5869: 255 blocks of SHA-256).
const MaxKeyBytes = 255 * sha256.Size

// Sentinel errors of derivation.
var (
	// ErrEpochMismatch is an epoch that does not belong to the context's pair of KMEs, or one
	// already destroyed.
	ErrEpochMismatch = errors.New("pq: epoch does not belong to this pair of KMEs")
	// ErrKeyContext is an incomplete key context or an impossible key length.
	ErrKeyContext = errors.New("pq: invalid key context")
)

const (
	labelHybrid = "qkms hybrid key v1"
	labelPQC    = "qkms pqc key v1"
	maxField    = 1<<16 - 1
)

// HybridKey derives the n-byte key for kc from a QKD key and an epoch: secret as long as either
// the QKD key or the epoch secret is. qkdKey is the key's QKD bits, read from the reservation's
// ranges (must be non-empty). The result is fresh memory; the caller erases it after delivery.
func HybridKey(qkdKey []byte, ep *Epoch, kc KeyContext, n int) ([]byte, error) {
	if len(qkdKey) == 0 {
		return nil, fmt.Errorf("pq: hybrid key %s: no QKD key bits: %w", kc.KeyID, ErrKeyContext)
	}
	return derive(labelHybrid, qkdKey, ep, kc, n)
}

// PQCKey derives the n-byte pqc-fallback key for kc from the epoch secret alone: deterministic in
// (epoch, kc, n), so both sites derive it without anything secret crossing the wire. It is as
// strong as the epoch's X-Wing exchange, and no stronger: use it only where policy allows pqc.
func PQCKey(ep *Epoch, kc KeyContext, n int) ([]byte, error) {
	return derive(labelPQC, nil, ep, kc, n)
}

func derive(label string, qkdKey []byte, ep *Epoch, kc KeyContext, n int) ([]byte, error) {
	if err := checkContext(ep, kc, n); err != nil {
		return nil, fmt.Errorf("pq: derive key %s: %w", kc.KeyID, err)
	}
	ikm := make([]byte, 0, len(qkdKey)+len(ep.Secret))
	ikm = append(append(ikm, qkdKey...), ep.Secret...)
	prk, err := hkdf.Extract(sha256.New, ikm, nil)
	clear(ikm)
	if err != nil {
		return nil, fmt.Errorf("pq: derive key %s: %w", kc.KeyID, err)
	}
	key, err := hkdf.Expand(sha256.New, prk, string(keyInfo(label, ep, kc, n)), n)
	clear(prk)
	if err != nil {
		return nil, fmt.Errorf("pq: derive key %s: %w", kc.KeyID, err)
	}
	return key, nil
}

func checkContext(ep *Epoch, kc KeyContext, n int) error {
	switch {
	case n <= 0 || n > MaxKeyBytes:
		return fmt.Errorf("key of %d bytes, want 1 to %d: %w", n, MaxKeyBytes, ErrKeyContext)
	case kc.KeyID == "" || kc.SourceKME == "" || kc.TargetKME == "" || kc.MasterSAE == "" || len(kc.SlaveSAEs) == 0:
		return fmt.Errorf("key ID, both KME IDs, master and slave SAE IDs are required: %w", ErrKeyContext)
	case len(kc.SlaveSAEs) > maxField:
		return fmt.Errorf("%d slave SAEs: %w", len(kc.SlaveSAEs), ErrKeyContext)
	case ep == nil || len(ep.Secret) != SecretSize:
		return fmt.Errorf("no live epoch: %w", ErrEpochMismatch)
	case !(kc.SourceKME == ep.Initiator && kc.TargetKME == ep.Responder) &&
		!(kc.SourceKME == ep.Responder && kc.TargetKME == ep.Initiator):
		return fmt.Errorf("epoch %s is between %s and %s, key is from %s to %s: %w",
			ep.ID, ep.Initiator, ep.Responder, kc.SourceKME, kc.TargetKME, ErrEpochMismatch)
	}
	for _, s := range append([]string{kc.KeyID, kc.SourceKME, kc.TargetKME, kc.MasterSAE, ep.ID}, kc.SlaveSAEs...) {
		if len(s) > maxField || s == "" {
			return fmt.Errorf("field of %d bytes: %w", len(s), ErrKeyContext)
		}
	}
	return nil
}

// keyInfo is the HKDF info: the key's public transcript, every field length-prefixed.
func keyInfo(label string, ep *Epoch, kc KeyContext, n int) []byte {
	size := len(label) + 4 + 2*6 + len(kc.KeyID) + len(kc.SourceKME) + len(kc.TargetKME) + len(kc.MasterSAE) + len(ep.ID) + len(ep.Transcript)
	for _, s := range kc.SlaveSAEs {
		size += 2 + len(s)
	}
	b := make([]byte, 0, size)
	b = append(b, label...)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = appendString16(b, kc.KeyID)
	b = appendString16(b, kc.SourceKME)
	b = appendString16(b, kc.TargetKME)
	b = appendString16(b, kc.MasterSAE)
	b = binary.BigEndian.AppendUint16(b, uint16(len(kc.SlaveSAEs)))
	for _, s := range kc.SlaveSAEs {
		b = appendString16(b, s)
	}
	b = appendString16(b, ep.ID)
	return append(b, ep.Transcript[:]...)
}
