r"""How good is an explanation? Three measurable answers.

An attribution map is a picture; these functions turn it into numbers a class can compare.

- **Does it point at the object?** The shapes data set knows each object's pixels (the mask),
  so ``pointing_game`` asks whether the map's strongest pixel lies on the object (Zhang et al.
  2016) and ``mask_share`` how much of the map's mass lies there.
- **Does the model need what it shows?** ``deletion_curve`` removes the pixels in order of
  importance and watches the class probability fall; ``insertion_curve`` starts from nothing
  and puts them back (Petsiuk et al. 2018, RISE). ``auc`` sums each curve up: low for deletion,
  high for insertion, when the map is good.
- **Does it explain the model at all?** ``randomization_test`` re-initialises the model's
  layers from the logits downward and measures how much the map changes (Adebayo et al. 2018,
  "Sanity checks for saliency maps"). A map that stays the same does not depend on what the
  model learned.

Every function reads a map the way a saliency map is read (``importance``): the magnitude of
each pixel, the maximum over colour channels, :math:`M_{ij} = \max_c |a_{c,i,j}|`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, threads
from .class_sensitivity import class_correlation, maps_per_class  # noqa: F401 (evaluate.<name>)
from .data import gaussian_blur
from .targets import (
    as_batch,
    as_tensor,
    explaining,
    get_layer,
    model_device,
    pass_size,
    passes,
    score,
    target_indices,
)

# --- reading a map ----------------------------------------------------------------------------


@threads.under_policy
def importance(attributions: torch.Tensor) -> torch.Tensor:
    r"""One importance value per pixel, ``[N, H, W]``, the way a saliency map reads a gradient:

    .. math:: M_{ij} = \max_c |a_{c,i,j}| \quad \text{for } [N, C, H, W], \qquad
              M_{ij} = |a_{ij}| \quad \text{for } [N, H, W].

    A strongly negative attribution is as important as a strongly positive one (it changes the
    score as much). ``saliency`` and ``occlusion`` maps ``[N, H, W]`` only lose their sign.
    """
    a = _as_tensor(attributions, "attributions", "importance")
    if a.ndim not in (3, 4):
        raise ValueError(
            "importance: attributions must be maps [N, H, W] or [N, C, H, W], got shape "
            f"{tuple(a.shape)}."
        )
    a = a.abs()
    return a.amax(dim=1) if a.ndim == 4 else a


def _as_tensor(value, name: str, method: str) -> torch.Tensor:
    """A detached, finite tensor from a tensor or numpy array (``targets.as_tensor``)."""
    return as_tensor(value, name, method).detach()


def _maps_and_masks(attributions, masks, method: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(importance [N, H, W] float, masks [N, H, W] bool, one example?)``, checked.

    The masks decide the batch: ``[N, H, W]`` or one mask ``[H, W]``. The attributions then are
    ``[N, H, W]`` or ``[N, C, H, W]`` (one example: ``[H, W]`` or ``[C, H, W]``).
    """
    masks = _as_tensor(masks, "masks", method)
    if masks.dtype != torch.bool:
        if not ((masks == 0) | (masks == 1)).all():
            raise TypeError(
                f"{method}: masks must be boolean (True on the object), got dtype {masks.dtype} "
                "with values other than 0 and 1."
            )
        masks = masks.bool()
    if masks.ndim not in (2, 3):
        raise ValueError(
            f"{method}: masks must be [N, H, W] (one per example) or one mask [H, W], got shape "
            f"{tuple(masks.shape)}."
        )
    single = masks.ndim == 2
    if single:
        masks = masks.unsqueeze(0)
    a = _as_tensor(attributions, "attributions", method)
    given = tuple(a.shape)
    a = a.unsqueeze(0) if single else a
    n, h, w = masks.shape
    if a.ndim not in (3, 4) or a.shape[0] != n or tuple(a.shape[-2:]) != (h, w):
        expected = "[H, W] or [C, H, W]" if single else f"[{n}, H, W] or [{n}, C, H, W]"
        raise ValueError(
            f"{method}: attributions of shape {given} do not fit masks of shape "
            f"{tuple(masks.shape[single:])}; expected {expected} with H, W = {h}, {w} "
            "(one map per mask, same image size)."
        )
    empty = ~masks.flatten(1).any(dim=1)
    if empty.any():
        raise ValueError(
            f"{method}: the mask of example {int(empty.nonzero()[0])} is empty (no True pixel); "
            "every example needs an object to point at."
        )
    return importance(a.float()).to(masks.device), masks, single


