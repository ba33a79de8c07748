package kms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Keyed fingerprints let an auditor show that both ends of a link delivered the same key for a
// key ID without ever seeing the key, while each site keeps its own audit key.
//
// A plain HMAC under a per-site key cannot do that: HMAC_kA(key) and HMAC_kB(key) are
// unrelated, and recomputing either needs the key. So the fingerprint is a deterministic
// authenticated encryption, under the site's audit key, of a digest of the key:
//
//	d   = SHA-256("qkms audit key digest v1" | len(keyID) | keyID | key)
//	iv  = HMAC-SHA256(k_mac, len(keyID) | keyID | d)[:16]
//	fp  = iv | AES-256-CTR(k_enc, iv, d)                          (48 bytes)
//
// with k_mac and k_enc drawn from the audit key by HKDF-SHA256 (RFC 5869) under distinct
// labels. This is the SIV construction of Rogaway and Shrimpton ("Deterministic
// Authenticated-Encryption", EUROCRYPT 2006; RFC 5297 instantiates it with CMAC): the IV is a
// PRF of the plaintext and the associated data (the key ID), so it is deterministic, which Apply
// requires (every node of a site must write the same entry), and never repeats for different
// inputs. An auditor holding site A's and site B's audit keys opens both fingerprints of a key
// ID, which checks their IVs (so neither can be forged without the audit key), and compares
// the digests. The digest is a commitment to a uniformly random key of at least 64 bits: it
// reveals nothing usable about the key, and the key ID and a label are hashed in so it is
// useless outside this trail. Without the audit key a fingerprint reveals nothing at all (not
// even whether two sites' fingerprints are of the same key).

// AuditKeySize is the size of a site's audit key.
const AuditKeySize = 32

// FingerprintSize is the size of a keyed fingerprint.
const FingerprintSize = 16 + sha256.Size

// ErrFingerprint is a fingerprint that does not open under the audit key given: made under
// another key, for another key ID, or altered.
var ErrFingerprint = errors.New("kms: fingerprint does not authenticate under this audit key")

// AuditKey computes and opens keyed fingerprints. It is immutable and safe for concurrent use.
type AuditKey struct {
	mac []byte
	enc cipher.Block
	// states holds *fpState with HMAC-SHA256 keyed with mac: keying one hashes two blocks and
	// allocates, and Apply fingerprints every key it issues and fetches.
	states sync.Pool
}

// fpState is the working state of one fingerprint. Its buffers live with it because a slice
// passed to a hash.Hash or cipher.Block method escapes to the heap.
type fpState struct {
	sha, mac hash.Hash
	prefix   []byte // len(keyID) | keyID
	digest   [sha256.Size]byte
	tag      [sha256.Size]byte
	ctr, ks  [aes.BlockSize]byte
}

// NewAuditKey derives the fingerprint keys from a site's AuditKeySize-byte audit key.
func NewAuditKey(secret []byte) (*AuditKey, error) {
	if len(secret) != AuditKeySize {
		return nil, fmt.Errorf("kms: audit key must be %d bytes, got %d", AuditKeySize, len(secret))
	}
	mac, err := hkdf.Key(sha256.New, secret, nil, "qkms audit fingerprint mac v1", 32)
	if err != nil {
		return nil, fmt.Errorf("kms: audit key: %w", err)
	}
	encKey, err := hkdf.Key(sha256.New, secret, nil, "qkms audit fingerprint enc v1", 32)
	if err != nil {
		return nil, fmt.Errorf("kms: audit key: %w", err)
	}
	enc, err := aes.NewCipher(encKey)
	clear(encKey)
	if err != nil {
		return nil, fmt.Errorf("kms: audit key: %w", err)
	}
	k := &AuditKey{mac: mac, enc: enc}
	k.states.New = func() any { return &fpState{sha: sha256.New(), mac: hmac.New(sha256.New, k.mac)} }
	return k, nil
}

var digestLabel = []byte("qkms audit key digest v1")

// KeyDigest is the digest of a key that fingerprints carry (see above).
func KeyDigest(keyID string, key []byte) []byte {
	st := &fpState{sha: sha256.New()}
	return bytes.Clone(st.keyDigest(keyID, key))
}

// keyDigest computes d into st.digest, leaving len(keyID) | keyID in st.prefix.
func (st *fpState) keyDigest(keyID string, key []byte) []byte {
	st.prefix = appendStr(st.prefix[:0], keyID)
	st.sha.Reset()
	st.sha.Write(digestLabel)
	st.sha.Write(st.prefix)
	st.sha.Write(key)
	return st.sha.Sum(st.digest[:0])
}

// iv computes the fingerprint's IV of digest d for the key ID in st.prefix.
func (st *fpState) iv(d []byte) []byte {
	st.mac.Reset()
	st.mac.Write(st.prefix)
	st.mac.Write(d)
	return st.mac.Sum(st.tag[:0])[:aes.BlockSize]
}

// xorCTR sets dst to src XOR the AES-CTR key stream under k.enc from iv, a 128-bit big-endian
// counter, as cipher.NewCTR does (TestXORCTR), without the allocations of a cipher.Stream.
func (k *AuditKey) xorCTR(st *fpState, dst, src, iv []byte) {
	copy(st.ctr[:], iv)
	for off := 0; off < len(src); off += aes.BlockSize {
		k.enc.Encrypt(st.ks[:], st.ctr[:])
		subtle.XORBytes(dst[off:], src[off:], st.ks[:])
		for i := len(st.ctr) - 1; i >= 0; i-- {
			st.ctr[i]++
			if st.ctr[i] != 0 {
				break
			}
		}
	}
	clear(st.ks[:])
}

// Fingerprint returns the keyed fingerprint of key, delivered under keyID.
func (k *AuditKey) Fingerprint(keyID string, key []byte) []byte {
	st := k.states.Get().(*fpState)
	d := st.keyDigest(keyID, key)
	out := make([]byte, FingerprintSize)
	copy(out, st.iv(d))
	k.xorCTR(st, out[aes.BlockSize:], d, out[:aes.BlockSize])
	k.putState(st)
	return out
}

// putState returns st to the pool holding nothing derived from a key.
func (k *AuditKey) putState(st *fpState) {
	st.sha.Reset()
	st.mac.Reset()
	clear(st.digest[:])
	k.states.Put(st)
}

// OpenFingerprint checks a fingerprint made under this audit key for keyID and returns the key
// digest it carries; fingerprints of the same key under any two audit keys open to the same
// digest.
func (k *AuditKey) OpenFingerprint(keyID string, fp []byte) ([]byte, error) {
	if len(fp) != FingerprintSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrFingerprint, len(fp), FingerprintSize)
	}
	st := k.states.Get().(*fpState)
	defer k.putState(st)
	d := make([]byte, sha256.Size)
	k.xorCTR(st, d, fp[aes.BlockSize:], fp[:aes.BlockSize])
	st.prefix = appendStr(st.prefix[:0], keyID)
	if subtle.ConstantTimeCompare(st.iv(d), fp[:aes.BlockSize]) != 1 {
		return nil, ErrFingerprint
	}
	return d, nil
}
