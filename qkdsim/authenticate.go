package qkdsim

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Authentication of the classical channel, after Wegman and Carter ("New hash functions and
// their use in authentication and set equality", JCSS 22, 1981): every message M gets the tag
//
//	tag = h_K(M) XOR pad
//
// where h_K is the polynomial hash over GF(2^64) (P = x^64 + x^4 + x^3 + x + 1) evaluated at a
// long-lived key K, and pad is a fresh 64-bit one-time pad. For distinct encodings of at most
// L 64-bit blocks, h_K(M) XOR h_K(M') takes any given value with probability at most L/2^64
// over K (a nonzero polynomial of degree <= L has at most L roots), so h is
// eps-almost-XOR-universal and a forger succeeds with probability at most L/2^64 per attempt
// (Stinson, "Universal hashing and authentication codes", 1994, Thm. 6.1), while K stays secret
// as long as no pad is reused. The pads come from the pre-shared key and then from produced
// key (Refill); every pad spent is key the link did not deliver, counted by Consumed.
//
// The encoding hashed is  'A'+dir | type | 0^6 | seq | len(body) | body | zero padding, in
// 64-bit little-endian blocks: the first block is never zero and the length is explicit, so
// distinct messages give distinct polynomials. dir is 0 for Alice to Bob, 1 for Bob to Alice;
// seq counts messages per direction. The two directions take pads from separate stores, so
// a message in flight each way never makes the ends disagree on which pad is next; a message
// that is tampered with, replayed, reordered, dropped or truncated meets the wrong hash or the
// wrong pad and fails.
//
// On the wire a message keeps its Type; its Body becomes seq (8 bytes LE) | body | tag (8 bytes LE).

// ErrAuthFailed means a classical-channel message failed authentication.
var ErrAuthFailed = errors.New("qkdsim: classical channel authentication failed")

// ErrAuthKeyExhausted means the pad store has no pad left for the next tag: refill it with
// produced key (AuthKey.Refill) or bootstrap again from a fresh pre-shared key.
var ErrAuthKeyExhausted = errors.New("qkdsim: authentication key exhausted: refill with produced key or a new pre-shared key")

const (
	// AuthTagBits is the length of one tag, and of the pad it consumes.
	AuthTagBits = 64
	// AuthHashKeyBytes is the part of the pre-shared key used as the long-lived hash key K.
	AuthHashKeyBytes = 8
	// MinPSKBytes is the shortest pre-shared key NewAuthKey accepts: K plus one pad each way.
	MinPSKBytes = AuthHashKeyBytes + 2*AuthTagBits/8

	authFrameOverhead = 16
)

// AuthKey is one party's store of authentication key: a long-lived hash key plus one-time pads,
// bootstrapped from a pre-shared key and refilled from produced key. It is safe for concurrent
// use by the two directions of a channel.
type AuthKey struct {
	mul *gf64Table // multiplication by K
	// pow[i] multiplies by K^(i+2), for hash's four blocks per step.
	pow [3]*gf64Table

	mu       sync.Mutex
	pads     [2][]uint64 // pads[dir][head[dir]:] are unused
	head     [2]int
	next     int    // direction the next refilled pad goes to
	pending  []byte // refill bytes not yet forming a whole pad
	consumed int64
}

// NewAuthKey bootstraps from a pre-shared key shared by both ends: its first AuthHashKeyBytes
// bytes are the hash key K (which must not be zero), the rest become pads. It needs at least
// MinPSKBytes bytes.
func NewAuthKey(psk []byte) (*AuthKey, error) {
	if len(psk) < MinPSKBytes {
		return nil, fmt.Errorf("qkdsim: pre-shared key of %d bytes is too short: need at least %d", len(psk), MinPSKBytes)
	}
	key := binary.LittleEndian.Uint64(psk)
	if key == 0 {
		return nil, errors.New("qkdsim: pre-shared key gives a zero hash key: use a random pre-shared key")
	}
	k := &AuthKey{mul: newGF64Table(key)}
	kp := key
	for i := range k.pow {
		kp = k.mul.mul(kp)
		k.pow[i] = newGF64Table(kp)
	}
	k.Refill(psk[AuthHashKeyBytes:])
	return k, nil
}

// Refill adds produced key bytes to the pad store (both ends add the same bytes in the same
// order). Pads are dealt to the two directions alternately, 8 bytes each; a partial pad waits
// for the next Refill.
func (k *AuthKey) Refill(p []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pending = append(k.pending, p...)
	i := 0
	for ; i+8 <= len(k.pending); i += 8 {
		d := k.next
		if k.head[d] > 1024 && k.head[d] > len(k.pads[d])/2 {
			k.pads[d] = append(k.pads[d][:0], k.pads[d][k.head[d]:]...)
			k.head[d] = 0
		}
		k.pads[d] = append(k.pads[d], binary.LittleEndian.Uint64(k.pending[i:]))
		k.next ^= 1
	}
	rest := copy(k.pending, k.pending[i:])
	clear(k.pending[rest:])
	k.pending = k.pending[:rest]
}

// Available is the number of pad bits left (both directions).
func (k *AuthKey) Available() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return AuthTagBits * (len(k.pads[0]) - k.head[0] + len(k.pads[1]) - k.head[1])
}