def _mean_or_all(values: torch.Tensor, per_example: bool, single: bool):
    """The mean as a float, or one value per example (none for a single example)."""
    if per_example:
        return values[0] if single else values
    return float(values.mean())


# --- where does the map point? ----------------------------------------------------------------


@threads.under_policy
def dilate(masks: torch.Tensor, tolerance: int) -> torch.Tensor:
    """The masks grown by ``tolerance`` pixels in the square (Chebyshev) neighbourhood: a pixel
    is on the grown mask when some object pixel lies within ``tolerance`` rows *and* columns."""
    if tolerance == 0:
        return masks
    grown = nn.functional.max_pool2d(
        masks[:, None].float(), kernel_size=2 * tolerance + 1, stride=1, padding=tolerance
    )
    return grown[:, 0] > 0


@threads.under_policy
@answer_calls.recorded
def pointing_game(
    attributions: torch.Tensor,
    masks: torch.Tensor,
    tolerance: int = 0,
    per_example: bool = False,
):
    r"""The pointing game (Zhang et al. 2016): the share of examples whose map has its maximum
    on the object.

    The map is ``importance(attributions)`` (:math:`\max_c |a|`). A hit is a maximum within
    ``tolerance`` pixels of the mask, in the square (Chebyshev) neighbourhood (``dilate``).
    When several pixels tie for the maximum, an example scores the share of them that hit: the
    chance of a hit if the tie were broken at random. So a map that says nothing (constant)
    scores the object's area share, not a free point.

    Args:
        attributions: ``[N, H, W]`` or ``[N, C, H, W]`` (one example: ``[H, W]``, ``[C, H, W]``).
        masks: bool ``[N, H, W]`` (or ``[H, W]``), True on the object, as ``make_shapes`` gives.
        tolerance: how many pixels a maximum may lie off the object and still count (>= 0).
        per_example: return each example's score ``[N]`` (1 hit, 0 miss, a share on ties).

    Returns:
        The share of hits in [0, 1] as a float (or ``[N]`` with ``per_example=True``).
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(
            f"pointing_game: tolerance must be an int >= 0 (pixels), got tolerance={tolerance!r}."
        )
    m, masks, single = _maps_and_masks(attributions, masks, "pointing_game")
    maxima = m == m.amax(dim=(1, 2), keepdim=True)
    hits = (maxima & dilate(masks, tolerance)).flatten(1).sum(dim=1)
    return _mean_or_all(hits / maxima.flatten(1).sum(dim=1), per_example, single)


@threads.under_policy
def mask_share(attributions: torch.Tensor, masks: torch.Tensor, per_example: bool = False):
    r"""The share of the map's mass that lies on the object:

    .. math:: \frac{\sum_{ij \in \text{mask}} M_{ij}}{\sum_{ij} M_{ij}},
              \qquad M = \text{importance}(a) = \max_c |a|

    1 when all importance lies on the object; the object's area share (about 0.13 on the shapes)
    for a map spread evenly over the image. A map that is zero everywhere says nothing, and also
    scores the area share.

    Returns:
        The mean share as a float, or one share per example ``[N]`` with ``per_example=True``.
    """
    m, masks, single = _maps_and_masks(attributions, masks, "mask_share")
    total = m.flatten(1).sum(dim=1)
    inside = (m * masks).flatten(1).sum(dim=1)
    area = masks.flatten(1).float().mean(dim=1)
    share = torch.where(total > 0, inside / total.clamp(min=torch.finfo(m.dtype).tiny), area)
    return _mean_or_all(share, per_example, single)


# --- deletion and insertion -------------------------------------------------------------------

SUBSTRATES = ("mean", "blur")
BLUR_SIGMA = 4.0
"""The standard deviation (pixels) of the Gaussian blur of ``substrate="blur"``."""


@threads.under_policy
def make_substrate(inputs: torch.Tensor, substrate="mean") -> torch.Tensor:
    """What a removed pixel becomes (deletion), or what insertion starts from, ``[N, C, H, W]``.

    - ``"mean"`` (the default): each image's mean colour. The object vanishes into a flat patch,
      close to the background, without leaving a silhouette of a new colour behind.
    - ``"blur"``: the image blurred with a Gaussian of ``BLUR_SIGMA`` pixels (RISE's insertion
      start): colours and rough layout stay, sharp shapes go.
    - a number (e.g. ``0.0``, black), or a tensor of one image ``[C, H, W]`` or one per example.
      Beware black on the shapes: a deleted object leaves its black silhouette, which still
      shows the shape.

    On ShapesNet (64 shapes of seed 2026, 20 steps), deleting the object first (the mask as the
    map) gives a deletion AUC of 0.24 against 0.42 for a random map with ``"mean"``, 0.52 against
    0.66 with ``"blur"``, but 0.33 against 0.26 with black: there the ideal map looks worse than
    noise.
    """
    batch, _ = as_batch(inputs, "make_substrate")
    if batch.ndim != 4:
        raise ValueError(
            f"make_substrate: inputs must be images [N, C, H, W] or [C, H, W], got shape "
            f"{tuple(batch.shape)}."
        )
    if isinstance(substrate, str):
        if substrate == "mean":
            return batch.mean(dim=(2, 3), keepdim=True).expand_as(batch).clone()
        if substrate == "blur":
            return gaussian_blur(batch, BLUR_SIGMA)
        raise ValueError(
            f"substrate must be one of {', '.join(map(repr, SUBSTRATES))}, a number or a tensor, "
            f"got substrate={substrate!r}."
        )
    value = torch.as_tensor(substrate, dtype=batch.dtype, device=batch.device)
    try:
        return torch.broadcast_to(value, batch.shape).clone()
    except RuntimeError as error:
        raise ValueError(
            f"substrate of shape {tuple(value.shape)} does not fit inputs of shape "
            f"{tuple(batch.shape)}; give a number, one image {tuple(batch.shape[1:])} or one "
            "per example."
        ) from error


@threads.under_policy
@answer_calls.recorded
def pixel_order(attributions: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The pixels of each map, most important first: ``[N, H*W]`` flat indices (row-major).

    Pixels of equal importance come in a random order (seeded), so a map that says nothing
    (constant) gives a random ordering, not a sweep from the top row down.
    """
    m = importance(attributions).flatten(1)
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(m.shape[1], generator=generator).to(m.device)
    order = torch.argsort(m[:, shuffle], dim=1, descending=True, stable=True)
    return shuffle[order]


