package qkdsim

import "golang.org/x/sys/cpu"

// The 512-bit kernel computes the base-case middle product with VPCLMULQDQ on ZMM registers:
// each instruction does four 64x64-bit carry-less products, so one broadcast word of z times
// eight consecutive seed words takes two instructions (even and odd qwords), accumulated in
// registers per window of eight product positions (see clmul_amd64.s).

//go:noescape
func mpBase512(tmp, s, z *uint64, b int)

//go:noescape
func xorWords512(dst, a, b *uint64, n int)

var vpclmul512Kernel = mpKernel{name: "vpclmulqdq-512", maxBase: 47, round7: true,
	base: mpBase512Go, xor: xor512}

// xor512 sets dst = a ^ b (all of len(dst) words) with 512-bit vectors: the Karatsuba levels'
// linear passes cost as much as the base cases when done a word at a time.
func xor512(dst, a, b []uint64) {
	n := len(dst)
	if n == 0 {
		return
	}
	_, _ = a[n-1], b[n-1]
	xorWords512(&dst[0], &a[0], &b[0], n)
}

func mpBase512Go(out, s, z []uint64, scratch []uint64) {
	b := len(z)
	nwin := (b + 8) / 8
	// The kernel reads s[0 : b-1+8*nwin+7] and writes tmp[0 : 8*nwin]; check both, since the
	// assembly does no bounds checks.
	if b == 0 || len(s) < b+8*nwin+6 || len(scratch) < 8*nwin || len(out) < b {
		panic("qkdsim: vpclmulqdq kernel called with short buffers")
	}
	mpBase512(&scratch[0], &s[0], &z[0], b)
	copy(out[:b], scratch[1:b+1])
}

func init() {
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasAVX512VL {
		supportedKernels = append(supportedKernels, vpclmul512Kernel)
		activeKernel = vpclmul512Kernel
	}
}
