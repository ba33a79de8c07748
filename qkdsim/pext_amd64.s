#include "textflag.h"

// func pextWordsBMI2(dst, src, mask *uint64, n int)
//
// dst[i] = PEXT(src[i], mask[i]) for i in [0, n).
TEXT ·pextWordsBMI2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ mask+16(FP), DX
	MOVQ n+24(FP), CX
	TESTQ CX, CX
	JZ   done

loop:
	MOVQ  (SI), AX
	PEXTQ (DX), AX, BX
	MOVQ  BX, (DI)
	ADDQ  $8, SI
	ADDQ  $8, DX
	ADDQ  $8, DI
	DECQ  CX
	JNZ   loop

done:
	RET
