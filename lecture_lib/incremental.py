r"""Incremental occlusion: recompute only what an occlusion window changes (Krypton).

An occlusion window hides a small square of the image, so most of each layer's input is the
same as for the unoccluded image. Nakandala, Kumar & Papakonstantinou (Krypton, SIGMOD 2019)
recompute each layer only where the window's *region of influence* reaches and copy the rest
from the unoccluded image's activations. ``regions.plan`` does the receptive field's
arithmetic, backwards, for every window and every layer (and says where and why the *full*
recomputation starts); here each layer is computed on its *tiles*: the unoccluded input with
the changed box pasted in. Every window of a layer gets a box of the same size (placed inside
the map at the borders), so all windows go through each layer as one batch of tiles.

From the first layer whose output depends on its whole input (flatten and linear layers,
adaptive pooling that resizes), whose computation the plan does not know, or whose changed box
would cover its whole output map, the occluded input of that layer is assembled from the
unoccluded map and the changed box, and the rest of the network runs as usual. The result is
the same as running every occluded image through the whole network, up to rounding
(tests/test_incremental.py and tests/test_generated_models.py compare them).

``plan`` (from ``regions``) and ``print(plan(...))`` show the plan as a table;
``occluded_scores`` computes the target's score of every occluded image of one image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import threads
from .regions import WORTH_IT, Band, Plan, Step, layer_chain, plan

__all__ = ["WORTH_IT", "Band", "Plan", "Step", "layer_chain", "occluded_scores", "plan"]

# --- the computation --------------------------------------------------------------------------


@threads.under_policy
def occluded_scores(
    plan: Plan,
    image: torch.Tensor,
    reference: torch.Tensor,
    target: int,
    batch_size: int = 256,
    bar=None,
) -> torch.Tensor:
    r"""The target's score :math:`f(x_{\setminus w})` of ``image`` ``[C, H, W]`` with window
    :math:`w` replaced by ``reference`` (an image of the same shape), for every window of
    ``plan``: ``[len(plan.rows) * len(plan.cols)]``, window ``(r, s)`` at ``r * len(plan.cols) + s``.

    ``batch_size`` windows go through the layers together; ``bar`` (a tqdm bar) advances by
    one per batch. The model (the one ``plan`` was made for) must be in eval mode; call this
    under ``torch.no_grad()``.
    """
    if not plan.possible:
        raise ValueError(f"occluded_scores: nothing can be computed incrementally {plan.reason}.")
    inputs = unoccluded_inputs(plan, image)
    reference = _channels_last(reference)
    windows = torch.arange(len(plan.rows) * len(plan.cols), device=image.device)
    scores = [
        _occluded_scores(plan, inputs, reference, target, chunk, bar)
        for chunk in windows.split(batch_size)
    ]
    return torch.cat(scores)


def _occluded_scores(plan, inputs, reference, target, windows, bar) -> torch.Tensor:
    """``occluded_scores`` for one batch of ``windows``."""
    row, col = windows // len(plan.cols), windows % len(plan.cols)
    indices = plan._indices.setdefault((int(windows[0]), len(windows)), {})
    # the occluded input inside each window: the reference's pixels
    window = tuple(Band(torch.tensor(p), plan.window) for p in (plan.rows, plan.cols))
    changed = _tiles(indices, "window", reference, None, None, window, row, col)
    x = _logits(plan, inputs, changed, row, col, indices)
    if bar is not None:
        bar.update()
    return x[:, target]


def replaced_logits(
    plan: Plan, inputs: list[torch.Tensor], patches: torch.Tensor, windows: torch.Tensor
) -> torch.Tensor:
    """The class scores ``[P, K]`` of the image whose layer inputs are ``inputs``
    (``unoccluded_inputs``) with window ``windows[p]`` (numbered as in ``occluded_scores``)
    replaced by ``patches[p]`` ``[C, window, window]``: prediction difference analysis draws
    different values for every window. Call under ``torch.no_grad()``, model in eval mode."""
    windows = windows.cpu()
    row, col = windows // len(plan.cols), windows % len(plan.cols)
    indices = plan._indices.setdefault(("replaced", *windows.tolist()), {})
    return _logits(plan, inputs, patches, row, col, indices)


def _tiles(indices, key, source, changed, boxes, tiles, row, col):
    """The tiles a layer reads, with the gather's index computed once per plan."""
    if key not in indices:
        box = None if changed is None else changed.shape[-2:]
        index = _tile_index(source.shape, box, boxes, tiles, row.cpu(), col.cpu())
        indices[key] = index.to(source.device)
    return _gather(source, changed, indices[key])


