r"""Long ascents compute in float64, so that their printed numbers hold on every processor.

PyTorch adds float32 numbers in an order that depends on the processor's vector unit (AVX2,
AVX-512 or none) and on the number of threads. The results differ in the last bits, about
:math:`10^{-7}` relative, and an ascent of a hundred Adam steps (a class model, a feature
visualization, a fooling image) amplifies that: Adam divides each gradient by its own running
size, so a pixel whose gradient is nearly 0 steps by the full learning rate in a direction that
rounding decides. After 100 steps a float32 class model's score differs in the first decimal
from one processor to the next (24.5 on one, 24.6 on another).

In float64 the same rounding is :math:`10^{-16}` relative, nine orders of magnitude smaller,
and the amplification leaves the printed digits alone. For a model as small as ShapesNet
(0.2 million parameters) a float64 ascent takes about one and a half times as long as a float32
one (100 steps for its five classes on one thread of a loaded 2-core machine: 8.3 s against
5.1 s); for a large model (an ImageNet network) it would cost many times as much and hold a
second copy of every weight, so ``float64(model)`` computes in float64 only for models of at most
``FLOAT64_PARAMETERS`` parameters, and leaves larger ones in their own dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

FLOAT64_PARAMETERS = 10_000_000
"""Models with at most this many parameters compute long ascents in float64."""


def use_float64(model: nn.Module) -> bool:
    """Whether ``float64(model)`` computes in float64: a small model on a device that has it."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type == "mps" for t in tensors):  # Apple's GPU has no float64
        return False
    return sum(p.numel() for p in model.parameters()) <= FLOAT64_PARAMETERS


@contextmanager
def float64(model: nn.Module) -> Iterator[torch.dtype]:
    """Inside the block ``model`` computes in float64: each floating-point parameter and buffer
    is replaced by a float64 copy (tied weights stay tied), and the originals are put back
    afterwards, also when the block raises, so the model leaves as it came (the same tensors,
    hooks and modes). Yields the dtype to compute in: float64, or the model's own dtype where
    ``use_float64`` says no (a large model)."""
    own = next((t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()),
               torch.float32)  # fmt: skip
    if own == torch.float64 or not use_float64(model):
        yield own
        return
    copies: dict[int, torch.Tensor] = {}
    swapped: list[tuple[dict, str, torch.Tensor]] = []

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in copies:
            copies[id(tensor)] = tensor.detach().to(torch.float64)
        return copies[id(tensor)]

    try:
        for module in model.modules():
            for table in (module._parameters, module._buffers):
                for name, tensor in table.items():
                    if tensor is not None and tensor.is_floating_point():
                        swapped.append((table, name, tensor))
                        table[name] = copy(tensor)
        yield torch.float64
    finally:
        for table, name, tensor in reversed(swapped):
            table[name] = tensor