// Consumed is the number of key bits spent on tags so far, sent and received.
func (k *AuthKey) Consumed() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.consumed
}

// take removes the next pad of direction dir.
func (k *AuthKey) take(dir int) (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.head[dir] >= len(k.pads[dir]) {
		return 0, ErrAuthKeyExhausted
	}
	p := k.pads[dir][k.head[dir]]
	k.pads[dir][k.head[dir]] = 0
	k.head[dir]++
	k.consumed += AuthTagBits
	return p, nil
}

// tag computes h_K(encoding of the message) for direction dir and sequence number seq.
func (k *AuthKey) hash(dir int, typ uint8, seq uint64, body []byte) uint64 {
	t := k.mul
	acc := t.mul(uint64('A'+dir) | uint64(typ)<<8)
	acc = t.mul(acc ^ seq)
	acc = t.mul(acc ^ uint64(len(body)))
	// Four Horner steps at a time, acc' = (acc^m0)K^4 ^ m1 K^3 ^ m2 K^2 ^ m3 K: the same value,
	// but four independent multiplications instead of a chain of dependent lookups.
	k2, k3, k4 := k.pow[0], k.pow[1], k.pow[2]
	for len(body) >= 32 {
		acc = k4.mul(acc^binary.LittleEndian.Uint64(body)) ^ k3.mul(binary.LittleEndian.Uint64(body[8:])) ^
			k2.mul(binary.LittleEndian.Uint64(body[16:])) ^ t.mul(binary.LittleEndian.Uint64(body[24:]))
		body = body[32:]
	}
	for len(body) >= 8 {
		acc = t.mul(acc ^ binary.LittleEndian.Uint64(body))
		body = body[8:]
	}
	if len(body) > 0 {
		var last [8]byte
		copy(last[:], body)
		acc = t.mul(acc ^ binary.LittleEndian.Uint64(last[:]))
	}
	return acc
}

// gf64Table multiplies by a fixed element of GF(2^64) = GF(2)[x]/(x^64+x^4+x^3+x+1):
// t[j][b] = (b * x^(8j)) * K, so a*K is the XOR of eight lookups.
type gf64Table [8][256]uint64

func newGF64Table(key uint64) *gf64Table {
	var t gf64Table
	var kx [64]uint64 // K * x^i
	kx[0] = key
	for i := 1; i < 64; i++ {
		v := kx[i-1]
		kx[i] = v << 1
		if v>>63 == 1 {
			kx[i] ^= 0x1b
		}
	}
	for j := range 8 {
		for b := 1; b < 256; b++ {
			low := b & -b
			bit := 0
			for low>>uint(bit) != 1 {
				bit++
			}
			t[j][b] = t[j][b^low] ^ kx[8*j+bit]
		}
	}
	return &t
}