@threads.under_policy
@answer_calls.recorded
def deletion_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target=None,
    steps: int = 20,
    substrate="mean",
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""The deletion curve (Petsiuk et al. 2018): remove the most important pixels first and
    record the probability :math:`P_c = \operatorname{softmax}(S(I))_c` of the target class.

    The pixels, ordered by ``importance(attributions)`` (descending), are replaced by the
    ``substrate`` (all colour channels of a pixel at once) in ``steps`` equal chunks. Step 0 is
    the image itself, step ``steps`` is the substrate alone. A good map makes the probability
    fall fast: a small ``auc``.

    Args:
        model: a classifier returning class scores ``[N, K]``.
        inputs: images ``[N, C, H, W]`` (or one ``[C, H, W]``).
        attributions: their maps, ``[N, H, W]`` or ``[N, C, H, W]``.
        target: ``None`` (the class predicted on the image itself, fixed for the whole curve),
            an int or one int per example.
        steps: the number of chunks (>= 1); the curve has ``steps + 1`` points.
        substrate: what a removed pixel becomes; see ``make_substrate`` (default: the image's
            mean colour).
        seed: the random order among pixels of equal importance (``pixel_order``).
        batch_size: images per forward pass; all steps of all images go through in such chunks
            (``None``: passes of ``targets.PASS_VALUES`` input values).
        progress: show a progress bar (default: when there are more than 20 forward passes).

    Returns:
        ``[N, steps + 1]``, the target probability after each step (``[steps + 1]`` for one image).
    """
    arguments = (model, inputs, attributions, target, steps, substrate, seed, batch_size, progress)
    return _curve(*arguments, "deletion")


@threads.under_policy
@answer_calls.recorded
def insertion_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target=None,
    steps: int = 20,
    substrate="mean",
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""The insertion curve (Petsiuk et al. 2018), the mirror image of ``deletion_curve``: start
    from the ``substrate`` and put back the image's pixels, most important first, in ``steps``
    equal chunks, recording the target class probability. Step 0 is the substrate alone, step
    ``steps`` the image itself. A good map makes the probability rise fast: a large ``auc``.
    The arguments are those of ``deletion_curve``; ``target=None`` is the class predicted on
    the whole image."""
    arguments = (model, inputs, attributions, target, steps, substrate, seed, batch_size, progress)
    return _curve(*arguments, "insertion")


