"""Every notebook kernel of the tests computes with the instruction set its stored outputs came
from.

PyTorch picks its CPU kernels by the processor: AVX-512 where there is one, AVX2 otherwise.
They add float32 numbers in a different order, so results differ in the last bits, and an
ascent of 100 Adam steps (the class models of lecture 03, the fooling images of lecture 08)
carries that into the printed digits (S_c = 31.9 on one processor, 32.0 on another). The stored
outputs were computed with AVX2, which every x86-64 processor of the last decade has; the tests
ask for it too (the kernels inherit this environment), so nbval compares like with like. Set
the variables yourself to compare with another instruction set.
"""

import os
import platform

if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
