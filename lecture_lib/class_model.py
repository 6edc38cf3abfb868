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
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import gaussian_blur
from .targets import Neuron, explaining, model_device, score, target_indices

OBJECTIVES: tuple[str, ...] = ("score", "softmax", "log_softmax")

GREY = 0.5
"""The image the ascent starts from and the L2 term measures from (the mean image)."""

NOISE = 0.02
"""Standard deviation of the seeded noise added to the grey start image."""


def visualize(
    model: nn.Module,
    target: int | Neuron,
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

    Starts from mid-grey plus small seeded noise; each step takes an Adam step on the image
    alone (the model's weights are never touched) and clamps it to [0, 1]. The defaults
    (Simonyan et al.'s score :math:`S_c`, 100 steps, lr 0.05, :math:`\lambda = 10^{-3}`,
    jitter 4, a light blur every 4 steps) give every class of the shipped ShapesNet an image
    that the network assigns to that class with probability above 0.99.

    Args:
        model: the classifier, left as it came.
        target: the class index c (or a ``targets.Neuron``, to find an image that drives one
            channel of a layer instead; only with ``objective="score"``).
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
        callback: called after each step with ``(step, image, scores[:step])`` (``step``
            counts from 1; ``image`` is the optimised image, to be copied, not changed), to
            watch the ascent as it goes. The first ``k`` steps of a longer run are the same
            computation as a run of ``k`` steps.

    Returns:
        ``(image, scores)``: the image ``[channels, size, size]`` in [0, 1] on the CPU, and
        ``scores`` ``[steps]``, the target's score :math:`S_c` of the (unshifted) image after
        each step, so ``scores[-1]`` is the score of the returned image.
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
    target = _one_target(target, method)
    device = torch.device(device) if device is not None else model_device(model)

    generator = torch.Generator().manual_seed(seed)
    start = GREY + NOISE * torch.randn(channels, size, size, generator=generator)
    image = start.clamp(0, 1).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    scores = torch.empty(steps)
    with explaining(model):  # on one thread when the machine is busy (lecture_lib.threads)
        _check_target(model, image, target, method)
        show = progress if progress is not None else steps > 1000
        for step in tqdm(range(steps), desc=method, disable=not show):
            shifted = _roll(image, jitter, generator)
            objective_value = _objective(model, shifted, target, objective)
            penalty = l2 * (image - GREY).pow(2).sum()
            (grad,) = torch.autograd.grad(-(objective_value - penalty), image)
            image.grad = grad
            optimizer.step()
            with torch.no_grad():
                if blur_every and (step + 1) % blur_every == 0:
                    image.copy_(_blur(image, blur_sigma))
                image.clamp_(0, 1)
                scores[step] = score(model, image[None], target, method)[0][0]
            if callback is not None:
                callback(step + 1, image.detach(), scores[: step + 1])
    return image.detach().cpu(), scores


def _one_target(target, method: str) -> int | Neuron:
    """One class index as a plain int (a numpy or 0-d torch integer is fine), or a Neuron."""
    if isinstance(target, Neuron):
        return target
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = target.item()
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(
            f"{method}: target must be one class index (an int) or a Neuron, got {target!r}. "
            "The class model is one image for one class; call visualize once per class."
        )
    return int(target)


def _check_int(value, name: str, method: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{method}: {name} must be an int >= {low}, got {name}={value!r}.")


def _check_target(model: nn.Module, image: torch.Tensor, target, method: str) -> None:
    """One forward pass: does the model accept the image, and is the target in range?"""
    with torch.no_grad():
        try:
            logits = model(image[None])
        except RuntimeError as error:
            raise ValueError(
                f"{method}: the model does not accept an image of shape {tuple(image.shape)} "
                f"({error}); set size= and channels= to what the model expects."
            ) from error
        if isinstance(target, Neuron):
            score(model, image[None], target, method)  # checks the layer and the channel
        else:
            target_indices(target, logits, method)


def _objective(model: nn.Module, image: torch.Tensor, target, objective: str) -> torch.Tensor:
    """The quantity the ascent maximises: :math:`S_c`, :math:`P_c` or :math:`\\log P_c`."""
    f, logits = score(model, image[None], target, "visualize")
    if objective == "score":
        return f[0]
    log_p = logits[0].log_softmax(dim=0)[target]
    return log_p if objective == "log_softmax" else log_p.exp()


def _roll(image: torch.Tensor, jitter: int, generator: torch.Generator) -> torch.Tensor:
    """The image shifted by a random whole number of pixels in ``-jitter..jitter`` (wrapping)."""
    if jitter == 0:
        return image
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return torch.roll(image, shifts=(dy, dx), dims=(1, 2))


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of standard deviation ``sigma`` pixels (``data.gaussian_blur``)."""
    return gaussian_blur(image[None], sigma)[0] if sigma > 0 else image