@answer_calls.recorded
def _curve(model, inputs, attributions, target, steps, substrate, seed, batch_size, progress, kind):
    method = f"{kind}_curve"
    size = 1 if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{method}: batch_size must be an int >= 1, got {batch_size=!r}.")
    batch, single, first, then, rank, cut = _removal(
        inputs, attributions, steps, substrate, seed, kind, method, model_device(model)
    )
    n, h, w = batch.shape[0], batch.shape[2], batch.shape[3]
    with explaining(model), torch.no_grad():
        target = target_indices(target, model(batch), method)
        example = torch.arange(n, device=batch.device).repeat_interleave(steps + 1)
        step = torch.arange(steps + 1, device=batch.device).repeat(n)
        everything = torch.arange(n * (steps + 1), device=batch.device)
        chunks = [
            everything[part] for part in passes(len(everything), batch_size or pass_size(batch))
        ]
        show = progress if progress is not None else len(chunks) > 20
        probabilities = []
        for chunk in tqdm(chunks, desc=method.replace("_", " "), disable=not show, leave=False):
            i, k = example[chunk], step[chunk]
            moved = (rank[i] < cut[k][:, None]).view(-1, 1, h, w)
            images = torch.where(moved, then[i], first[i])
            _, logits = score(model, images, target[i], method)
            probabilities.append(torch.softmax(logits, dim=1).gather(1, target[i][:, None])[:, 0])
    curve = torch.cat(probabilities).view(n, steps + 1)
    return curve[0] if single else curve


