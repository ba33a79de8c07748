package qkdsim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Privacy amplification: Alice draws a fresh seed for the modified Toeplitz family
// (toeplitz.go; Hayashi and Tsurumaru 2016), sends it in the clear on the authenticated
// channel, and both ends hash their reconciled, verified key to m bits. The family is
// universal_2, so by the leftover hash lemma (Impagliazzo, Levin and Luby 1989; Renner 2005,
// Cor. 5.6.1) the output is eps_sec-close to uniform and independent of Eve when m is at most the
// smooth min-entropy minus 2 log2(1/eps_PA); choosing m is the finite-key bound's job, not this
// file's. The seed is public: it adds nothing to the leakage.
//
// Messages:
//
//	MsgAmplify      Alice -> Bob: n uint64 LE | m uint64 LE | seed, ToeplitzSeedLen(n) bits packed
//	                as Bits.Bytes (bit i at byte i/8, bit i%8), unused high bits zero
//	MsgAmplifyReply Bob -> Alice: one byte, amplifyAccept, once Bob has checked the seed

// ErrAmplifyRejected means the two ends disagree on the privacy-amplification parameters or a
// message was malformed; the block must be dropped.
var ErrAmplifyRejected = errors.New("qkdsim: privacy amplification rejected")

const (
	amplifyHeader = 16
	amplifyAccept = 0x01
)

// AmplifyAlice draws a Toeplitz seed from rnd, sends it to Bob and returns m bits hashed from
// key (0 <= m <= key.N). It returns once Bob has accepted the seed, so both ends hold the
// output or neither does.
func AmplifyAlice(ch Channel, key Bits, m int, rnd io.Reader) (Bits, error) {
	if m < 0 || m > key.N {
		return Bits{}, fmt.Errorf("qkdsim: amplify: output length %d outside [0, %d]", m, key.N)
	}
	sl := ToeplitzSeedLen(key.N)
	raw := make([]byte, (sl+7)/8)
	if _, err := io.ReadFull(rnd, raw); err != nil {
		return Bits{}, fmt.Errorf("qkdsim: amplify: draw %d-bit seed: %w", sl, err)
	}
	seed := BitsFromBytes(raw, sl)
	if err := ch.Send(Message{Type: MsgAmplify, Body: encodeAmplify(key.N, m, seed)}); err != nil {
		return Bits{}, fmt.Errorf("qkdsim: amplify: send seed: %w", err)
	}
	reply, err := ch.Recv()
	if err != nil {
		return Bits{}, fmt.Errorf("qkdsim: amplify: receive reply: %w", err)
	}
	if reply.Type != MsgAmplifyReply || len(reply.Body) != 1 || reply.Body[0] != amplifyAccept {
		return Bits{}, fmt.Errorf("%w: unexpected reply (type %#x, %d bytes)", ErrAmplifyRejected, reply.Type, len(reply.Body))
	}
	return ToeplitzHash(seed, key, m), nil
}

// AmplifyBob receives Alice's seed and returns the same m bits from his (reconciled) key. A seed
// for another key length or output length, or a malformed message, is refused with
// ErrAmplifyRejected (and Alice is not told "accept", so she drops the block too).
func AmplifyBob(ch Channel, key Bits, m int) (Bits, error) {
	if m < 0 || m > key.N {
		return Bits{}, fmt.Errorf("qkdsim: amplify: output length %d outside [0, %d]", m, key.N)
	}
	msg, err := ch.Recv()
	if err != nil {
		return Bits{}, fmt.Errorf("qkdsim: amplify: receive seed: %w", err)
	}
	if msg.Type != MsgAmplify {
		return Bits{}, fmt.Errorf("%w: got message type %#x, want %#x", ErrAmplifyRejected, msg.Type, MsgAmplify)
	}
	n, am, seed, err := decodeAmplify(msg.Body)
	if err != nil {
		return Bits{}, err
	}
	if n != key.N || am != m {
		return Bits{}, fmt.Errorf("%w: Alice hashes %d bits to %d, Bob has %d bits to %d", ErrAmplifyRejected, n, am, key.N, m)
	}
	if err := ch.Send(Message{Type: MsgAmplifyReply, Body: []byte{amplifyAccept}}); err != nil {
		return Bits{}, fmt.Errorf("qkdsim: amplify: send reply: %w", err)
	}
	return ToeplitzHash(seed, key, m), nil
}

func encodeAmplify(n, m int, seed Bits) []byte {
	body := make([]byte, amplifyHeader, amplifyHeader+(seed.N+7)/8)
	binary.LittleEndian.PutUint64(body[0:], uint64(n))
	binary.LittleEndian.PutUint64(body[8:], uint64(m))
	return append(body, seed.Bytes()...)
}

// decodeAmplify parses a MsgAmplify body. It accepts exactly the encoding encodeAmplify
// produces: the body length must match n, m <= n, and the seed's unused high bits are zero.
func decodeAmplify(body []byte) (n, m int, seed Bits, err error) {
	if len(body) < amplifyHeader {
		return 0, 0, Bits{}, fmt.Errorf("%w: seed message of %d bytes is shorter than its header", ErrAmplifyRejected, len(body))
	}
	un := binary.LittleEndian.Uint64(body[0:])
	um := binary.LittleEndian.Uint64(body[8:])
	raw := body[amplifyHeader:]
	// Bound n by the bytes actually present before converting, so no size is trusted blindly.
	if un > uint64(len(raw))*8+1 || um > un {
		return 0, 0, Bits{}, fmt.Errorf("%w: seed message claims n=%d, m=%d with %d seed bytes", ErrAmplifyRejected, un, um, len(raw))
	}
	n, m = int(un), int(um)
	sl := ToeplitzSeedLen(n)
	if len(raw) != (sl+7)/8 {
		return 0, 0, Bits{}, fmt.Errorf("%w: seed for n=%d needs %d bytes, got %d", ErrAmplifyRejected, n, (sl+7)/8, len(raw))
	}
	if r := sl % 8; r != 0 && raw[len(raw)-1]>>uint(r) != 0 {
		return 0, 0, Bits{}, fmt.Errorf("%w: seed has bits set past its length", ErrAmplifyRejected)
	}
	return n, m, BitsFromBytes(raw, sl), nil
}
