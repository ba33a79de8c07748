package qkdsim

import (
	"encoding/binary"
	"math/bits"
)

// Bits is a packed bit string: bit i is (W[i/64] >> (i%64)) & 1. Bits past N in the last word
// are zero.
type Bits struct {
	N int
	W []uint64
}

// NewBits returns n zero bits.
func NewBits(n int) Bits { return Bits{N: n, W: make([]uint64, (n+63)/64)} }

// Get returns bit i.
func (b Bits) Get(i int) uint8 { return uint8(b.W[i>>6] >> (uint(i) & 63) & 1) }

// Set sets bit i to v (0 or 1).
func (b Bits) Set(i int, v uint8) {
	m := uint64(1) << (uint(i) & 63)
	if v&1 == 1 {
		b.W[i>>6] |= m
	} else {
		b.W[i>>6] &^= m
	}
}

// Flip inverts bit i.
func (b Bits) Flip(i int) { b.W[i>>6] ^= uint64(1) << (uint(i) & 63) }

// Clone returns a copy that shares no memory with b.
func (b Bits) Clone() Bits { return Bits{N: b.N, W: append([]uint64(nil), b.W...)} }

// OnesCount returns the number of set bits.
func (b Bits) OnesCount() int {
	c := 0
	for _, w := range b.W {
		c += bits.OnesCount64(w)
	}
	return c
}

// Diff returns the number of positions where a and b differ (their Hamming distance).
func Diff(a, b Bits) int {
	c := 0
	for i := range a.W {
		c += bits.OnesCount64(a.W[i] ^ b.W[i])
	}
	return c
}

// Bytes returns the bits as bytes, bit i at byte i/8, bit position i%8. N must be a multiple
// of 8 for the result to hold exactly N bits.
func (b Bits) Bytes() []byte {
	out := make([]byte, len(b.W)*8)
	for i, w := range b.W {
		binary.LittleEndian.PutUint64(out[8*i:], w)
	}
	return out[:(b.N+7)/8]
}

// BitsFromBytes is the inverse of Bytes for n bits (n <= 8*len(p)).
func BitsFromBytes(p []byte, n int) Bits {
	b := NewBits(n)
	var buf [8]byte
	for i := range b.W {
		clear(buf[:])
		copy(buf[:], p[min(8*i, len(p)):min(8*i+8, len(p))])
		b.W[i] = binary.LittleEndian.Uint64(buf[:])
	}
	b.trim()
	return b
}

// Slice returns bits [from, to) as a new Bits.
func (b Bits) Slice(from, to int) Bits {
	out := NewBits(to - from)
	if from&63 == 0 {
		copy(out.W, b.W[from>>6:])
	} else {
		s := uint(from & 63)
		for i := range out.W {
			j := from>>6 + i
			w := b.W[j] >> s
			if j+1 < len(b.W) {
				w |= b.W[j+1] << (64 - s)
			}
			out.W[i] = w
		}
	}
	out.trim()
	return out
}

func (b Bits) trim() {
	if r := uint(b.N & 63); r != 0 && len(b.W) > 0 {
		b.W[len(b.W)-1] &= (uint64(1) << r) - 1
	}
}