@answer_calls.recorded
def _removal(inputs, attributions, steps, substrate, seed, kind, method, device=None):
    """What a curve shows: ``(batch, single, first, then, rank, cut)``, checked. Pixel p of image
    i shows ``then`` instead of ``first`` after step k if ``rank[i, p] < cut[k] = k H W // steps``:
    the first ``cut[k]`` of its ``pixel_order`` (deletion: the image, then the substrate)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{method}: steps must be an int >= 1, got steps={steps!r}.")
    batch, single = as_batch(inputs, method)
    if batch.ndim != 4:
        raise ValueError(
            f"{method}: inputs must be images [N, C, H, W] or one image [C, H, W], got shape "
            f"{tuple(batch.shape)}."
        )
    batch = batch.detach().to(device or batch.device)
    a = _as_tensor(attributions, "attributions", method)
    a = a.unsqueeze(0) if single else a
    n, c, h, w = batch.shape
    if a.ndim not in (3, 4) or a.shape[0] != n or tuple(a.shape[-2:]) != (h, w):
        raise ValueError(
            f"{method}: attributions of shape {tuple(a.shape[single:])} do not fit inputs of "
            f"shape {tuple(batch.shape[single:])}; expected one map per image, "
            f"{'[H, W] or [C, H, W]' if single else f'[{n}, H, W] or [{n}, C, H, W]'} "
            f"with H, W = {h}, {w}."
        )
    background = make_substrate(batch, substrate).to(batch.device)
    # the most important pixels go to the substrate (deletion) or come back from it (insertion)
    first, then = (batch, background) if kind == "deletion" else (background, batch)
    # rank[i, p]: the position of pixel p in image i's order; after step k the first cut[k] move.
    order = pixel_order(a.float(), seed).to(batch.device)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=batch.device).expand(n, -1))
    cut = torch.arange(steps + 1, device=batch.device) * (h * w) // steps
    return batch, single, first, then, rank, cut


@threads.under_policy
@answer_calls.recorded
def step_images(inputs, attributions, steps=20, substrate="mean", seed=0, kind="deletion"):
    """What ``deletion_curve`` (``kind="deletion"``) or ``insertion_curve`` shows the model after
    each step k, ``[N, steps + 1, C, H, W]`` (one image: ``[steps + 1, C, H, W]``): the first
    ``k H W // steps`` pixels of ``pixel_order`` made the substrate's (insertion: the image's)."""
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"step_images: kind must be 'deletion' or 'insertion', got {kind!r}.")
    batch, single, first, then, rank, cut = _removal(
        inputs, attributions, steps, substrate, seed, kind, "step_images"
    )
    moved = (rank[:, None, :] < cut[None, :, None]).view(len(batch), -1, 1, *batch.shape[-2:])
    images = torch.where(moved, then[:, None], first[:, None])
    return images[0] if single else images


@threads.under_policy
def auc(curve: torch.Tensor, per_example: bool = False):
    r"""The area under a deletion or insertion curve, by the trapezoid rule over the removed (or
    inserted) share of pixels :math:`x \in [0, 1]`, points :math:`x_k = k / \text{steps}`:

    .. math:: \text{AUC} = \sum_{k=1}^{\text{steps}} \frac{p_{k-1} + p_k}{2\,\text{steps}}

    Args:
        curve: ``[N, steps + 1]`` or one curve ``[steps + 1]``.
        per_example: return one area per curve ``[N]`` instead of the mean.
    """
    curve = _as_tensor(curve, "curve", "auc")
    if curve.ndim not in (1, 2) or curve.shape[-1] < 2:
        raise ValueError(
            "auc: curve must be [N, steps + 1] or [steps + 1] with at least 2 points (steps >= 1), "
            f"got shape {tuple(curve.shape)}."
        )
    area = torch.trapezoid(curve.double(), dx=1.0 / (curve.shape[-1] - 1), dim=-1).to(curve.dtype)
    if curve.ndim == 1:
        return area if per_example else float(area)
    return _mean_or_all(area, per_example, single=False)


# --- sanity check: model parameter randomization ----------------------------------------------


