package qkdsim

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Sifting (Bennett, Brassard 1984, step 3 of BB84; with decoy states, Lo, Ma, Chen 2005): Bob
// announces his basis for every detection event, Alice answers which events match her basis and
// which intensity class each event had. Both keep the matched events, split by class. Only
// bases and classes cross the channel, never key bits.
//
// Messages (all integers unsigned varints):
//
//	MsgSift:      events | Bob's bases, packed (events bits)
//	MsgSiftReply: detected[signal] detected[weak] detected[vacuum] | match mask, packed
//
// The class of each event is announced run-length encoded because events are listed grouped by
// class (see rawAlice).

// siftResult is one party's sifted bits per intensity class.
type siftResult struct {
	Class    [3]Bits
	Detected [3]int64
}

// SiftedBits is the number of sifted bits over all classes.
func (s siftResult) SiftedBits() int64 {
	return int64(s.Class[0].N + s.Class[1].N + s.Class[2].N)
}

func encodeSift(basis Bits) []byte {
	out := binary.AppendUvarint(nil, uint64(basis.N))
	return append(out, basis.Bytes()...)
}

// decodeSift parses Bob's announcement; maxEvents bounds what the decoder will allocate.
func decodeSift(body []byte, maxEvents int) (Bits, error) {
	n, k := binary.Uvarint(body)
	if k <= 0 || n > uint64(maxEvents) {
		return Bits{}, fmt.Errorf("qkdsim: sift: bad event count")
	}
	rest := body[k:]
	if uint64(len(rest)) != (n+7)/8 {
		return Bits{}, fmt.Errorf("qkdsim: sift: %d basis bytes for %d events", len(rest), n)
	}
	return BitsFromBytes(rest, int(n)), nil
}

func encodeSiftReply(det [3]int, match Bits) []byte {
	var out []byte
	for _, d := range det {
		out = binary.AppendUvarint(out, uint64(d))
	}
	return append(out, match.Bytes()...)
}

// decodeSiftReply parses Alice's answer for a block of events detection events.
func decodeSiftReply(body []byte, events int) ([3]int64, Bits, error) {
	var det [3]int64
	var sum uint64
	for i := range det {
		v, k := binary.Uvarint(body)
		if k <= 0 || v > uint64(events) {
			return det, Bits{}, fmt.Errorf("qkdsim: sift reply: bad class count")
		}
		det[i] = int64(v)
		sum += v
		body = body[k:]
	}
	if sum != uint64(events) {
		return det, Bits{}, fmt.Errorf("qkdsim: sift reply: class counts sum to %d, want %d events", sum, events)
	}
	if len(body) != (events+7)/8 {
		return det, Bits{}, fmt.Errorf("qkdsim: sift reply: %d mask bytes for %d events", len(body), events)
	}
	return det, BitsFromBytes(body, events), nil
}

// siftBob announces Bob's bases and keeps the matched events.
func siftBob(ch Channel, raw rawBob) (siftResult, error) {
	if err := ch.Send(Message{Type: MsgSift, Body: encodeSift(raw.Basis)}); err != nil {
		return siftResult{}, fmt.Errorf("qkdsim: sift: send bases: %w", err)
	}
	m, err := ch.Recv()
	if err != nil {
		return siftResult{}, fmt.Errorf("qkdsim: sift: receive match: %w", err)
	}
	if m.Type != MsgSiftReply {
		return siftResult{}, fmt.Errorf("qkdsim: sift: unexpected message type %#x", m.Type)
	}
	det, match, err := decodeSiftReply(m.Body, raw.Bits.N)
	if err != nil {
		return siftResult{}, err
	}
	return siftSplit(raw.Bits, match, det), nil
}

