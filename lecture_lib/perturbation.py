r"""Perturbation-based attribution (lecture, "Perturbation-based approaches").

"Introducing perturbations to individual inputs or neurons and observe the impact on later
neurons or the output." Each perturbation costs one more forward pass and compares two
numbers, the explained score f (``targets``) before and after:

.. math:: \Delta f = f(x) - f(x_{\text{perturbed}})

``occlusion``
    Zeiler & Fergus's occlusion experiment: slide a square window over the image, grey (or
    black) it out, and record how much the score drops. Each pixel gets the mean drop of the
    windows that cover it. A window changes only a small part of each layer's input, so for
    networks of convolutions, ReLUs and max-poolings (ShapesNet, VGG) each layer is
    recomputed only where the window reaches (``incremental``: for 8 x 8 windows on
    ShapesNet, 5.6 times fewer multiply-adds than whole forward passes); ``occlusion_plan``
    says how, layer by layer.
``single_feature``
    Remove one input feature at a time: the lecture's "requires 2 passes" per feature. Meant
    for small inputs such as ``saturation.SaturatingToy``, where it shows the other weakness on
    the slide: it "may underestimate the importance of features that have saturated their
    contribution to the output".

The perturbed copies (or windows) run through the model ``batch_size`` at a time, so memory
stays bounded; a progress bar appears when there are many forward passes (more than 20) or
``progress=True``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, threads
from . import incremental as _incremental
from .regions import (
    check_positive_int,
    check_windows,
    window_positions,  # noqa: F401 (public: where the windows start)
)
from .targets import (
    baseline_batch,
    explaining,
    finish,
    fix_target,
    prepare,
    score,
    select,
)

MAX_FEATURES = 100_000
"""``single_feature`` refuses examples with more features than this (use ``occlusion``)."""

SHOW_PROGRESS_ABOVE = 20
"""A progress bar appears when a method needs more forward batches than this."""


@threads.under_policy
@answer_calls.recorded
def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    window: int = 8,
    stride: int = 4,
    baseline=0.0,
    batch_size: int = 256,
    progress: bool | None = None,
    incremental: bool | None = None,
) -> torch.Tensor:
    r"""Occlusion sensitivity (Zeiler & Fergus 2014) ``[N, H, W]``: how much the target score
    drops when a square of the image is hidden.

    For every window position :math:`w` (a ``window`` x ``window`` square, all colour
    channels), :math:`x_{\setminus w}` is the image with that square replaced by ``baseline``:

    .. math:: \Delta f_w = f(x) - f(x_{\setminus w}), \qquad
              A_{ij} = \operatorname{mean}_{w \ni (i, j)} \Delta f_w

    A positive :math:`A_{ij}` means hiding the pixel lowers the score: it spoke *for* the class.

    How :math:`f(x_{\setminus w})` is computed: a network of convolutions, ReLUs and
    max-poolings followed by flatten and linear layers (ShapesNet, VGG) recomputes each layer
    only where the window reaches (``lecture_lib.incremental``, Krypton's incremental
    inference); any other network runs every occluded image through the whole network.
    Both give the same map up to rounding; ``occlusion_plan`` says which one is used and why.

    Args:
        model: the network, left as it came.
        inputs: images ``[N, C, H, W]`` or one image ``[C, H, W]`` (never modified).
        target: ``None`` (each image's predicted class, decided once on the unoccluded image),
            a class index, one per image, or a ``targets.Neuron``.
        window: the side of the square in pixels (at most the image's side).
        stride: the step between window positions (at most ``window``, so every pixel is
            covered); the positions are ``0, stride, 2 stride, ...`` and always the last one,
            ``side - window``.
        baseline: what fills the window: a number (0.0 black, 0.5 grey), or an image of the
            input's shape (one for all, or one per image) whose pixels are copied in.
        batch_size: occluded copies per forward pass (bounds the memory used).
        progress: show a progress bar; ``None`` shows one when there are more than 20 passes.
        incremental: ``None`` recomputes incrementally when the model allows it and the
            windows leave enough to save, ``False`` always runs whole occluded images,
            ``True`` insists on the incremental path (and says why when the model does not
            allow it).

    Returns:
        ``[N, H, W]`` (``[H, W]`` for one image), on the inputs' device.
    """
    method = "occlusion"
    batch, single = prepare(model, inputs, method)
    n, _, height, width = check_windows(batch, inputs, window, stride, method)
    check_positive_int(batch_size, "batch_size", method)
    if incremental not in (None, True, False):
        raise ValueError(f"{method}: incremental must be None, True or False, got {incremental!r}.")
    reference = baseline_batch(baseline, batch, method).expand_as(batch)

    with explaining(model), torch.no_grad():
        f_x, target = fix_target(model, batch, target, method)
        route = _incremental.plan(model, batch.shape[1:], window, stride, target)
        if incremental and not route.possible:
            raise ValueError(
                f"{method}: incremental=True, but this model cannot be recomputed incrementally "
                f"{route.reason}. Use incremental=None to fall back to whole forward passes."
            )
        use = route.incremental if incremental is None else incremental
        run = _incremental_scores if use else _full_scores
        f_occluded = run(model, batch, reference, target, route, batch_size, progress, method)
    drops = (f_x[:, None] - f_occluded).view(n, len(route.rows), len(route.cols))
    return finish(_spread(drops, route, height, width), inputs, single)


@threads.under_policy
def occlusion_plan(
    model: nn.Module, inputs: torch.Tensor, target=None, window: int = 8, stride: int = 4
) -> _incremental.Plan:
    """How ``occlusion`` computes the occluded images of ``inputs``: ``plan.incremental`` is
    ``True`` when layers are recomputed only where a window reaches; otherwise
    ``plan.fallback`` says why every occluded image runs through the whole network.
    ``plan.reason`` says where (and why) the whole map is recomputed; ``print(plan)`` shows the
    changed region of every layer. The model is left as it came."""
    method = "occlusion_plan"
    batch, _ = prepare(model, inputs, method)
    check_windows(batch, inputs, window, stride, method)
    with explaining(model), torch.no_grad():
        _, target = fix_target(model, batch, target, method)  # a valid class or Neuron
        return _incremental.plan(model, batch.shape[1:], window, stride, target)


def _full_scores(model, batch, reference, target, route, batch_size, progress, method):
    """f of every occluded image ``[N, windows]``, each run through the whole network."""
    n, _, height, width = batch.shape
    rows = torch.tensor(route.rows, device=batch.device)
    cols = torch.tensor(route.cols, device=batch.device)
    in_row, in_col = _covers(rows, height, route.window), _covers(cols, width, route.window)
    n_windows = len(rows) * len(cols)
    # every (image, window) pair, flattened: pair p is image p // n_windows, window p % n_windows
    chunks = torch.arange(n * n_windows, device=batch.device).split(batch_size)
    show = progress if progress is not None else len(chunks) > SHOW_PROGRESS_ABOVE
    scores = torch.empty(n * n_windows, dtype=batch.dtype, device=batch.device)
    for chunk in tqdm(chunks, desc=method, disable=not show, leave=False):
        examples, windows = chunk // n_windows, chunk % n_windows
        hidden = in_row[windows // len(cols), :, None] & in_col[windows % len(cols), None, :]
        occluded = torch.where(hidden[:, None], reference[examples], batch[examples])
        scores[chunk], _ = score(model, occluded, select(target, examples), method)
    return scores.view(n, n_windows)


def _incremental_scores(model, batch, reference, target, route, batch_size, progress, method):
    """f of every occluded image ``[N, windows]``, recomputed only where each window reaches."""
    chunks = math.ceil(len(route.rows) * len(route.cols) / batch_size)
    show = progress if progress is not None else len(batch) * chunks > SHOW_PROGRESS_ABOVE
    with tqdm(total=len(batch) * chunks, desc=method, disable=not show, leave=False) as bar:
        return torch.stack(
            [
                _incremental.occluded_scores(route, image, ref, int(c), batch_size, bar)
                for image, ref, c in zip(batch, reference, target)
            ]
        )


def _spread(drops: torch.Tensor, route, height: int, width: int) -> torch.Tensor:
    """Each pixel's mean drop over the windows that cover it: ``drops`` ``[N, R, S]`` (window
    at row position r, column position s) to maps ``[N, H, W]``."""
    rows = torch.tensor(route.rows, device=drops.device)
    cols = torch.tensor(route.cols, device=drops.device)
    in_row = _covers(rows, height, route.window).to(drops.dtype)  # [R, H]
    in_col = _covers(cols, width, route.window).to(drops.dtype)  # [S, W]
    total = in_row.T @ drops @ in_col  # sum over the windows covering (i, j)
    counts = in_row.sum(0)[:, None] * in_col.sum(0)[None, :]
    return total / counts


def spread_drops(drops: torch.Tensor, plan, height: int, width: int) -> torch.Tensor:
    """The last step of ``occlusion``: each pixel's mean drop over the windows that cover it,
    from the drops ``[N, R, S]`` of the windows of ``plan`` (``occlusion_plan``; window at row
    position r, column position s) to maps ``[N, H, W]``. For callers that compute the drops of
    many images with one plan (``incremental.occluded_scores``)."""
    return _spread(drops, plan, height, width)


def _covers(starts: torch.Tensor, side: int, window: int) -> torch.Tensor:
    """``[len(starts), side]`` bool: the window starting at ``starts[k]`` covers pixel ``i``."""
    pixels = torch.arange(side, device=starts.device)
    return (pixels >= starts[:, None]) & (pixels < starts[:, None] + window)


@threads.under_policy
@answer_calls.recorded
def single_feature(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    baseline=0.0,
    batch_size: int = 256,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""Single-feature perturbation: the drop of the score when one input feature is removed.

    .. math:: A_i = f(x) - f(x_{i \leftarrow x'_i})

    where :math:`x_{i \leftarrow x'_i}` is x with feature i (one element of the example) set
    to the baseline. Two passes per feature, as on the slide; on the saturating toy at (1, 1)
    it gives (0, 0): removing either input alone changes nothing.

    Args:
        model: the network, left as it came.
        inputs: a batch ``[N, ...]`` or one example; at most 100,000 features per example
            (for images use ``occlusion``, which hides squares instead of single values).
        target: ``None`` (the predicted class of the unperturbed input), a class index, one
            per example, or a ``targets.Neuron``.
        baseline: the value a removed feature takes: a number, one example or one per example.
        batch_size: perturbed copies per forward pass.
        progress: show a progress bar; ``None`` shows one when there are more than 20 passes.

    Returns:
        the shape of ``inputs``, on the inputs' device.
    """
    method = "single_feature"
    batch, single = prepare(model, inputs, method)
    check_positive_int(batch_size, "batch_size", method)
    n = batch.shape[0]
    features = math.prod(batch.shape[1:])
    if features > MAX_FEATURES:
        raise ValueError(
            f"{method}: each example has {features:,} features (shape "
            f"{tuple(batch.shape[1:])}), which would take {features:,} forward passes per "
            f"example; this method is meant for small inputs (at most {MAX_FEATURES:,}). "
            "For images use perturbation.occlusion, which hides a window of pixels at a time."
        )
    reference = baseline_batch(baseline, batch, method).expand_as(batch).reshape(n, features)
    flat = batch.reshape(n, features)

    chunks = torch.arange(n * features, device=batch.device).split(batch_size)
    show = progress if progress is not None else len(chunks) > SHOW_PROGRESS_ABOVE
    drops = torch.empty(n * features, dtype=batch.dtype, device=batch.device)
    with explaining(model), torch.no_grad():
        f_x, target = fix_target(model, batch, target, method)
        for chunk in tqdm(chunks, desc=method, disable=not show, leave=False):
            examples, feature = chunk // features, chunk % features
            perturbed = flat[examples].clone()
            rows = torch.arange(len(chunk), device=batch.device)
            perturbed[rows, feature] = reference[examples, feature]
            perturbed = perturbed.view(len(chunk), *batch.shape[1:])
            f_perturbed, _ = score(model, perturbed, select(target, examples), method)
            drops[chunk] = f_x[examples] - f_perturbed
    return finish(drops.view(batch.shape), inputs, single)


from .prediction_difference import prediction_difference  # noqa: E402, F401  (Zintgraf et al. 2017)
