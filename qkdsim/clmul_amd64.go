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

//go:noescape
func mpBase128(tmp, s, z *uint64, b int)

var vpclmul512Kernel = mpKernel{name: "vpclmulqdq-512", maxBase: 47, window: 8,
	base: func(out, s, z, scratch []uint64) { mpBaseWindowed(out, s, z, scratch, 8, mpBase512) },
	xor:  xor512}

// pclmul128Kernel is for CPUs with PCLMULQDQ but without the 512-bit form; its linear passes
// stay in Go because such CPUs may lack AVX-512 too.
var pclmul128Kernel = mpKernel{name: "pclmulqdq-128", maxBase: 31, window: 2,
	base: func(out, s, z, scratch []uint64) { mpBaseWindowed(out, s, z, scratch, 2, mpBase128) },
	xor:  xorWordsGeneric}

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

// mpBaseWindowed runs an assembly base case that works in windows of win product positions
// starting at position b-1 (the high half of product b-1 lands in result word 0).
func mpBaseWindowed(out, s, z, scratch []uint64, win int, kernel func(tmp, s, z *uint64, b int)) {
	b := len(z)
	nwin := (b + win) / win
	// The kernel reads s[0 : b-1+win*nwin+win-1] and writes tmp[0 : win*nwin]; check both,
	// since the assembly does no bounds checks.
	if b == 0 || len(s) < b+win*nwin+win || len(scratch) < win*nwin || len(out) < b {
		panic("qkdsim: carry-less multiply kernel called with short buffers")
	}
	kernel(&scratch[0], &s[0], &z[0], b)
	copy(out[:b], scratch[1:b+1])
}

func init() {
	if cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSSE3 {
		supportedKernels = append(supportedKernels, pclmul128Kernel)
		activeKernel = pclmul128Kernel
	}
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasAVX512VL {
		supportedKernels = append(supportedKernels, vpclmul512Kernel)
		activeKernel = vpclmul512Kernel
	}
}
