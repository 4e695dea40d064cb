#include "textflag.h"

// func PrefetchAddr(p unsafe.Pointer)
TEXT ·PrefetchAddr(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ p+0(FP), AX
	PREFETCHT0 (AX)
	RET
