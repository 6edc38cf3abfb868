r"""Prediction difference analysis (Zintgraf, Cohen, Adel & Welling, ICLR 2017).

Occlusion asks how the score changes when a window is painted grey: an image the network never
saw. Prediction difference analysis asks what the class would be if the window were *unknown*,
and marginalizes the window over plausible values :math:`\tilde x_w`:

.. math:: p(c \mid x_{\setminus w}) = \mathbb{E}_{\tilde x_w}\big[\, p(c \mid x \text{ with }
          x_w \leftarrow \tilde x_w) \big]

The relevance of a window :math:`w` (``window`` x ``window`` pixels, all colour channels) is the
*weight of evidence*, in bits:

.. math:: WE_w = \log_2 \operatorname{odds} p(c \mid x) - \log_2 \operatorname{odds}
          p(c \mid x_{\setminus w}), \qquad \operatorname{odds}(p) = \frac{p}{1 - p}

with the paper's Laplace correction :math:`p \to (pN + 1)/(N + K)` for a training set of
:math:`N` images and :math:`K` classes, so that a probability of 0 or 1 has finite odds.
Overlapping windows (the paper's multivariate analysis) give each pixel the mean
:math:`WE_w` of the windows that hold it. Positive: the window was evidence *for* the class;
negative: *against* it.

Where the plausible values come from (``sampler``):

``"marginal"``
    the same window of other images (``data``): :math:`\tilde x_w \sim p(x_w)`.
``"conditional"``
    a multivariate Gaussian over patches of :math:`(k + 2l)^2` pixels (window :math:`k`,
    ``padding`` :math:`l`), fitted on ``data`` (``patch_gaussian``) and conditioned on the frame
    of :math:`l` pixels around the window in the explained image (the paper's section 3.2):
    :math:`\tilde x_w \sim p(x_w \mid x_{\text{frame}})`. Neighbouring pixels are strongly
    correlated, so a sample continues the image around it instead of pasting in another
    image's content.

A ``targets.Neuron`` target explains a hidden unit: :math:`f(x) - \mathbb{E}[f(\tilde x)]`, the
difference of its activation instead of log odds, as the paper does for hidden layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, threads
from . import incremental as _incremental
from .regions import check_positive_int, check_windows, window_positions
from .targets import (
    Neuron,
    as_tensor,
    explaining,
    finish,
    fix_target,
    pass_size,
    prepare,
    score,
)

SAMPLERS = ("marginal", "conditional")

SHOW_PROGRESS_ABOVE = 20
"""A progress bar appears when a method needs more forward batches than this."""

JITTER = 1e-4
"""Added to the diagonal of a fitted patch covariance (in squared pixel values, where a pixel
lies in [0, 1]), so that a flat background, whose covariance is singular, can be conditioned on."""


@dataclass
class PatchGaussian:
    """A multivariate Gaussian over square patches of ``size`` x ``size`` pixels, all channels:
    ``mean`` ``[D]`` and ``cov`` ``[D, D]`` with ``D = channels * size * size``, in the order of
    ``torch.nn.functional.unfold`` (channel, then row, then column). ``images`` counts the
    images it was fitted on."""

    mean: torch.Tensor
    cov: torch.Tensor
    channels: int
    size: int
    images: int


@threads.under_policy
def patch_gaussian(data: torch.Tensor, size: int, stride: int = 1) -> PatchGaussian:
    r"""The mean and covariance of every ``size`` x ``size`` patch of ``data`` ``[M, C, H, W]``
    (all positions ``stride`` apart, all images), in float64, with ``JITTER`` on the diagonal:

    .. math:: \mu = \frac{1}{n} \sum_j p_j, \qquad
              \Sigma = \frac{1}{n} \sum_j (p_j - \mu)(p_j - \mu)^\top + \epsilon I
    """
    method = "patch_gaussian"
    data = _check_data(data, method)
    check_positive_int(size, "size", method)
    check_positive_int(stride, "stride", method)
    if size > min(data.shape[-2:]):
        raise ValueError(
            f"{method}: patches of {size} x {size} pixels do not fit in the data's images "
            f"({data.shape[-2]} x {data.shape[-1]}); use a smaller window or padding."
        )
    data = data.detach().cpu().to(torch.float32)
    dim = data.shape[1] * size * size
    # sums of the patches minus each channel's mean (small numbers, accurate in float32 products)
    shift = data.mean(dim=(0, 2, 3)).repeat_interleave(size * size)
    total = torch.zeros(dim, dtype=torch.float64)
    outer = torch.zeros(dim, dim, dtype=torch.float64)
    count = 0
    for chunk in data.split(8):
        patches = F.unfold(chunk, size, stride=stride).transpose(1, 2).reshape(-1, dim) - shift
        total += patches.sum(0, dtype=torch.float64)
        outer += (patches.T @ patches).double()
        count += len(patches)
    shift = shift.double()
    centred = total / count
    cov = outer / count - torch.outer(centred, centred)
    cov = (cov + cov.T) / 2 + JITTER * torch.eye(dim, dtype=torch.float64)
    return PatchGaussian(centred + shift, cov, data.shape[1], size, len(data))


@threads.under_policy
def condition(
    mean: torch.Tensor, cov: torch.Tensor, unknown: torch.Tensor, known_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The Gaussian of the ``unknown`` entries (a bool mask ``[D]``) given the others:

    .. math:: \mu_{u \mid k} = \mu_u + \Sigma_{uk} \Sigma_{kk}^{-1} (x_k - \mu_k), \qquad
              \Sigma_{u \mid k} = \Sigma_{uu} - \Sigma_{uk} \Sigma_{kk}^{-1} \Sigma_{ku}

    ``known_values`` is ``[..., D_k]`` (one row per case, in the order of the known entries);
    returns the conditional means ``[..., D_u]`` and the covariance ``[D_u, D_u]`` (the same
    for every case).
    """
    known = ~unknown
    s_kk = cov[known][:, known]
    s_uk = cov[unknown][:, known]
    gain = torch.linalg.solve(s_kk, s_uk.T).T  # Sigma_uk Sigma_kk^-1
    means = mean[unknown] + (known_values - mean[known]) @ gain.T
    cond_cov = cov[unknown][:, unknown] - gain @ s_uk.T
    return means, (cond_cov + cond_cov.T) / 2


