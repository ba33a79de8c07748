package qkdsim

// Verification after reconciliation: Alice and Bob compare a short universal-hash tag of their
// reconciled keys, so a block Cascade left with residual errors is dropped instead of emitted.
//
// The hash is the polynomial hash over GF(2^64) (Carter & Wegman 1979; the polynomial
// evaluation family of Wegman & Carter 1981, den Boer 1993): the key is split into 64-bit words
// w_1..w_L (the last one zero-padded) and, with the seed r drawn uniformly by Alice,
//
//	tag = w_1 r^(L+1) + w_2 r^L + ... + w_L r^2 + n r   (in GF(2^64), modulus x^64+x^4+x^3+x+1).
//
// For two different keys of the same length n the difference of their tags is a non-zero
// polynomial in r of degree at most L = ceil(n/64), so it vanishes for at most L of the 2^64
// seeds: keys that differ pass verification with probability eps_cor <= ceil(n/64) / 2^64
// (about 8.5e-16 for a 10^6-bit block). The 64 tag bits are public and count as leakage; the
// seed is independent of the key and leaks nothing.

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrVerifyFailed means the reconciled keys differ; the block must be dropped at both ends.
var ErrVerifyFailed = errors.New("qkdsim: verification failed: keys differ after reconciliation")

// VerifyTagBits is the length of the verification tag, i.e. the leakage of one verification.
const VerifyTagBits = 64

// VerifyEpsCor is the correctness error of verifying an n-bit key: the probability that keys
// which still differ produce the same tag, at most ceil(n/64) / 2^64.
func VerifyEpsCor(n int) float64 {
	return float64((n+63)/64) * math.Ldexp(1, -VerifyTagBits)
}

// gf64Reduce is x^64 mod (x^64 + x^4 + x^3 + x + 1), the low part of the modulus, a primitive
// pentanomial commonly used for GF(2^64) (e.g. in the Wegman-Carter literature and GHASH-like
// constructions).
const gf64Reduce = 0x1B

// gf64Mul multiplies a and b in GF(2^64) bit by bit. It is the slow reference the table
// method is tested against.
func gf64Mul(a, b uint64) uint64 {
	var p uint64
	for i := 0; i < 64; i++ {
		if b&1 == 1 {
			p ^= a
		}
		b >>= 1
		carry := a >> 63
		a <<= 1
		a ^= -carry & gf64Reduce
	}
	return p
}

// polyHash evaluates the polynomial hash with a fixed multiplier by Shoup's method: the
// products of r with every byte value at every byte position are tabulated once (16 KiB,
// L1-resident), after which each multiplication is 8 table look-ups and XORs.
type polyHash struct {
	t [8][256]uint64
}

func newPolyHash(r uint64) *polyHash {
	var rx [64]uint64 // rx[i] = r * x^i
	rx[0] = r
	for i := 1; i < 64; i++ {
		c := rx[i-1] >> 63
		rx[i] = rx[i-1]<<1 ^ (-c & gf64Reduce)
	}
	h := new(polyHash)
	for j := 0; j < 8; j++ {
		for b := 1; b < 256; b++ {
			low := b & -b
			bit := 0
			for low>>bit != 1 {
				bit++
			}
			h.t[j][b] = h.t[j][b&(b-1)] ^ rx[8*j+bit]
		}
	}
	return h
}

func (h *polyHash) mul(a uint64) uint64 {
	return h.t[0][byte(a)] ^ h.t[1][byte(a>>8)] ^ h.t[2][byte(a>>16)] ^ h.t[3][byte(a>>24)] ^
		h.t[4][byte(a>>32)] ^ h.t[5][byte(a>>40)] ^ h.t[6][byte(a>>48)] ^ h.t[7][byte(a>>56)]
}

// sum returns the tag of key (Horner's rule).
func (h *polyHash) sum(key Bits) uint64 {
	var acc uint64
	for _, w := range key.W {
		acc = h.mul(acc ^ w)
	}
	return h.mul(acc ^ uint64(key.N))
}

