package qkdsim

import "golang.org/x/sys/cpu"

// BMI2's PEXT gathers the bits of a word selected by a mask in one instruction (3 cycles on
// Intel since Haswell and AMD since Zen 3; Zen 1 and 2 run it in microcode, slower than the
// portable loop on dense masks, but lack the 512-bit carry-less multiply too).

//go:noescape
func pextWordsBMI2(dst, src, mask *uint64, n int)

func pextWordsAsm(dst, src, mask []uint64) {
	n := len(dst)
	if n == 0 {
		return
	}
	_, _ = src[n-1], mask[n-1]
	pextWordsBMI2(&dst[0], &src[0], &mask[0], n)
}

func init() {
	if cpu.X86.HasBMI2 {
		pextWords = pextWordsAsm
	}
}