@threads.under_policy
@answer_calls.recorded
def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Spearman's rank correlation of each row of ``x`` with the same row of ``y``
    (``[..., D]``: two vectors, two batches ``[N, D]``, ...): the Pearson correlation of the ranks,

    .. math:: \rho = \frac{\sum_i (r_i - \bar r)(s_i - \bar s)}
                          {\sqrt{\sum_i (r_i - \bar r)^2 \sum_i (s_i - \bar s)^2}},

    tied values sharing their average rank. A constant row has no ranking: NaN.
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.shape != y.shape or x.ndim == 0 or x.shape[-1] < 2:
        raise ValueError(
            "spearman: x and y must have the same shape [..., D] with D >= 2 values to rank along "
            f"the last axis, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    r, s = rank(x.double()), rank(y.double())
    r = r - r.mean(dim=-1, keepdim=True)
    s = s - s.mean(dim=-1, keepdim=True)
    return (r * s).sum(dim=-1) / ((r * r).sum(dim=-1) * (s * s).sum(dim=-1)).sqrt()


@threads.under_policy
@answer_calls.recorded
def rank(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..D along the last axis; tied values get the average of the ranks they span.

    A value with ``below`` smaller and ``equal`` equal values (itself included) spans ranks
    ``below + 1 .. below + equal``, whose average is ``below + (equal + 1) / 2``.
    """
    ordered = x.sort(dim=-1).values.contiguous()
    x = x.contiguous()
    below = torch.searchsorted(ordered, x, right=False)
    up_to = torch.searchsorted(ordered, x, right=True)
    return (below + up_to + 1).to(torch.float64) / 2


@dataclass
class RandomizationResult:
    """What ``randomization_test`` found, ready to print (``print(result)``) and plot.

    Attributes:
        layers: the randomized layers, in the order they were randomized.
        spearman: ``[len(layers), N]``, the rank correlation of each example's map after that
            step with its map on the trained model (NaN where a map is constant).
        original: ``[N, H, W]``, the trained model's maps (``importance``: max_c |a|).
        randomized: ``[len(layers), N, H, W]``, the maps after each step.
        cascade: whether the layers were randomized cumulatively (top layer, then top two, ...)
            or one at a time.
    """

    layers: list[str]
    spearman: torch.Tensor
    original: torch.Tensor
    randomized: torch.Tensor
    cascade: bool = True

    @property
    def mean(self) -> list[float]:
        """The mean rank correlation over the examples, one per layer (NaNs left out)."""
        return [float(row[~row.isnan()].mean()) for row in self.spearman]

    def __str__(self) -> str:
        header = "randomized (cumulative)" if self.cascade else "randomized (alone)"
        width = max(len(header), *(len(name) for name in self.layers))
        lines = [f"{header:<{width}}  Spearman (mean ± std over {self.spearman.shape[1]} maps)"]
        for name, row in zip(self.layers, self.spearman):
            valid = row[~row.isnan()]
            spread = float(valid.std()) if len(valid) > 1 else 0.0
            lines.append(f"{name:<{width}}  {float(valid.mean()):.2f} ± {spread:.2f}")
        return "\n".join(lines)


@threads.under_policy
def randomizable_layers(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """The layers that hold parameters, from the logits downward: the reverse of the order in
    which a forward pass on ``inputs`` calls them (layers the pass never calls are left out)."""
    called: list[str] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: called.append(name))
        for name, module in model.named_modules()
        if name and any(True for _ in module.parameters(recurse=False))
    ]
    try:
        with explaining(model), torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return list(reversed(dict.fromkeys(called)))


def reinitialize(layer: nn.Module, seed: int) -> None:
    """Give ``layer`` fresh random parameters, the same for the same ``seed``: PyTorch's own
    initialisation (``layer.reset_parameters()``, what an untrained network starts from), run
    under ``torch.manual_seed(seed)``. A layer without ``reset_parameters`` gets normal noise
    with each parameter's own standard deviation. The global random state is left as it was."""
    devices = sorted({p.device.index or 0 for p in layer.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
            else:
                for p in layer.parameters(recurse=False):
                    std = float(p.std()) if p.numel() > 1 else float(p.abs())
                    p.normal_(0.0, std)


@threads.under_policy
def randomization_test(
    model: nn.Module,
    inputs: torch.Tensor,
    method: Callable[..., torch.Tensor],
    target=None,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    cascade: bool = True,
    progress: bool | None = None,
) -> RandomizationResult:
    """The cascading model parameter randomization test (Adebayo et al. 2018, "Sanity checks
    for saliency maps").

    On a copy of the model, the layers with parameters are re-initialised one after the other,
    from the logits downward (``fc2``, then ``fc2`` and ``fc1``, ...). After each step the
    method explains the same inputs again, and the Spearman rank correlation between the new
    map and the trained model's map measures how much of the explanation survived. A method
    that explains the model should lose its map as the model loses what it learned; a map that
    stays the same shows the image, not the model.

    Maps are compared as ``importance`` (max_c |a|). The target stays the class the *trained*
    model predicts (or ``target`` if given): a randomized model's own prediction would explain
    a different class. The model passed in is never changed; every step works on a deep copy.

    Args:
        model: the trained model.
        inputs: a batch ``[N, C, H, W]`` (or one image ``[C, H, W]``).
        method: any attribution function ``method(model, inputs, target)``, e.g.
            ``attribution.gradient`` or ``lambda m, x, t: integrated_gradients(m, x, t, steps=16)``.
        target: ``None`` (the trained model's predicted class), an int or one int per example.
        seed: fixes the new parameters; layer ``i`` of the order gets ``reinitialize(.., seed)``
            with its own seed derived from ``(seed, i)``.
        layers: the layer names to randomize, in this order; default: every layer with
            parameters, from the logits downward (``randomizable_layers``).
        cascade: True: cumulative (Adebayo's cascading test); False: each layer alone, the others
            trained (their independent test).
        progress: show a progress bar (default: for models over a million parameters).

    Returns:
        A ``RandomizationResult``: ``print(result)`` gives the table, ``result.mean`` one
        number per layer to plot against ``result.layers``. (One image counts as a batch of 1.)
    """
    if not callable(method):
        raise TypeError(
            "randomization_test: method must be an attribution function f(model, inputs, target), "
            f"got {type(method).__name__}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"randomization_test: seed must be a non-negative int, got seed={seed!r}.")
    batch, _ = as_batch(inputs, "randomization_test")
    if batch.ndim != 4:
        raise ValueError(
            "randomization_test: inputs must be images [N, C, H, W] or one image [C, H, W], got "
            f"shape {tuple(batch.shape)}."
        )
    trained = copy.deepcopy(model)  # the model passed in is only read, never run or changed
    batch = batch.detach().to(model_device(trained))
    layers = _check_layers(trained, batch, layers)
    with explaining(trained), torch.no_grad():
        target = target_indices(target, trained(batch), "randomization_test")

    original = _map(method, trained, batch, target, "the trained model")
    maps = []
    randomized = trained
    big = sum(p.numel() for p in model.parameters()) > 1_000_000
    show = progress if progress is not None else big
    for i, name in enumerate(tqdm(layers, desc="randomization test", disable=not show)):
        if not cascade:
            randomized = copy.deepcopy(trained)
        layer_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        reinitialize(get_layer(randomized, name, "randomization_test"), layer_seed)
        maps.append(_map(method, randomized, batch, target, f"layer {name!r} randomized"))
    randomized_maps = torch.stack(maps)
    correlations = spearman(
        original.flatten(1).expand(len(layers), -1, -1), randomized_maps.flatten(2)
    ).float()
    return RandomizationResult(list(layers), correlations, original, randomized_maps, cascade)


def _check_layers(model: nn.Module, batch: torch.Tensor, layers) -> list[str]:
    """The layers to randomize: checked names, or by default every parameter layer, top down."""
    if layers is None:
        found = randomizable_layers(model, batch)
        if not found:
            raise ValueError("randomization_test: the model has no layer with parameters.")
        return found
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("randomization_test: layers is empty; name at least one layer, or None.")
    for name in layers:
        layer = get_layer(model, name, "randomization_test")
        if not any(True for _ in layer.parameters(recurse=False)):
            with_parameters = ", ".join(
                n for n, m in model.named_modules() if n and any(True for _ in m.parameters(False))
            )
            raise ValueError(
                f"randomization_test: layer {name!r} has no parameters to randomize. Layers with "
                f"parameters: {with_parameters}."
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"randomization_test: layers names a layer twice: {layers}.")
    return layers


def _map(method, model: nn.Module, batch: torch.Tensor, target: torch.Tensor, when: str):
    """``importance(method(model, batch, target))``, checked to be one map per image."""
    result = method(model, batch, target)
    if isinstance(result, tuple):  # e.g. return_gap=True
        result = result[0]
    result = _as_tensor(result, "the method's result", "randomization_test")
    n, h, w = batch.shape[0], batch.shape[-2], batch.shape[-1]
    if result.ndim not in (3, 4) or result.shape[0] != n or tuple(result.shape[-2:]) != (h, w):
        raise ValueError(
            f"randomization_test: the method returned shape {tuple(result.shape)} on {when}; "
            f"expected one map per image, [{n}, H, W] or [{n}, C, H, W] with H, W = {h}, {w}."
        )
    return importance(result.float()).cpu()