// siftAlice answers Bob's announcement and keeps the matched events.
func siftAlice(ch Channel, raw rawAlice) (siftResult, error) {
	m, err := ch.Recv()
	if err != nil {
		return siftResult{}, fmt.Errorf("qkdsim: sift: receive bases: %w", err)
	}
	if m.Type != MsgSift {
		return siftResult{}, fmt.Errorf("qkdsim: sift: unexpected message type %#x", m.Type)
	}
	bob, err := decodeSift(m.Body, raw.Bits.N)
	if err != nil {
		return siftResult{}, err
	}
	if bob.N != raw.Bits.N {
		return siftResult{}, fmt.Errorf("qkdsim: sift: Bob announced %d events, Alice has %d", bob.N, raw.Bits.N)
	}
	match := NewBits(bob.N)
	for i := range match.W {
		match.W[i] = ^(bob.W[i] ^ raw.Basis.W[i])
	}
	match.trim()
	if err := ch.Send(Message{Type: MsgSiftReply, Body: encodeSiftReply(raw.Detected, match)}); err != nil {
		return siftResult{}, fmt.Errorf("qkdsim: sift: send match: %w", err)
	}
	det := [3]int64{int64(raw.Detected[0]), int64(raw.Detected[1]), int64(raw.Detected[2])}
	return siftSplit(raw.Bits, match, det), nil
}

func siftSplit(b, match Bits, det [3]int64) siftResult {
	r := siftResult{Detected: det}
	from := 0
	for k := range det {
		to := from + int(det[k])
		r.Class[k] = compress(b, match, from, to)
		from = to
	}
	return r
}

// rangeMasks yields, for each word overlapping [from, to), the word index and a mask of the bit
// positions inside the range.
func rangeMask(wi, from, to int) uint64 {
	m := ^uint64(0)
	lo := wi * 64
	if lo < from {
		m &^= (uint64(1) << uint(from-lo)) - 1
	}
	if lo+64 > to {
		m &= (uint64(1) << uint(to-lo)) - 1
	}
	return m
}

// countRange counts the set bits of b in [from, to).
func countRange(b Bits, from, to int) int {
	c := 0
	for wi := from >> 6; from < to && wi <= (to-1)>>6; wi++ {
		c += bits.OnesCount64(b.W[wi] & rangeMask(wi, from, to))
	}
	return c
}

// countAnd counts positions in [from, to) set in both a and b.
func countAnd(a, b Bits, from, to int) int {
	c := 0
	for wi := from >> 6; from < to && wi <= (to-1)>>6; wi++ {
		c += bits.OnesCount64(a.W[wi] & b.W[wi] & rangeMask(wi, from, to))
	}
	return c
}

// compress returns the bits of src at the positions in [from, to) where mask is set, in order.
func compress(src, mask Bits, from, to int) Bits {
	out := NewBits(countRange(mask, from, to))
	if from >= to {
		return out
	}
	var (
		acc        uint64
		nacc       uint
		oi         int
		mbuf, vbuf [256]uint64
	)
	w0, w1 := from>>6, (to-1)>>6
	for base := w0; base <= w1; base += len(mbuf) {
		cnt := min(len(mbuf), w1-base+1)
		ms, vs := mbuf[:cnt], vbuf[:cnt]
		copy(ms, mask.W[base:])
		if base == w0 {
			ms[0] &= rangeMask(w0, from, to)
		}
		if base+cnt-1 == w1 {
			ms[cnt-1] &= rangeMask(w1, from, to)
		}
		pextWords(vs, src.W[base:base+cnt], ms)
		for i, m := range ms {
			// Append the popcount(m) low bits of vs[i] to the output.
			c := uint(bits.OnesCount64(m))
			v := vs[i]
			acc |= v << nacc
			if nacc+c >= 64 {
				out.W[oi] = acc
				oi++
				acc = v >> (64 - nacc) // 0 when nacc is 0
			}
			nacc = (nacc + c) & 63
		}
	}
	if nacc > 0 {
		out.W[oi] = acc
	}
	return out
}

// pextWords sets dst[i] to the bits of src[i] selected by mask[i], packed at the bottom (the
// parallel bit extract of BMI2); pext_amd64.go replaces it where the CPU has the instruction.
var pextWords = pextWordsGeneric

func pextWordsGeneric(dst, src, mask []uint64) {
	for i, m := range mask[:len(dst)] {
		s := src[i]
		var v uint64
		for k := uint(0); m != 0; k++ {
			v |= (s >> uint(bits.TrailingZeros64(m)) & 1) << k
			m &= m - 1
		}
		dst[i] = v
	}
}