@threads.under_policy
@answer_calls.recorded
def prediction_difference(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    window: int = 8,
    stride: int = 1,
    sampler: str = "conditional",
    data: torch.Tensor | PatchGaussian | None = None,
    samples: int | None = 10,
    padding: int = 2,
    laplace_n: int | None = 16000,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    incremental: bool | None = None,
) -> torch.Tensor:
    r"""Prediction difference analysis (Zintgraf et al. 2017): each pixel's mean weight of
    evidence (bits) over the windows that hold it, ``[N, H, W]``.

    .. math:: WE_w = \log_2 \operatorname{odds} p(c \mid x) - \log_2 \operatorname{odds}
              \tfrac{1}{S} \textstyle\sum_{s} p(c \mid x_{w \leftarrow \tilde x_w^{(s)}}),
              \qquad A_{ij} = \operatorname{mean}_{w \ni (i, j)} WE_w

    Args:
        model: the network (class scores ``[N, K]``, turned into probabilities by a softmax),
            left as it came.
        inputs: images ``[N, C, H, W]`` or one image ``[C, H, W]`` (never modified).
        target: ``None`` (each image's predicted class), a class index, one per image, or a
            ``targets.Neuron``: then :math:`f(x) - \frac1S \sum_s f(\tilde x^{(s)})` of its
            activity instead of the weight of evidence.
        window: the side of the square window in pixels.
        stride: the step between windows (at most ``window``); the paper's 1 costs the most.
        sampler: ``"marginal"`` (the same window of images of ``data``) or ``"conditional"``
            (a Gaussian over patches of ``data``, conditioned on the frame around the window).
        data: images ``[M, C, H, W]`` the values are drawn from, like the training set; for the
            conditional sampler also a ``PatchGaussian`` from ``patch_gaussian(data, window +
            2 * padding)``, fitted once and reused.
        samples: values drawn per window; ``None`` with the marginal sampler uses every image
            of ``data`` once (an exact mean, nothing random). Marginal samples are drawn
            without replacement.
        padding: the conditional sampler's frame, in pixels around the window (near the
            image's border the patch is shifted inside the image, so the frame is one-sided).
        laplace_n: N of the Laplace correction, the size of the training set (ShapesNet:
            16,000); ``None`` switches it off.
        seed: seeds the draws; the same arguments give the same map.
        batch_size: images per forward pass; ``None``: 256 windows when only the region a
            window reaches is recomputed (``lecture_lib.incremental``, as ``occlusion`` does),
            otherwise ``targets.pass_size`` images (about 40 shapes).
        progress: show a progress bar; ``None`` shows one when there are more than 20 passes.
        incremental: as for ``perturbation.occlusion``: ``None`` recomputes each layer only
            where a window reaches when the model allows it and that saves work, ``False``
            runs whole images, ``True`` insists (and says why when the model does not allow it).

    Returns:
        ``[N, H, W]`` (``[H, W]`` for one image), on the inputs' device.
    """
    method = "prediction_difference"
    if incremental not in (None, True, False):
        raise ValueError(f"{method}: incremental must be None, True or False, got {incremental!r}.")
    batch, single = prepare(model, inputs, method)
    n, channels, height, width = check_windows(batch, inputs, window, stride, method)
    options = _check_options(sampler, data, samples, padding, laplace_n, seed, batch_size, method)
    source = _sampler_source(sampler, data, batch, window, padding, samples, method)

    with explaining(model), torch.no_grad():
        f_x, target = fix_target(model, batch, target, method)
        route = _incremental.plan(model, batch.shape[1:], window, stride, target)
        if incremental and not route.possible:
            raise ValueError(
                f"{method}: incremental=True, but this model cannot be recomputed incrementally "
                f"{route.reason}. Use incremental=None to fall back to whole forward passes."
            )
        options["incremental"] = route.incremental if incremental is None else incremental
        if batch_size is None:
            batch_size = 256 if options["incremental"] else pass_size(batch)
        options["batch_size"] = batch_size
        draws = _Draws(sampler, source, batch, route, window, padding, samples, seed)
        passes = n * math.ceil(len(route.rows) * len(route.cols) * draws.count / batch_size)
        show = progress if progress is not None else passes > SHOW_PROGRESS_ABOVE
        maps = []
        with tqdm(total=passes, desc=method, disable=not show, leave=False) as bar:
            for k in range(n):
                evidence = _window_evidence(
                    model, batch, k, target, f_x, draws, route, options, bar, method
                )
                maps.append(_spread(evidence, route, height, width))
    return finish(torch.stack(maps).to(batch.dtype), inputs, single)


