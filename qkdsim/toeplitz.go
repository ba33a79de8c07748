package qkdsim

import "fmt"

// Toeplitz hashing for privacy amplification.
//
// The family is the modified Toeplitz family of Hayashi and Tsurumaru ("More efficient privacy
// amplification with less random seeds via dual universal hash function", IEEE Trans. Inf.
// Theory 62(4), 2016): for an n-bit input x and output length m,
//
//	y = x[0:m] XOR T' x[m:n],   T'[i][j] = seed[i-j+(n-m)-1],  0 <= i < m, 0 <= j < n-m,
//
// with T' an m x (n-m) Toeplitz matrix given by an (n-1)-bit seed. It is universal_2, so the
// leftover hash lemma applies, and it needs half the work of a full m x n Toeplitz matrix.
//
// T'x[m:n] is a middle product over GF(2)[x]: bit i of it is coefficient i+(n-m)-1 of
// seed(x)*z(x), z = x[m:n]. It is computed with the transposed Karatsuba recursion for
// Toeplitz matrix-vector products (Hanrot, Quercia and Zimmermann, "The middle product
// algorithm I", AAECC 14, 2004): three half-size products per level, down to a base case done
// with carry-less multiplication (VPCLMULQDQ on 512-bit registers where the CPU has it, see
// clmul_amd64.s, otherwise a table-driven software carry-less multiply).

// ToeplitzSeedLen is the seed length in bits that ToeplitzHash needs for an n-bit input.
func ToeplitzSeedLen(n int) int {
	if n <= 0 {
		return 0
	}
	return n - 1
}

// ToeplitzHash returns the m-bit modified Toeplitz hash of x (see the file comment) under seed,
// which must hold ToeplitzSeedLen(x.N) = x.N-1 bits. It panics unless 0 <= m <= x.N and the seed
// has that length: both are caller bugs, not outside input (AmplifyBob checks received seeds).
// The output is the same on every CPU; only the speed depends on the kernel (ToeplitzKernel).
func ToeplitzHash(seed Bits, x Bits, m int) Bits {
	return toeplitzHash(seed, x, m, activeKernel)
}

// mpKernel computes the word middle product out[0:b] = words [b, 2b) of s(x)*z(x), with s given
// as 2b words and z as b words. Implementations may read up to mpSlack words past s[2b-1] and
// ignore them; out holds b words and is overwritten.
type mpKernel struct {
	name string
	// maxBase is the largest base size the kernel is meant for; with window > 1 bases are
	// rounded up so base+1 is a multiple of window (the vector kernels work in windows of that
	// many product positions, starting at position base-1).
	maxBase int
	window  int
	base    func(out, s, z []uint64, scratch []uint64)
	// xor sets dst = a ^ b over len(dst) words; dst may be a or b.
	xor func(dst, a, b []uint64)
}

// mpSlack is the number of readable words every seed slice handed to a kernel has past its end.
const mpSlack = 16

var genericKernel = mpKernel{name: "generic", maxBase: 8, base: mpBaseGeneric, xor: xorWordsGeneric}

// activeKernel is the fastest kernel this CPU supports; supportedKernels lists every kernel
// this CPU can run, fastest last (clmul_amd64.go adds to it at init; tests run them all).
var (
	activeKernel     = genericKernel
	supportedKernels = []mpKernel{genericKernel}
)

// ToeplitzKernel names the carry-less multiply kernel in use ("vpclmulqdq-512", "pclmulqdq-128"
// or "generic")..
func ToeplitzKernel() string { return activeKernel.name }

func toeplitzHash(seed Bits, x Bits, m int, kern mpKernel) Bits {
	n := x.N
	if m < 0 || m > n {
		panic(fmt.Sprintf("qkdsim: toeplitz output length %d outside [0, %d]", m, n))
	}
	if seed.N != ToeplitzSeedLen(n) {
		panic(fmt.Sprintf("qkdsim: toeplitz seed has %d bits, need %d", seed.N, ToeplitzSeedLen(n)))
	}
	y := x.Slice(0, m)
	k := n - m
	if m == 0 || k == 0 {
		return y
	}
	z := x.Slice(m, n)
	zw := len(z.W)
	mw := len(y.W)
	// Shift the seed so the wanted coefficients start on a word: with Kp = 64*zw,
	// y_i ^= coefficient i+Kp of s''(x) z(x) where s''_t = seed[t-sh], sh = Kp-k+1 in [1, 64].
	sh := 64*zw - k + 1

	// Tile the m x k problem into squares of L words (L = base * 2^levels), as few as possible.
	small, big := min(mw, zw), max(mw, zw)
	t := max(1, big/small)
	L, base, levels := mpSize(max(small, (big+t-1)/t), kern)
	tilesOut := (mw + L - 1) / L
	tilesZ := (zw + L - 1) / L

	// Seed buffer, with L words of zeros in front (windows left of the seed) and enough behind
	// for the last window plus kernel slack.
	front := L
	sw := front + (64*(tilesOut+tilesZ+1)*L+sh+seed.N)/64 + L + mpSlack
	sbuf := make([]uint64, sw)
	shiftInto(sbuf[front:], seed.W, sh)
	zbuf := make([]uint64, tilesZ*L)
	copy(zbuf, z.W)

	res := make([]uint64, L)
	scratch := make([]uint64, mpScratch(L, base))
	for o := 0; o < tilesOut; o++ {
		for q := 0; q < tilesZ; q++ {
			// Output words [o*L, o*L+L) are product words zw+o*L ...; the z block q starts at
			// word q*L, so the seed window starts at word zw + (o-q)*L - L (may be negative).
			start := front + zw + (o-q)*L - L
			if start+2*L <= front {
				continue // window entirely left of the seed: all zero
			}
			mpKaratsuba(res, sbuf[start:], zbuf[q*L:q*L+L], L, base, levels, scratch, kern)
			lo := o * L
			for i := 0; i < L && lo+i < mw; i++ {
				y.W[lo+i] ^= res[i]
			}
		}
	}
	y.trim()
	return y
}

