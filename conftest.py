"""The notebooks' stored outputs hold on every processor: nothing to set here.

PyTorch picks its CPU kernels by the processor (AVX-512, AVX2, or plain code with
``ATEN_CPU_CAPABILITY=default``) and adds float32 numbers in an order that depends on it and on
the number of threads. The long ascents whose rounding the printed digits would show (class
models, feature visualization, fooling images) compute in float64 (``lecture_lib.precision``),
so the tests run with whatever the processor has; ``tests/test_portable.py`` re-executes those
notebooks on the plain code path with one thread and compares their text with the stored one.
"""