def forward_passes(image_shape, window: int, stride: int, samples: int) -> int:
    """Images run through the model for one image: one per window and sample, and the image
    itself."""
    height, width = image_shape[-2:]
    windows = len(window_positions(height, window, stride)) * len(
        window_positions(width, window, stride)
    )
    return windows * samples + 1


# --- checks -------------------------------------------------------------------------------------


def _check_data(data, method: str) -> torch.Tensor:
    if data is None:
        raise ValueError(
            f"{method}: needs data, images the window's plausible values are drawn from "
            "(like the training set), e.g. data=make_shapes(100, seed=1)[0]."
        )
    data = as_tensor(data, "data", method)
    if data.ndim != 4 or not data.is_floating_point():
        raise ValueError(
            f"{method}: data must be floating-point images [M, C, H, W], got a "
            f"{data.dtype} tensor of shape {tuple(data.shape)}."
        )
    return data


def _check_options(sampler, data, samples, padding, laplace_n, seed, batch_size, method: str):
    if sampler not in SAMPLERS:
        raise ValueError(f"{method}: sampler must be 'marginal' or 'conditional', got {sampler!r}.")
    if samples is None and sampler == "conditional":
        raise ValueError(
            f"{method}: samples=None (every image of data once) is for sampler='marginal'; "
            "the conditional sampler needs a number of samples, e.g. samples=10."
        )
    if samples is not None:
        check_positive_int(samples, "samples", method)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"{method}: padding must be an int >= 0, got padding={padding!r}.")
    if laplace_n is not None:
        check_positive_int(laplace_n, "laplace_n", method)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{method}: seed must be an int, got seed={seed!r}.")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size", method)
    return {"laplace_n": laplace_n, "batch_size": batch_size}