def _logits(plan, inputs, changed, row, col, indices) -> torch.Tensor:
    """The model's output for the windows at ``row``, ``col`` whose input is ``changed``."""
    for index, (step, source) in enumerate(zip(plan.steps[: plan.full_from], inputs)):
        if step.kind == "pointwise":
            changed = step.module(changed)
        else:
            tiles = _tiles(indices, index, source, changed, step.boxes, step.tiles, row, col)
            changed = _window(step, tiles)
    # the occluded input of the first full layer: the unoccluded map with the changed box in it
    source = inputs[-1]
    whole = tuple(
        Band(torch.zeros(len(p), dtype=torch.long), n)
        for p, n in zip((plan.rows, plan.cols), source.shape)
    )
    x = _tiles(indices, "full", source, changed, plan.boxes, whole, row, col)
    for step in plan.steps[plan.full_from :]:
        x = step.module(x)
    if x.ndim != 2:
        raise ValueError(
            f"occlusion: the model must return class scores of shape [N, K], got {tuple(x.shape)}."
        )
    return x


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[C, H, W]`` as a contiguous ``[H, W, C]`` copy (an in-place layer that runs later
    cannot change it): each position's channels side by side."""
    return x.permute(1, 2, 0).clone(memory_format=torch.contiguous_format)


def unoccluded_inputs(plan: Plan, image: torch.Tensor) -> list[torch.Tensor]:
    """The input of every layer up to the first full one, for the unoccluded ``image``, as
    ``[H, W, C]`` maps; a window layer's input padded as the layer pads it."""
    inputs = []
    x = image[None].clone()  # an in-place first layer must not change the image
    for index, step in enumerate(plan.steps[: plan.full_from + 1]):
        if step.kind == "window":
            (ph, pw), value = step.padding, step.pad_value
            inputs.append(_channels_last(F.pad(x, (pw, pw, ph, ph), value=value)[0]))
        elif step.kind == "full":
            inputs.append(_channels_last(x[0]))
        else:
            inputs.append(None)
        if index < plan.full_from:
            x = step.module(x)
    if plan.full_from == len(plan.steps):
        inputs.append(_channels_last(x[0]))
    return inputs


def _tile_index(
    source: torch.Size,
    box: torch.Size | None,
    boxes: tuple[Band, Band] | None,
    tiles: tuple[Band, Band],
    row: torch.Tensor,
    col: torch.Tensor,
) -> torch.Tensor:
    """Where each value of each tile comes from ``[P, T, U]``, for ``_gather``.

    The occluded map is the unoccluded map (``source`` ``[H, W, C]``) with a changed box of
    ``box`` ``(h, w)`` at ``boxes``; the tile of window ``p`` starts at
    ``tiles[0].start[row[p]]``, ``tiles[1].start[col[p]]``. An index below ``H * W`` is a
    position of the unoccluded map, the others count through the changed boxes, window by
    window.
    """
    height, width, _ = source
    y = tiles[0].start[row, None] + torch.arange(tiles[0].size)  # [P, T]
    x = tiles[1].start[col, None] + torch.arange(tiles[1].size)  # [P, U]
    index = y[:, :, None] * width + x[:, None, :]
    if box is not None:
        h, w = box
        dy = y - boxes[0].start[row, None]  # the row inside the changed box
        dx = x - boxes[1].start[col, None]
        inside = ((dy >= 0) & (dy < h))[:, :, None] & ((dx >= 0) & (dx < w))[:, None, :]
        boxed = height * width + (torch.arange(len(row)) * h * w)[:, None, None]
        index = torch.where(inside, boxed + dy[:, :, None] * w + dx[:, None, :], index)
    return index


def _gather(source: torch.Tensor, changed: torch.Tensor | None, index: torch.Tensor):
    """The tiles ``[P, C, T, U]`` (a channels-last view, which convolutions take as it is) of
    the unoccluded map ``source`` ``[H, W, C]`` with the changed boxes ``[P, C, h, w]`` in it."""
    channels = source.shape[-1]
    flat = source.reshape(-1, channels)
    if changed is not None:
        flat = torch.cat([flat, changed.permute(0, 2, 3, 1).reshape(-1, channels)])
    gathered = flat.index_select(0, index.reshape(-1))
    return gathered.view(*index.shape, channels).permute(0, 3, 1, 2)


def _window(step: Step, tiles: torch.Tensor) -> torch.Tensor:
    """A convolution or max-pooling on tiles that already hold its padding."""
    m = step.module
    if isinstance(m, nn.Conv2d):
        return F.conv2d(tiles, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
    return F.max_pool2d(tiles, m.kernel_size, m.stride, 0, m.dilation)
