r"""Class model visualization (Simonyan et al. 2013; lecture, "Gradients: class saliency map").

What is the model of a class? Generate an image that is representative of class c in terms of
the network's class scoring model:

.. math:: I^* = \arg\max_I\ S_c(I) - \lambda \|I - \bar I\|_2^2

where :math:`S_c(I)` is the *unnormalised* class score (the logit). It works like training,
but the optimization runs over the input image I, not over the weights. Simonyan et al. measure
I from the mean image :math:`\bar I` of the training set; ShapesNet's inputs live in [0, 1], so
here :math:`\bar I` is mid-grey (0.5 everywhere).

The lecture explains why Simonyan et al. maximise the score and not the posterior
:math:`P_c = \exp S_c / \sum_{c'} \exp S_{c'}`: the posterior "can be achieved by minimizing
the scores of other classes", so it does not concentrate on the class of interest.
``visualize`` maximises the score by default (``objective="score"``, :math:`S_c`) and offers
the posterior for comparison, ``"softmax"`` (:math:`P_c`, whose gradient vanishes once
:math:`P_c` is near 1) and ``"log_softmax"`` (:math:`\log P_c = S_c - \log \sum_{c'} \exp S_{c'}`):
their images stay faint, because lowering the other scores is enough.

On the shipped ShapesNet the score ascent reaches every class: each class model is classified
as its class with probability above 0.99 (tests/test_class_model.py). That needed a model
whose class scores stay specific to their class: trained without weight decay and label
smoothing, the ascent for *square* raised :math:`S_{circle}` faster than :math:`S_{square}`
and ended on a circle (see ``train``).

``feature_visualization`` asks the same question of one channel or one neuron inside the
network (Olah et al. 2017), with random transformations and a Fourier parameterization that
keep the image readable; ``activations.top_patches`` answers it from data instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import answer_calls, precision, threads
from .data import gaussian_blur
from .targets import (
    Neuron,
    explaining,
    get_layer,
    keep_output,
    model_device,
    model_dtype,
    score,
    target_indices,
    with_gradients,
)

OBJECTIVES: tuple[str, ...] = ("score", "softmax", "log_softmax")

F64 = torch.float64

GREY = 0.5
"""The image the ascent starts from and the L2 term measures from (the mean image)."""

NOISE = 0.02
"""Standard deviation of the seeded noise added to the grey start image."""


@threads.under_policy
@with_gradients  # also under torch.no_grad() or torch.inference_mode()
@answer_calls.recorded
def visualize(
    model: nn.Module,
    target: int | Sequence[int] | Neuron,
    *,
    steps: int = 100,
    l2: float = 1e-3,
    lr: float = 0.05,
    seed: int = 0,
    objective: str = "score",
    jitter: int = 4,
    blur_every: int = 4,
    blur_sigma: float = 0.5,
    size: int = 64,
    channels: int = 3,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The class model of ``target``: gradient ascent on the image I for

    .. math:: O_c(I) - \lambda \|I - 0.5\|_2^2, \qquad
              O_c = S_c \ (\text{"score"}),\ \log P_c \ (\text{"log_softmax"})
              \text{ or } P_c \ (\text{"softmax"})

    Several classes at once (``target`` a list of class indices) run as one batch, for far fewer
    passes through the model: each image takes the steps a call for its class alone would take
    (the same start, jitter and blur, one Adam state per pixel). In float64 the two agree to
    rounding; in float32 a batch rounds differently from one image, and Adam, which divides each
    gradient by its own running size, carries that into the images (scores differ by a few
    tenths after 100 steps).

    Starts from mid-grey plus small seeded noise; each step takes an Adam step on the image
    alone (the model's weights are never touched) and clamps it to [0, 1]. The defaults
    (Simonyan et al.'s score :math:`S_c`, 100 steps, lr 0.05, :math:`\lambda = 10^{-3}`,
    jitter 4, a light blur every 4 steps) give every class of the shipped ShapesNet an image
    that the network assigns to that class with probability above 0.99.

    Args:
        model: the classifier, left as it came.
        target: the class index c, a list of class indices (one image each), or a
            ``targets.Neuron``, to find an image that drives one channel of a layer instead
            (only with ``objective="score"``).
        steps: the number of ascent steps.
        l2: :math:`\lambda`, the weight of the L2 penalty :math:`\|I - 0.5\|_2^2`.
        lr: the Adam learning rate (image values per step, roughly).
        seed: seeds the start noise and the jitter (the global random state is not used).
        objective: ``"score"`` maximises the logit :math:`S_c` (Simonyan et al.),
            ``"log_softmax"`` :math:`\log P_c = S_c - \log\sum_{c'} \exp S_{c'}`,
            ``"softmax"`` the posterior :math:`P_c`.
        jitter: shift the image by a random number of pixels in ``-jitter..jitter`` (rows and
            columns, wrapping around) before each step, so the image cannot rely on one exact
            pixel pattern; 0 turns it off.
        blur_every: every this many steps blur the image with a Gaussian of ``blur_sigma``
            pixels, which suppresses high-frequency noise; 0 turns it off.
        blur_sigma: the Gaussian's standard deviation in pixels.
        size, channels: the image is ``[channels, size, size]`` (ShapesNet: 3 x 64 x 64).
        device: where to optimise (default: the model's device).
        progress: show a progress bar; ``None`` shows one only for more than 1000 steps.
        callback: called after each step with ``(step, image, scores[..., :step])`` (``step``
            counts from 1; ``image`` is the optimised image, to be copied, not changed), to
            watch the ascent as it goes. The first ``k`` steps of a longer run are the same
            computation as a run of ``k`` steps.

    Returns:
        ``(image, scores)``: the image ``[channels, size, size]`` in [0, 1] on the CPU, and
        ``scores`` ``[steps]``, the target's score :math:`S_c` of the (unshifted) image after
        each step, so ``scores[-1]`` is the score of the returned image. For a list of ``K``
        classes: ``images`` ``[K, channels, size, size]`` and ``scores`` ``[K, steps]``.
    """
    method = "visualize"
    _check_int(steps, "steps", method, low=1)
    _check_int(seed, "seed", method, low=0)
    _check_int(jitter, "jitter", method, low=0)
    _check_int(blur_every, "blur_every", method, low=0)
    _check_int(size, "size", method, low=1)
    _check_int(channels, "channels", method, low=1)
    for value, name in ((l2, "l2"), (lr, "lr"), (blur_sigma, "blur_sigma")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{method}: {name} must be a number >= 0, got {name}={value!r}.")
    if lr <= 0:
        raise ValueError(f"{method}: lr must be positive, got lr={lr!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(
            f"{method}: objective must be one of {', '.join(map(repr, OBJECTIVES))}, "
            f"got objective={objective!r}."
        )
    if isinstance(target, Neuron) and objective != "score":
        raise ValueError(
            f"{method}: a Neuron target has no softmax; use objective='score' with a Neuron."
        )
    target, single = _targets(target, method)
    device = torch.device(device) if device is not None else model_device(model)

    generator = torch.Generator().manual_seed(seed)
    # float64 draws: PyTorch draws float32 normals with the processor's vector unit, whose
    # rounding differs from one processor to another (lecture_lib.precision)
    start = GREY + NOISE * torch.randn(channels, size, size, generator=generator, dtype=F64)
    count = 1 if isinstance(target, Neuron) else len(target)
    dtype = model_dtype(model, torch.float32)  # the dtype of the returned image
    scores = torch.empty(count, steps)
    # on one thread when the machine is busy (lecture_lib.threads); in float64 (precision)
    with explaining(model), precision.float64(model) as exact:
        images = start.clamp(0, 1).repeat(count, 1, 1, 1).to(device, exact).requires_grad_(True)
        optimizer = torch.optim.Adam([images], lr=lr)  # elementwise: one state per pixel
        _check_target(model, images, target, method)
        show = progress if progress is not None else steps > 1000
        for step in tqdm(range(steps), desc=method, disable=not show):
            shifted = _roll(images, jitter, generator)
            objective_value = _objective(model, shifted, target, objective)
            penalty = l2 * (images - GREY).pow(2).sum()  # each image's term has its own pixels
            (grad,) = torch.autograd.grad(-(objective_value - penalty), images)
            images.grad = grad
            optimizer.step()
            with torch.no_grad():
                if blur_every and (step + 1) % blur_every == 0:
                    images.copy_(_blur(images, blur_sigma))
                images.clamp_(0, 1)
                scores[:, step] = score(model, images, target, method)[0]
            if callback is not None:
                shown = images.detach().to(dtype)
                shown = shown[0] if single else shown
                callback(
                    step + 1, shown, scores[0, : step + 1] if single else scores[:, : step + 1]
                )
    images = images.detach().to("cpu", dtype)
    return (images[0], scores[0]) if single else (images, scores)


def _targets(target, method: str) -> tuple[torch.Tensor | Neuron, bool]:
    """The class indices as int64 ``[K]`` (or the Neuron), and whether one target was given
    (an int; a numpy or 0-d torch integer is fine) rather than a list or 1-d tensor of them."""
    if isinstance(target, Neuron):
        return target, True
    single = not isinstance(target, (list, tuple, range, torch.Tensor, np.ndarray)) or (
        getattr(target, "ndim", 1) == 0
    )
    values = [target] if single else list(target)
    if not values:
        raise ValueError(f"{method}: target is an empty list; give at least one class index.")
    return torch.tensor([_class_index(v, target, method) for v in values]), single


def _class_index(value, target, method: str) -> int:
    """One class index of ``target`` as a plain int."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{method}: target must be a class index (an int), a list of class indices (one "
            f"image each) or a Neuron, got {target!r}."
        )
    return int(value)


def _one_target(target, method: str) -> int | Neuron:
    """One class index as a plain int (a numpy or 0-d torch integer is fine), or a Neuron."""
    return target if isinstance(target, Neuron) else _class_index(target, target, method)


def _check_int(value, name: str, method: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{method}: {name} must be an int >= {low}, got {name}={value!r}.")


def _check_target(model: nn.Module, images: torch.Tensor, target, method: str) -> None:
    """One forward pass: does the model accept the images, and are the targets in range?"""
    image = images[0]
    with torch.no_grad():
        try:
            logits = model(images)
        except RuntimeError as error:
            raise ValueError(
                f"{method}: the model does not accept an image of shape {tuple(image.shape)} "
                f"({error}); set size= and channels= to what the model expects."
            ) from error
        if isinstance(target, Neuron):
            score(model, images, target, method)  # checks the layer and the channel
        else:
            target_indices(target, logits, method)


def _objective(model: nn.Module, images: torch.Tensor, target, objective: str) -> torch.Tensor:
    """The quantity the ascent maximises, :math:`S_c`, :math:`P_c` or :math:`\\log P_c`, summed
    over the images (each image's gradient is that of its own term)."""
    f, logits = score(model, images, target, "visualize")
    if objective == "score":
        return f.sum()
    log_p = logits.log_softmax(dim=1).gather(1, target[:, None])
    return (log_p if objective == "log_softmax" else log_p.exp()).sum()


def _roll(image: torch.Tensor, jitter: int, generator: torch.Generator) -> torch.Tensor:
    """The image shifted by a random whole number of pixels in ``-jitter..jitter`` (wrapping)."""
    if jitter == 0:
        return image
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return torch.roll(image, shifts=(dy, dx), dims=(-2, -1))


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of standard deviation ``sigma`` pixels (``data.gaussian_blur``)."""
    return gaussian_blur(images, sigma) if sigma > 0 else images


# --- feature visualization: what does one channel or neuron respond to? ----------------------
#
# Olah, Mordvintsev and Schubert, "Feature visualization", Distill 2017: the same ascent as the
# class model, for a channel or a neuron, with two changes that keep the image free of the
# high-frequency patterns that a plain pixel ascent finds:
#   - transformation robustness: the image is jittered, scaled and rotated at random before each
#     step, so it must work wherever and however large the feature appears;
#   - a decorrelated parameterization: the optimizer moves Fourier coefficients scaled by 1/f
#     (every frequency gets a fair share of each step) and decorrelated colours, and a sigmoid
#     maps the result into [0, 1].

PARAMETERIZATIONS: tuple[str, ...] = ("fourier", "pixel")


@threads.under_policy
@with_gradients  # also under torch.no_grad() or torch.inference_mode()
def feature_visualization(
    model: nn.Module,
    target: int | Neuron | list,
    *,
    steps: int = 64,
    lr: float = 0.1,
    seed: int = 0,
    parameterization: str = "fourier",
    decay: float = 1.0,
    colour: torch.Tensor | None = None,
    jitter: float = 4.0,
    scale: float = 0.1,
    rotate: float = 10.0,
    size: int = 64,
    channels: int = 3,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Feature visualization (Olah et al. 2017): the image that drives a channel, a neuron or a
    class the most, :math:`I^* = \arg\max_I f(T(I))` over random transformations T.

    ``target`` says what f is:

    - ``Neuron(layer, c, reduce="sum")``: the **channel**, its activation summed over all
      positions (Olah et al.'s channel objective, the mean up to a constant);
    - ``Neuron(layer, c)`` (``reduce="max"``): one **neuron**, the channel's strongest unit,
      wherever it is (the unit Zeiler & Fergus project back);
    - a class index c: the class score :math:`S_c`;
    - a list of these: one image for each, optimised together in one batch.

    The image is :math:`I = \sigma(C\, x)` with :math:`\sigma` the sigmoid, C the colour matrix
    (``colour``, e.g. ``colour_correlation(images)``; None: no colour decorrelation), and x the
    pixels themselves (``parameterization="pixel"``) or, by default, the inverse Fourier
    transform of coefficients scaled by :math:`1/f^{\text{decay}}` (``"fourier"``). Before each
    Adam step on x the image is shifted by up to ``jitter`` pixels, scaled by a factor in
    :math:`[1 - \text{scale}, 1 + \text{scale}]` and rotated by up to ``rotate`` degrees, all
    drawn at random (bilinear, reflected at the border); 0 turns each off.

    Returns:
        ``(image, scores)``: the image ``[channels, size, size]`` in [0, 1] and f of the
        untransformed image after each step, ``[steps]``; for a list of k targets ``[k, channels,
        size, size]`` and ``[steps, k]``. The model is left as it came; ``seed`` fixes the start
        and the transformations (the global random state is not used).
    """
    method = "feature_visualization"
    _check_int(steps, "steps", method, low=1)
    _check_int(seed, "seed", method, low=0)
    _check_int(size, "size", method, low=1)
    _check_int(channels, "channels", method, low=1)
    for value, name in ((lr, "lr"), (decay, "decay"), (jitter, "jitter"), (scale, "scale")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{method}: {name} must be a number >= 0, got {name}={value!r}.")
    if isinstance(rotate, bool) or not isinstance(rotate, (int, float)) or not rotate >= 0:
        raise ValueError(f"{method}: rotate must be a number of degrees >= 0, got {rotate!r}.")
    if lr <= 0:
        raise ValueError(f"{method}: lr must be positive, got lr={lr!r}.")
    if scale >= 1:
        raise ValueError(
            f"{method}: scale must be below 1 (a factor 1 - scale > 0), got {scale!r}."
        )
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"{method}: parameterization must be one of "
            f"{', '.join(map(repr, PARAMETERIZATIONS))}, got {parameterization!r}."
        )
    many = isinstance(target, (list, tuple))
    targets = [_one_target(t, method) for t in (target if many else [target])]
    if not targets:
        raise ValueError(f"{method}: the list of targets is empty.")
    device = torch.device(device) if device is not None else model_device(model)
    colour = _colour_matrix(colour, channels, method)

    generator = torch.Generator().manual_seed(seed)
    shape = (len(targets), channels, size, size)
    if parameterization == "fourier":  # float64 draws, as in visualize
        start = 0.01 * torch.randn(*shape[:3], size // 2 + 1, 2, generator=generator, dtype=F64)
    else:
        start = 0.01 * torch.randn(shape, generator=generator, dtype=F64)
    dtype = model_dtype(model, torch.float32)  # the dtype of the returned images
    scores = torch.empty(steps, len(targets))
    # one thread on a busy machine (lecture_lib.threads); in float64 (lecture_lib.precision)
    with explaining(model), precision.float64(model) as exact:
        x = start.to(device, exact).requires_grad_(True)
        weights = _spectrum_weights(size, decay).to(device, exact)
        mixing = colour.to(device, exact)

        def image_of(x: torch.Tensor) -> torch.Tensor:
            return _to_image(x, parameterization, weights, mixing, size)

        optimizer = torch.optim.Adam([x], lr=lr)
        with torch.no_grad():
            _check_activities(model, image_of(x), targets, method)
        show = progress if progress is not None else steps > 1000
        for step in tqdm(range(steps), desc=method, disable=not show):
            moved = _transform(image_of(x), jitter, scale, rotate, generator)
            f = _activities(model, moved, targets, method)
            (grad,) = torch.autograd.grad(-f.sum(), x)
            x.grad = grad
            optimizer.step()
            with torch.no_grad():
                scores[step] = _activities(model, image_of(x), targets, method).cpu()
        with torch.no_grad():
            images = image_of(x).to("cpu", dtype)
    return (images, scores) if many else (images[0], scores[:, 0])


@threads.under_policy
def colour_correlation(images: torch.Tensor) -> torch.Tensor:
    r"""The colour matrix of Olah et al.'s decorrelated parameterization, from a data set's pixels:
    the square root :math:`\Sigma^{1/2}` of the covariance of the colour channels (over every
    pixel of ``images`` ``[N, C, H, W]``), divided by its largest column norm. Independent
    values x become colours correlated as in the data, :math:`C x`."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(
            "colour_correlation: images must be a tensor [N, C, H, W], got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}."
        )
    pixels = images.detach().double().transpose(0, 1).flatten(1)  # [C, N*H*W]
    centred = pixels - pixels.mean(dim=1, keepdim=True)
    covariance = centred @ centred.T / centred.shape[1]
    values, vectors = torch.linalg.eigh(covariance)
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    return (root / root.norm(dim=0).max()).float()


def _colour_matrix(colour, channels: int, method: str) -> torch.Tensor:
    if colour is None:
        return torch.eye(channels)
    matrix = torch.as_tensor(colour, dtype=torch.float32)
    if tuple(matrix.shape) != (channels, channels) or not torch.isfinite(matrix).all():
        raise ValueError(
            f"{method}: colour must be a finite {channels} x {channels} matrix (e.g. "
            f"colour_correlation(images)), got shape {tuple(matrix.shape)}."
        )
    return matrix


def _spectrum_weights(size: int, decay: float) -> torch.Tensor:
    r"""``[size, size // 2 + 1]``: :math:`1 / \max(f, 1/\text{size})^{\text{decay}}` for each
    coefficient of a real 2-D Fourier transform, f its frequency in cycles per pixel."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    frequency = (fy.square() + fx.square()).sqrt()
    return 1.0 / frequency.clamp(min=1.0 / size) ** decay


def _to_image(x, parameterization, weights, mixing, size) -> torch.Tensor:
    """The images ``[k, C, size, size]`` in (0, 1) that the parameters x stand for."""
    if parameterization == "fourier":
        spectrum = torch.view_as_complex(x) * weights
        linear = torch.fft.irfft2(spectrum, s=(size, size), norm="ortho") / 4
    else:
        linear = x
    return torch.sigmoid(torch.einsum("ij,kjhw->kihw", mixing, linear))


def _transform(images, jitter, scale, rotate, generator) -> torch.Tensor:
    """Each image shifted, scaled and rotated at random (one affine map each, bilinear)."""
    if jitter == 0 and scale == 0 and rotate == 0:
        return images
    k, _, height, width = images.shape
    # uniform in [-1, 1]; the angles' cosines in the images' dtype (float64 in an ascent)
    u = (torch.rand(k, 4, generator=generator) * 2 - 1).to(images.dtype)
    angle = torch.deg2rad(u[:, 0] * rotate)
    zoom = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift_x, shift_y = u[:, 2] * jitter * 2 / width, u[:, 3] * jitter * 2 / height
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    ).to(images)
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _activities(model: nn.Module, images: torch.Tensor, targets: list, method: str) -> torch.Tensor:
    """f for each image and its own target, ``[k]``, from one forward pass."""
    layers = {t.layer for t in targets if isinstance(t, Neuron)}
    captured: dict[str, list[torch.Tensor]] = {}
    handles = []

    def keep(name: str):
        def hook(_module, _inputs, output):  # the layer's own output, kept from in-place layers
            return keep_output(output, captured.setdefault(name, []))

        return hook

    try:
        for name in layers:
            handles.append(get_layer(model, name, method).register_forward_hook(keep(name)))
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    values = []
    for i, t in enumerate(targets):
        if isinstance(t, Neuron):
            unit = captured[t.layer][-1][i, t.channel].reshape(-1)
            values.append(unit.amax() if t.reduce == "max" else unit.sum())
        else:
            values.append(logits[i, t])
    return torch.stack(values)


def _check_activities(model: nn.Module, images: torch.Tensor, targets: list, method: str) -> None:
    """Does the model accept the images, and is every target a valid class, layer and channel?"""
    for i, t in enumerate(targets):
        try:
            f, logits = score(model, images[i : i + 1], t, method)
        except RuntimeError as error:
            raise ValueError(
                f"{method}: the model does not accept an image of shape "
                f"{tuple(images.shape[1:])} ({error}); set size= and channels= to what the "
                "model expects."
            ) from error
        if not isinstance(t, Neuron):
            target_indices(t, logits, method)