def _sampler_source(sampler, data, batch, window, padding, samples, method):
    """The images (marginal) or the fitted ``PatchGaussian`` (conditional) to draw from."""
    _, channels, height, width = batch.shape
    size = window + 2 * padding
    if sampler == "conditional" and isinstance(data, PatchGaussian):
        if (data.channels, data.size) != (channels, size):
            raise ValueError(
                f"{method}: the PatchGaussian covers {data.channels}-channel patches of "
                f"{data.size} x {data.size} pixels, but window={window} and padding={padding} "
                f"need {channels}-channel patches of {size} x {size}; fit it with "
                f"patch_gaussian(data, {size})."
            )
        source = data
    else:
        data = _check_data(data, method)
        if data.shape[1:] != batch.shape[1:]:
            raise ValueError(
                f"{method}: data must be images of the inputs' shape {tuple(batch.shape[1:])}, "
                f"got {tuple(data.shape[1:])}."
            )
        source = data.detach().to(batch.device, batch.dtype)
        if sampler == "marginal" and samples is not None and samples > len(data):
            raise ValueError(
                f"{method}: samples={samples} is more than the {len(data)} images of data "
                "(marginal samples are drawn without replacement); give fewer samples or more data."
            )
    if sampler == "conditional":
        if size > min(height, width):
            raise ValueError(
                f"{method}: window + 2 * padding = {size} pixels do not fit in the image "
                f"({height} x {width}); use a smaller window or padding."
            )
        if not isinstance(source, PatchGaussian):
            source = patch_gaussian(source, size)
    return source


# --- the draws ----------------------------------------------------------------------------------


