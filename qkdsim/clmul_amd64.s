#include "textflag.h"

// func mpBase512(tmp, s, z *uint64, b int)
//
// For windows w = b-1, b+7, ... < 2b of eight product positions, accumulates
// E (positions w, w+2, ..., as 128-bit lanes on words w..w+7) and
// O (positions w+1, w+3, ..., lanes on words w+1..w+8) over i in [0, b):
// E ^= clmul(z[i], s[w-i+2l]), O ^= clmul(z[i], s[w-i+2l+1]), then stores
// words w..w+7 = E ^ (O of the previous window's top word, O's words 0..6) to tmp.
TEXT ·mpBase512(SB), NOSPLIT, $0-32
	MOVQ tmp+0(FP), DI
	MOVQ s+8(FP), SI
	MOVQ z+16(FP), DX
	MOVQ b+24(FP), CX
	VPXORQ Z0, Z0, Z0
	LEAQ -1(CX), R8
	LEAQ (CX)(CX*1), R9

window:
	VPXORQ Z1, Z1, Z1
	VPXORQ Z2, Z2, Z2
	VPXORQ Z8, Z8, Z8
	VPXORQ Z9, Z9, Z9
	LEAQ (SI)(R8*8), R10
	MOVQ DX, R11
	MOVQ CX, R12
	SHRQ $1, R12
	JZ   tail

inner:
	VPBROADCASTQ (R11), Z3
	VMOVDQU64 (R10), Z4
	VPBROADCASTQ 8(R11), Z10
	VMOVDQU64 -8(R10), Z11
	VPCLMULQDQ $0x00, Z4, Z3, Z5
	VPCLMULQDQ $0x11, Z4, Z3, Z6
	VPCLMULQDQ $0x00, Z11, Z10, Z12
	VPCLMULQDQ $0x11, Z11, Z10, Z13
	VPXORQ Z5, Z1, Z1
	VPXORQ Z6, Z2, Z2
	VPXORQ Z12, Z8, Z8
	VPXORQ Z13, Z9, Z9
	ADDQ $16, R11
	SUBQ $16, R10
	DECQ R12
	JNZ  inner

tail:
	TESTQ $1, CX
	JZ    combine
	VPBROADCASTQ (R11), Z3
	VMOVDQU64 (R10), Z4
	VPCLMULQDQ $0x00, Z4, Z3, Z5
	VPCLMULQDQ $0x11, Z4, Z3, Z6
	VPXORQ Z5, Z1, Z1
	VPXORQ Z6, Z2, Z2

combine:
	VPXORQ Z8, Z1, Z1
	VPXORQ Z9, Z2, Z2
	VALIGNQ $7, Z0, Z2, Z7
	VPXORQ Z7, Z1, Z1
	VMOVDQU64 Z1, (DI)
	VMOVDQA64 Z2, Z0
	ADDQ $64, DI
	ADDQ $8, R8
	CMPQ R8, R9
	JLT  window
	VZEROUPPER
	RET

// func xorWords512(dst, a, b *uint64, n int)
//
// dst[i] = a[i] ^ b[i] for i < n, 64 bytes at a time; dst may alias a or b exactly.
TEXT ·xorWords512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	CMPQ CX, $8
	JLT  xtail

xloop:
	VMOVDQU64 (SI), Z1
	VPXORQ    (DX), Z1, Z1
	VMOVDQU64 Z1, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, DI
	SUBQ $8, CX
	CMPQ CX, $8
	JGE  xloop
	VZEROUPPER

xtail:
	TESTQ CX, CX
	JZ    xdone
	MOVQ (SI), AX
	XORQ (DX), AX
	MOVQ AX, (DI)
	ADDQ $8, SI
	ADDQ $8, DX
	ADDQ $8, DI
	DECQ CX
	JMP  xtail

xdone:
	RET

// func mpBase128(tmp, s, z *uint64, b int)
//
// The same windowed middle product as mpBase512 with 128-bit PCLMULQDQ: windows of two
// product positions, E on words w, w+1 and O on words w+1, w+2.
TEXT ·mpBase128(SB), NOSPLIT, $0-32
	MOVQ tmp+0(FP), DI
	MOVQ s+8(FP), SI
	MOVQ z+16(FP), DX
	MOVQ b+24(FP), CX
	PXOR X0, X0
	LEAQ -1(CX), R8
	LEAQ (CX)(CX*1), R9

window128:
	PXOR X1, X1
	PXOR X2, X2
	LEAQ (SI)(R8*8), R10
	MOVQ DX, R11
	MOVQ CX, R12

inner128:
	MOVDDUP   (R11), X3
	MOVOU     (R10), X4
	MOVO      X3, X5
	PCLMULQDQ $0x00, X4, X5
	PCLMULQDQ $0x11, X4, X3
	PXOR      X5, X1
	PXOR      X3, X2
	ADDQ      $8, R11
	SUBQ      $8, R10
	DECQ      R12
	JNZ       inner128

	MOVO    X2, X7
	PALIGNR $8, X0, X7
	PXOR    X7, X1
	MOVOU   X1, (DI)
	MOVO    X2, X0
	ADDQ    $16, DI
	ADDQ    $2, R8
	CMPQ    R8, R9
	JLT     window128
	RET
