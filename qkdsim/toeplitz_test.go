package qkdsim

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// naiveToeplitz is the direct O(m(n-m)) reference: y_i = x_i XOR sum_j seed[i-j+k-1] x[m+j].
func naiveToeplitz(seed, x Bits, m int) Bits {
	k := x.N - m
	y := x.Slice(0, m)
	for i := range m {
		var acc uint8
		for j := range k {
			acc ^= seed.Get(i-j+k-1) & x.Get(m+j)
		}
		if acc == 1 {
			y.Flip(i)
		}
	}
	return y
}

func randBits(r *rand.Rand, n int) Bits {
	b := NewBits(n)
	for i := range b.W {
		b.W[i] = r.Uint64()
	}
	b.trim()
	return b
}

func equalBits(a, b Bits) bool {
	if a.N != b.N || len(a.W) != len(b.W) {
		return false
	}
	return Diff(a, b) == 0
}

// kernels returns every kernel this machine can run, so the fallback is tested on machines
// that have the fast path.
func kernels() []mpKernel { return supportedKernels }

func TestClmul64(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		a, b := r.Uint64(), r.Uint64()
		var lo, hi uint64
		for i := range 64 {
			if b>>uint(i)&1 == 1 {
				lo ^= a << uint(i)
				if i > 0 {
					hi ^= a >> uint(64-i)
				}
			}
		}
		gl, gh := clmul64(a, b)
		if gl != lo || gh != hi {
			t.Fatalf("clmul64(%x, %x) = %x:%x, want %x:%x", a, b, gh, gl, hi, lo)
		}
	}
}

func TestToeplitzHashMatchesNaive(t *testing.T) {
	cases := []struct{ n, m int }{
		{1, 0}, {1, 1}, {2, 1}, {5, 3}, {64, 32}, {65, 1}, {65, 64}, {127, 60}, {128, 64},
		{129, 65}, {200, 17}, {300, 290}, {1000, 500}, {1000, 100}, {1000, 900}, {4096, 2048},
		{5000, 2500}, {5001, 1234}, {6000, 4800}, {8191, 4095}, {9000, 300},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, kern := range kernels() {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/n=%d/m=%d", kern.name, c.n, c.m), func(t *testing.T) {
				x := randBits(r, c.n)
				seed := randBits(r, ToeplitzSeedLen(c.n))
				got := toeplitzHash(seed, x, c.m, kern)
				want := naiveToeplitz(seed, x, c.m)
				if !equalBits(got, want) {
					t.Fatalf("hash differs from reference in %d of %d bits", Diff(got, want), c.m)
				}
			})
		}
	}
}

// TestToeplitzKernelsAgreeLarge checks the kernels against each other on sizes where the naive
// product is too slow, with deep Karatsuba recursion, and the sampled bits against the
// reference formula.
func TestToeplitzKernelsAgreeLarge(t *testing.T) {
	sizes := []struct{ n, m int }{{200_000, 100_000}, {150_001, 40_000}, {131_072, 120_000}}
	if testing.Short() {
		sizes = sizes[:1]
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range sizes {
		x := randBits(r, c.n)
		seed := randBits(r, ToeplitzSeedLen(c.n))
		var first Bits
		for i, kern := range kernels() {
			got := toeplitzHash(seed, x, c.m, kern)
			if got.N != c.m {
				t.Fatalf("%s: output has %d bits, want %d", kern.name, got.N, c.m)
			}
			if i == 0 {
				first = got
				// Spot-check bits against the defining sum.
				k := c.n - c.m
				for range 20 {
					o := r.IntN(c.m)
					acc := x.Get(o)
					for j := range k {
						acc ^= seed.Get(o-j+k-1) & x.Get(c.m+j)
					}
					if got.Get(o) != acc {
						t.Fatalf("n=%d m=%d: bit %d differs from the reference", c.n, c.m, o)
					}
				}
			} else if !equalBits(first, got) {
				t.Fatalf("n=%d m=%d: %s differs from %s", c.n, c.m, kern.name, kernels()[0].name)
			}
		}
	}
}

func TestToeplitzDifferentSeeds(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	x := randBits(r, 10_000)
	s1 := randBits(r, ToeplitzSeedLen(x.N))
	s2 := s1.Clone()
	s2.Flip(4321)
	a, b := ToeplitzHash(s1, x, 5000), ToeplitzHash(s2, x, 5000)
	if equalBits(a, b) {
		t.Fatal("seeds differing in one bit gave the same output")
	}
}

func BenchmarkToeplitzHash(b *testing.B) {
	for _, kern := range kernels() {
		n := 10_000_000
		if kern.name == genericKernel.name {
			n = 1_000_000
		}
		b.Run(fmt.Sprintf("%s/n=%d", kern.name, n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(9, 10))
			x := randBits(r, n)
			seed := randBits(r, ToeplitzSeedLen(n))
			b.SetBytes(int64(n / 8))
			for b.Loop() {
				toeplitzHash(seed, x, n/2, kern)
			}
		})
	}
}