class _Draws:
    """The plausible values of every window of one image at a time: ``patches(k, windows)``
    gives ``[len(windows) * count, C, window, window]``, ``count`` draws per window in a row."""

    def __init__(self, sampler, source, batch, route, window, padding, samples, seed):
        self.sampler, self.source, self.batch = sampler, source, batch
        self.rows, self.cols = torch.tensor(route.rows), torch.tensor(route.cols)
        self.window, self.padding, self.seed = window, padding, seed
        self.count = len(source) if samples is None else samples
        self.exact = samples is None
        self._conditionals: dict = {}

    def for_image(self, k: int):
        """The draws of image ``k``: a function from positions ``j`` in the list of (window,
        draw) pairs, pair ``j`` being draw ``j % count`` of window ``j // count``, to their values
        ``[len(j), C, window, window]``."""
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * k)
        if self.sampler == "marginal":
            return self._marginal(generator)
        values = self._conditional(self.batch[k], generator)
        return lambda j: values[j]

    def _marginal(self, generator):
        windows, m = len(self.rows) * len(self.cols), len(self.source)
        if self.exact:
            index = torch.arange(m).repeat(windows)
        else:
            index = torch.rand(windows, m, generator=generator).argsort(dim=1)[:, : self.count]
            index = index.flatten()
        rows, cols = _window_starts(self.rows, self.cols)
        patches = _patches(self.source, self.window)  # [M, C, k, k, R', S'] by start
        device = self.source.device

        def take(j: torch.Tensor) -> torch.Tensor:
            w = j // self.count
            return patches[index[j].to(device), ..., rows[w].to(device), cols[w].to(device)]

        return take

    def _conditional(self, image, generator) -> torch.Tensor:
        gauss, k, pad = self.source, self.window, self.padding
        size = k + 2 * pad
        _, height, width = image.shape
        rows, cols = _window_starts(self.rows, self.cols)
        # the patch around each window, shifted inside the image at the border
        top = (rows - pad).clamp(0, height - size)
        left = (cols - pad).clamp(0, width - size)
        frames = F.unfold(image[None].to(torch.float64), size)[0]  # [D, positions]
        frames = frames[:, top * (width - size + 1) + left].T  # [windows, D]
        out = torch.empty(len(rows), self.count, image.shape[0] * k * k, dtype=torch.float64)
        offsets = torch.stack([rows - top, cols - left], dim=1)
        noise = torch.randn(len(rows), self.count, out.shape[-1], generator=generator,
                            dtype=torch.float64)  # fmt: skip
        for offset in offsets.unique(dim=0):
            same = (offsets == offset).all(dim=1)
            unknown, gain, chol = self._conditional_at(tuple(offset.tolist()))
            means = (
                gauss.mean[unknown] + (frames[same][:, ~unknown] - gauss.mean[~unknown]) @ gain.T
            )
            out[same] = means[:, None, :] + noise[same] @ chol.T
        shape = (len(rows), self.count, image.shape[0], k, k)
        return out.view(-1, *shape[2:]).to(image.device, image.dtype)

    def _conditional_at(self, offset: tuple[int, int]):
        """For a window at ``offset`` inside its patch: the window's mask, the gain
        Sigma_uk Sigma_kk^-1 and the Cholesky factor of the conditional covariance."""
        if offset not in self._conditionals:
            gauss, k = self.source, self.window
            inside = torch.zeros(gauss.size, gauss.size, dtype=torch.bool)
            inside[offset[0] : offset[0] + k, offset[1] : offset[1] + k] = True
            unknown = inside.flatten().repeat(gauss.channels)
            known = ~unknown
            s_uk = gauss.cov[unknown][:, known]
            gain = torch.linalg.solve(gauss.cov[known][:, known], s_uk.T).T
            cond_cov = gauss.cov[unknown][:, unknown] - gain @ s_uk.T
            chol = torch.linalg.cholesky((cond_cov + cond_cov.T) / 2)
            self._conditionals[offset] = (unknown, gain, chol)
        return self._conditionals[offset]