func (t *gf64Table) mul(a uint64) uint64 {
	return t[0][byte(a)] ^ t[1][byte(a>>8)] ^ t[2][byte(a>>16)] ^ t[3][byte(a>>24)] ^
		t[4][byte(a>>32)] ^ t[5][byte(a>>40)] ^ t[6][byte(a>>48)] ^ t[7][byte(a>>56)]
}

// Authenticate wraps ch so every message carries a Wegman-Carter tag; alice says which end this is
// (the two directions use separate pads). After a message fails authentication the returned
// Channel refuses every later Recv, since the ends no longer agree on the pads.
func Authenticate(ch Channel, k *AuthKey, alice bool) Channel {
	a := &authChannel{ch: ch, k: k, sendDir: 1, recvDir: 0}
	if alice {
		a.sendDir, a.recvDir = 0, 1
	}
	return a
}

type authChannel struct {
	ch               Channel
	k                *AuthKey
	sendDir, recvDir int
	sendSeq, recvSeq uint64
	failed           error
}

func (a *authChannel) Send(m Message) error {
	if a.k == nil {
		return errors.New("qkdsim: authenticate: no authentication key")
	}
	pad, err := a.k.take(a.sendDir)
	if err != nil {
		return fmt.Errorf("qkdsim: authenticate message %d of type %#x: %w", a.sendSeq, m.Type, err)
	}
	tag := a.k.hash(a.sendDir, m.Type, a.sendSeq, m.Body) ^ pad
	body := encodeAuthFrame(a.sendSeq, m.Body, tag)
	a.sendSeq++
	return a.ch.Send(Message{Type: m.Type, Body: body})
}

func (a *authChannel) Recv() (Message, error) {
	if a.failed != nil {
		return Message{}, a.failed
	}
	if a.k == nil {
		return Message{}, errors.New("qkdsim: authenticate: no authentication key")
	}
	m, err := a.ch.Recv()
	if err != nil {
		return Message{}, err
	}
	want := a.recvSeq
	a.recvSeq++
	// The pad is spent whatever the outcome: a pad seen next to a forged message is never reused.
	pad, err := a.k.take(a.recvDir)
	if err != nil {
		a.failed = fmt.Errorf("qkdsim: verify message %d: %w", want, err)
		return Message{}, a.failed
	}
	seq, body, tag, err := decodeAuthFrame(m.Body)
	if err != nil {
		a.failed = err
		return Message{}, err
	}
	// Hash under the expected sequence number: a replayed or reordered message fails here even
	// before its explicit seq is compared.
	exp := a.k.hash(a.recvDir, m.Type, want, body) ^ pad
	var e, g [8]byte
	binary.LittleEndian.PutUint64(e[:], exp)
	binary.LittleEndian.PutUint64(g[:], tag)
	if subtle.ConstantTimeCompare(e[:], g[:]) != 1 || seq != want {
		a.failed = fmt.Errorf("%w: message %d (type %#x, %d bytes) has a wrong tag or sequence number", ErrAuthFailed, want, m.Type, len(body))
		return Message{}, a.failed
	}
	return Message{Type: m.Type, Body: body}, nil
}

func encodeAuthFrame(seq uint64, body []byte, tag uint64) []byte {
	out := make([]byte, 8, len(body)+authFrameOverhead)
	binary.LittleEndian.PutUint64(out, seq)
	out = append(out, body...)
	return binary.LittleEndian.AppendUint64(out, tag)
}

// decodeAuthFrame splits a received body into sequence number, payload and tag.
func decodeAuthFrame(p []byte) (seq uint64, body []byte, tag uint64, err error) {
	if len(p) < authFrameOverhead {
		return 0, nil, 0, fmt.Errorf("%w: frame of %d bytes is shorter than sequence number and tag", ErrAuthFailed, len(p))
	}
	seq = binary.LittleEndian.Uint64(p)
	tag = binary.LittleEndian.Uint64(p[len(p)-8:])
	return seq, p[8 : len(p)-8], tag, nil
}
