r"""The saturation problem (lecture, "Saturation problem"): a two-input toy that breaks
perturbation and gradients alike.

.. math:: y(i_1, i_2) = 1 - \max(0,\ 1 - i_1 - i_2)

The lecture: "For perturbation and gradient-based [methods] fail to model saturation."
At :math:`i_1 = i_2 = 1` both inputs matter (together they lift y from 0 to 1), yet

- removing either one alone leaves y unchanged, :math:`y(0, 1) = y(1, 0) = y(1, 1) = 1`, so
  single-feature perturbation gives (0, 0);
- the gradient is (0, 0), because :math:`\partial y / \partial i_1 = \partial y / \partial i_2 = 0`
  wherever :math:`i_1 + i_2 > 1`.

Methods with a baseline see it: integrated gradients and DeepLIFT against the baseline (0, 0)
give (0.5, 0.5), which adds up to :math:`y(1, 1) - y(0, 0) = 1`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class SaturatingToy(nn.Sequential):
    r"""The lecture's saturating function :math:`y = 1 - \max(0, 1 - i_1 - i_2)`, ``[N, 2] -> [N, 1]``.

    It equals :math:`i_1 + i_2` if :math:`i_1 + i_2 < 1` and 1 otherwise (the slide's "= 0,
    otherwise" is a slip: its own examples give :math:`y(1, 1) = y(0, 1) = y(1, 0) = 1`), and
    for :math:`i_1 + i_2 > 1` both partial derivatives are 0.

    Built from the lecture's layer types, so that every method of the course sees its ReLU:

    ==========  ======================================  ==========================
    layer       operation                               output
    ==========  ======================================  ==========================
    ``gap``     linear, weights (-1, -1), bias 1        :math:`h = 1 - i_1 - i_2`
    ``relu``    :math:`\max(h, 0)`                      the part still missing
    ``out``     linear, weight -1, bias 1               :math:`y = 1 - \max(h, 0)`
    ==========  ======================================  ==========================

    The weights are fixed (``requires_grad=False``). The output has one column, so
    ``target=None`` and ``target=0`` both explain y.
    """

    def __init__(self) -> None:
        gap = nn.Linear(2, 1)
        out = nn.Linear(1, 1)
        with torch.no_grad():
            gap.weight.copy_(torch.tensor([[-1.0, -1.0]]))
            gap.bias.fill_(1.0)
            out.weight.fill_(-1.0)
            out.bias.fill_(1.0)
        for parameter in (*gap.parameters(), *out.parameters()):
            parameter.requires_grad_(False)
        super().__init__(OrderedDict(gap=gap, relu=nn.ReLU(), out=out))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 2 or inputs.shape[1] != 2:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)
            raise ValueError(
                f"SaturatingToy: expects a batch of input pairs [N, 2] (i1, i2), got {shape}. "
                "For one pair use torch.tensor([[i1, i2]])."
            )
        return super().forward(inputs)