def _window_starts(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first row and column of every window, window ``(r, s)`` at ``r * len(cols) + s``."""
    return rows.repeat_interleave(len(cols)), cols.repeat(len(rows))


def _patches(images: torch.Tensor, k: int) -> torch.Tensor:
    """Every ``k`` x ``k`` patch of ``images`` ``[M, C, H, W]`` as a view ``[M, C, k, k, R', S']``,
    the patch starting at ``(r, s)`` at ``[..., r, s]``."""
    return images.unfold(2, k, 1).unfold(3, k, 1).permute(0, 1, 4, 5, 2, 3)


# --- the evidence -------------------------------------------------------------------------------


def _window_evidence(model, batch, k, target, f_x, draws, route, options, bar, method):
    """``WE_w`` (or the Neuron's drop) of every window of image ``k``, ``[R, S]`` in float64."""
    image = batch[k]
    take = draws.for_image(k)
    windows, count = len(route.rows) * len(route.cols), draws.count
    rows, cols = _window_starts(draws.rows, draws.cols)
    which = torch.arange(windows).repeat_interleave(count)
    neuron = isinstance(target, Neuron)
    use_incremental = options["incremental"]
    if use_incremental:
        inputs = _incremental.unoccluded_inputs(route, image)
    values = []
    for chunk in torch.arange(windows * count).split(options["batch_size"]):
        if use_incremental:
            out = _incremental.replaced_logits(route, inputs, take(chunk), which[chunk])
        else:
            replaced = _replace(image, take(chunk), rows[which[chunk]], cols[which[chunk]])
            if neuron:
                out, _ = score(model, replaced, target, method)
            else:
                out = model(replaced)
                if out.ndim != 2:
                    raise ValueError(
                        f"{method}: the model must return class scores of shape [N, K], "
                        f"got {tuple(out.shape)}."
                    )
        values.append(out.to(torch.float64))
        bar.update()
    values = torch.cat(values)
    shape = (len(route.rows), len(route.cols))
    if neuron:
        return (f_x[k].double() - values.view(windows, count).mean(dim=1)).view(shape)
    with torch.no_grad():
        logits = model(image[None]).to(torch.float64)[0]
    c = int(target[k])
    p, q = _probabilities(logits[None], c)
    p_w, q_w = _probabilities(values, c)
    p_w, q_w = p_w.view(windows, count).mean(dim=1), q_w.view(windows, count).mean(dim=1)
    n_classes = logits.shape[-1]
    evidence = _log2_odds(p, q, options["laplace_n"], n_classes) - _log2_odds(
        p_w, q_w, options["laplace_n"], n_classes
    )
    return evidence.view(shape)


def _probabilities(logits: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``p(c)`` and ``1 - p(c)`` of a softmax in float64, the second as the sum of the other
    classes' probabilities (accurate when p(c) is close to 1)."""
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    others = torch.cat([probs[..., :c], probs[..., c + 1 :]], dim=-1).sum(dim=-1)
    return probs[..., c], others


def _log2_odds(p: torch.Tensor, q: torch.Tensor, n: int | None, k: int) -> torch.Tensor:
    r""":math:`\log_2 (p'/(1 - p'))` with :math:`p' = (pN + 1)/(N + K)` (``n`` None: p' = p)."""
    if n is not None:
        p, q = p * n + 1, q * n + (k - 1)  # the common denominator N + K cancels
    return torch.log2(p) - torch.log2(q)


def _replace(image, patches, rows, cols) -> torch.Tensor:
    """Copies of ``image`` ``[C, H, W]`` with window ``j`` at ``(rows[j], cols[j])`` replaced by
    ``patches[j]`` ``[C, k, k]``."""
    channels, height, width = image.shape
    k = patches.shape[-1]
    offsets = torch.arange(k, device=image.device)
    index = (rows[:, None, None] + offsets[:, None]) * width + cols[:, None, None] + offsets
    index = index.to(image.device).view(len(rows), 1, k * k).expand(-1, channels, -1)
    out = image.reshape(1, channels, height * width).repeat(len(rows), 1, 1)
    out.scatter_(2, index, patches.reshape(len(rows), channels, k * k))
    return out.view(len(rows), channels, height, width)


def _spread(evidence: torch.Tensor, route, height: int, width: int) -> torch.Tensor:
    """Each pixel's mean over the windows that hold it: ``[R, S]`` to ``[H, W]``."""
    pixels_h, pixels_w = torch.arange(height), torch.arange(width)
    rows, cols = torch.tensor(route.rows), torch.tensor(route.cols)
    window = route.window
    in_row = ((pixels_h >= rows[:, None]) & (pixels_h < rows[:, None] + window)).double()
    in_col = ((pixels_w >= cols[:, None]) & (pixels_w < cols[:, None] + window)).double()
    total = in_row.T @ evidence.cpu() @ in_col
    counts = in_row.sum(0)[:, None] * in_col.sum(0)[None, :]
    return (total / counts).to(evidence.device)