// verifyTag is the tag of key under seed r.
func verifyTag(key Bits, r uint64) uint64 { return newPolyHash(r).sum(key) }

const verifyMsgLen = 24 // n, seed, tag: three little-endian uint64

// Verdicts in MsgVerifyReply.
const (
	verdictDiffer byte = 0
	verdictEqual  byte = 1
)

func encodeVerify(n int, seed, tag uint64) []byte {
	b := make([]byte, verifyMsgLen)
	binary.LittleEndian.PutUint64(b[0:], uint64(n))
	binary.LittleEndian.PutUint64(b[8:], seed)
	binary.LittleEndian.PutUint64(b[16:], tag)
	return b
}

func decodeVerify(body []byte) (n uint64, seed, tag uint64, err error) {
	if len(body) != verifyMsgLen {
		return 0, 0, 0, fmt.Errorf("qkdsim: verify: message is %d bytes, want %d", len(body), verifyMsgLen)
	}
	return binary.LittleEndian.Uint64(body[0:]), binary.LittleEndian.Uint64(body[8:]),
		binary.LittleEndian.Uint64(body[16:]), nil
}

func decodeVerdict(body []byte) (bool, error) {
	if len(body) != 1 || (body[0] != verdictDiffer && body[0] != verdictEqual) {
		return false, fmt.Errorf("qkdsim: verify: malformed verdict (%d bytes)", len(body))
	}
	return body[0] == verdictEqual, nil
}

// VerifyAlice draws a hash seed from rnd, sends seed and tag, and learns Bob's verdict.
// leaked is the number of tag bits revealed.
func VerifyAlice(ch Channel, key Bits, rnd io.Reader) (leaked int, err error) {
	var sb [8]byte
	if _, err := io.ReadFull(rnd, sb[:]); err != nil {
		return 0, fmt.Errorf("qkdsim: verify: draw seed: %w", err)
	}
	seed := binary.LittleEndian.Uint64(sb[:])
	if err := ch.Send(Message{Type: MsgVerify, Body: encodeVerify(key.N, seed, verifyTag(key, seed))}); err != nil {
		return 0, fmt.Errorf("qkdsim: verify: send tag: %w", err)
	}
	leaked = VerifyTagBits
	m, err := ch.Recv()
	if err != nil {
		return leaked, fmt.Errorf("qkdsim: verify: receive verdict: %w", err)
	}
	if m.Type != MsgVerifyReply {
		return leaked, fmt.Errorf("qkdsim: verify: unexpected message type %#x, want verdict", m.Type)
	}
	ok, err := decodeVerdict(m.Body)
	if err != nil {
		return leaked, err
	}
	if !ok {
		return leaked, ErrVerifyFailed
	}
	return leaked, nil
}

// VerifyBob checks Alice's tag against his key and tells her the verdict.
func VerifyBob(ch Channel, key Bits) (leaked int, err error) {
	m, err := ch.Recv()
	if err != nil {
		return 0, fmt.Errorf("qkdsim: verify: receive tag: %w", err)
	}
	if m.Type != MsgVerify {
		return 0, fmt.Errorf("qkdsim: verify: unexpected message type %#x, want tag", m.Type)
	}
	n, seed, tag, err := decodeVerify(m.Body)
	if err != nil {
		return 0, err
	}
	leaked = VerifyTagBits
	var mine, theirs [8]byte
	binary.LittleEndian.PutUint64(mine[:], verifyTag(key, seed))
	binary.LittleEndian.PutUint64(theirs[:], tag)
	equal := subtle.ConstantTimeCompare(mine[:], theirs[:]) == 1 && n == uint64(key.N)
	verdict := verdictDiffer
	if equal {
		verdict = verdictEqual
	}
	if err := ch.Send(Message{Type: MsgVerifyReply, Body: []byte{verdict}}); err != nil {
		return leaked, fmt.Errorf("qkdsim: verify: send verdict: %w", err)
	}
	if !equal {
		return leaked, ErrVerifyFailed
	}
	return leaked, nil
}