// shiftInto writes src shifted left by sh bits (0 <= sh <= 64) into dst (zeroed beforehand).
func shiftInto(dst, src []uint64, sh int) {
	wo, b := sh/64, uint(sh%64)
	for i, w := range src {
		dst[i+wo] ^= w << b
		if b != 0 {
			dst[i+wo+1] ^= w >> (64 - b)
		}
	}
}

// mpSize picks the padded square size L = base * 2^levels >= n words with the fewest levels
// whose base fits the kernel: deeper recursion saves base-case products but each level costs
// linear passes, and the kernel's maxBase is where the two balance (tuned by BenchmarkAmplify).
func mpSize(n int, kern mpKernel) (L, base, levels int) {
	for levels = 0; ; levels++ {
		base = (n + (1 << levels) - 1) >> levels
		if w := kern.window; w > 1 {
			base = (base+w)/w*w - 1
		}
		if base <= kern.maxBase {
			return base << levels, base, levels
		}
	}
}

// mpScratch is the scratch size mpKaratsuba needs for size L.
func mpScratch(L, base int) int {
	// Each level uses 4h words (2h seed sum + slack, h z sum, h product) below the caller's.
	s := 0
	for n := L; n > base; n /= 2 {
		s += 2*n + mpSlack
	}
	return s + 4*base + 16
}

// mpKaratsuba computes res[0:n] = words [n, 2n) of s*z (s: 2n words readable to 2n+mpSlack,
// z: n words), n = base * 2^levels. With T0, T1, T2 the Toeplitz blocks given by s[0:2h],
// s[h:3h], s[2h:4h], the result is [T1 z0 + T0 z1; T2 z0 + T1 z1], and
// P1 = T1 (z0+z1), P2 = (T0+T1) z1, P3 = (T2+T1) z0 give top = P1+P2, bottom = P1+P3.
func mpKaratsuba(res, s, z []uint64, n, base, levels int, scratch []uint64, kern mpKernel) {
	if levels == 0 {
		kern.base(res[:n], s, z[:n], scratch)
		return
	}
	h := n / 2
	ssum := scratch[:2*h+mpSlack]
	zsum := scratch[2*h+mpSlack : 3*h+mpSlack]
	prod := scratch[3*h+mpSlack : 4*h+mpSlack]
	sub := scratch[4*h+mpSlack:]

	kern.xor(zsum, z[:h], z[h:n])
	mpKaratsuba(res[:h], s[h:], zsum, h, base, levels-1, sub, kern)
	copy(res[h:n], res[:h])

	kern.xor(ssum[:2*h], s[:2*h], s[h:3*h])
	clear(ssum[2*h:])
	mpKaratsuba(prod, ssum, z[h:n], h, base, levels-1, sub, kern)
	kern.xor(res[:h], res[:h], prod)

	kern.xor(ssum[:2*h], s[2*h:4*h], s[h:3*h])
	mpKaratsuba(prod, ssum, z[:h], h, base, levels-1, sub, kern)
	kern.xor(res[h:n], res[h:n], prod)
}

func xorWordsGeneric(dst, a, b []uint64) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] ^ b[i]
	}
}

// mpBaseGeneric is the portable base case: schoolbook middle product with a software
// carry-less multiply (4-bit windows over a table of z_i times every nibble).
func mpBaseGeneric(out, s, z []uint64, _ []uint64) {
	b := len(z)
	clear(out)
	var tab [16][2]uint64
	for i := range b {
		if z[i] == 0 {
			continue
		}
		clmulTable(&tab, z[i])
		// Product position p = i + j gets z_i*s_j; we need words [b, 2b), i.e. p in [b-1, 2b).
		for j := max(0, b-1-i); j < 2*b-i && j < len(s); j++ {
			lo, hi := clmulTab(&tab, s[j])
			p := i + j
			if p >= b {
				out[p-b] ^= lo
			}
			if p+1 >= b && p+1 < 2*b {
				out[p+1-b] ^= hi
			}
		}
	}
}

// clmulTable fills tab[v] = a*v (carry-less, 128 bits as lo, hi) for every nibble v.
func clmulTable(tab *[16][2]uint64, a uint64) {
	tab[0] = [2]uint64{}
	tab[1] = [2]uint64{a, 0}
	for v := 2; v < 16; v += 2 {
		h := tab[v/2]
		tab[v] = [2]uint64{h[0] << 1, h[1]<<1 | h[0]>>63}
		tab[v+1] = [2]uint64{tab[v][0] ^ a, tab[v][1]}
	}
}

func clmulTab(tab *[16][2]uint64, b uint64) (lo, hi uint64) {
	for k := 60; k >= 0; k -= 4 {
		t := tab[(b>>uint(k))&15]
		if k == 0 {
			lo ^= t[0]
			hi ^= t[1]
			break
		}
		lo ^= t[0] << uint(k)
		hi ^= t[1]<<uint(k) | t[0]>>(64-uint(k))
	}
	return lo, hi
}

// clmul64 is the software carry-less 64x64 -> 128 multiply, for tests and small uses.
func clmul64(a, b uint64) (lo, hi uint64) {
	var tab [16][2]uint64
	clmulTable(&tab, a)
	return clmulTab(&tab, b)
}
