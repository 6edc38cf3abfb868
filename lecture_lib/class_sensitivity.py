"""Class sensitivity: does an explanation depend on the class it explains?

A map meant to explain a *decision* should change with the class asked about. ``maps_per_class``
explains each image for its most probable classes, and ``class_correlation`` measures how alike
those maps are: near 1 for a method that explains the image (its edges, its colours) whatever the
class, as DeconvNet and guided backpropagation tend to (the reminder that opens part 7).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import threads
from .targets import as_batch, as_tensor, explaining, model_device


@threads.under_policy
def maps_per_class(
    model: nn.Module, inputs: torch.Tensor, method: Callable, k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image explained for each of its ``k`` most probable classes (all classes when None).

    Returns ``(maps, classes)``: ``maps`` ``[N, k, ...]`` (``method``'s map for each class),
    ``classes`` ``[N, k]``, the most probable class first.
    """
    batch, _ = as_batch(inputs, "maps_per_class")
    with explaining(model), torch.no_grad():
        logits = model(batch.to(model_device(model)))
    k = logits.shape[1] if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= logits.shape[1]:
        raise ValueError(
            f"maps_per_class: k must be an int in 2..{logits.shape[1]} (the model has "
            f"{logits.shape[1]} classes), got k={k!r}."
        )
    classes = logits.topk(k, dim=1).indices.cpu()
    maps = torch.stack([method(model, batch, classes[:, r]) for r in range(k)], dim=1)
    return maps, classes


@threads.under_policy
def class_correlation(maps: torch.Tensor) -> torch.Tensor:
    r"""How alike are an image's maps for different classes? ``maps`` ``[N, k, ...]`` (from
    ``maps_per_class``) gives ``[N, k (k - 1) / 2]``: the Pearson correlation of every pair of
    different classes. Near 1: the map hardly depends on the class (an explanation of the image,
    not of the decision)."""
    a = as_tensor(maps, "maps", "class_correlation").detach()
    if a.ndim < 3 or a.shape[1] < 2:
        raise ValueError(
            "class_correlation: maps must be [N, k, ...] with k >= 2 classes per image, got "
            f"shape {tuple(a.shape)}."
        )
    k = a.shape[1]
    pairs = torch.triu_indices(k, k, offset=1)
    return torch.stack(
        [torch.corrcoef(m.flatten(1).double())[pairs[0], pairs[1]] for m in a]
    ).float()
