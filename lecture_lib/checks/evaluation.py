"""Checks of Part 6, evaluating explanations: the pointing game, the deletion curve and the
Spearman rank correlation of two maps (the randomization test)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .. import evaluate
from ..data import make_shapes
from ..models import load_shapes_net
from .core import (
    Check,
    _array,
    _changes,
    _compare,
    _compare_lazily,
    _number,
    _untouched,
    observe,
)


def _pointing_case(seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps [N, H, W], masks [N, H, W])``: random maps in [0, 1) whose single maximum (1.5)
    lies on the object in some images and off it in the others (image 0 a hit, 1 a miss)."""
    n = 6 if seed is None else 8
    _, _, masks = make_shapes(n, seed=3 if seed is None else seed)
    generator = torch.Generator().manual_seed(seed or 0)
    maps = torch.rand(masks.shape, generator=generator)
    on_object = torch.rand(n, generator=generator) < 0.5
    on_object[0], on_object[1] = True, False
    for i in range(n):
        allowed = (masks[i] if on_object[i] else ~masks[i]).flatten().nonzero()[:, 0]
        pick = allowed[torch.randint(len(allowed), (1,), generator=generator)]
        maps[i].view(-1)[pick] = 1.5
    return maps, masks


def _run_pointing_game(fn: Callable, seed: int | None = None) -> dict:
    """``fn(maps, masks)`` returns one value per image, 1 where the map's strongest pixel lies on
    the object (a hit) and 0 where not; compared with ``evaluate.pointing_game(...,
    per_example=True)``. The maps hold values >= 0 with a single maximum each."""
    maps, masks = _pointing_case(seed)
    got = fn(maps.clone(), masks.clone())
    return {"got": observe(got)}


def _judge_pointing_game(observed, seed=None) -> str:
    maps, masks = _pointing_case(seed)
    n, h, w = maps.shape
    expected = evaluate.pointing_game(maps, masks, per_example=True)
    got = _array(observed["got"], "your pointing game")
    if got.shape in ((), (1,)) and abs(float(got.reshape(-1)[0]) - float(expected.mean())) < 1e-6:
        raise AssertionError(
            f"your pointing game returned one number, {_number(got.reshape(-1)[0])}, the share of "
            f"hits over the images; return one value per image ({n} values: 1 hit, 0 miss). The "
            "pointing game's score is their mean."
        )
    index = torch.arange(n)
    peak = maps.flatten(1).argmax(dim=1)
    top = int(maps.argmax())  # one maximum for the whole batch
    mistakes = {
        "the argmax of the mask instead of the map (every image a hit)": torch.ones(n),
        "the row and the column of the maximum swapped (divmod(index, W) gives (row, column))": (
            masks[index, peak % w, peak // w].float()
        ),
        "one maximum for the whole batch (the same pixel looked up in every image)": (
            masks[:, (top % (h * w)) // w, top % w].float()
        ),
        "the weakest pixel instead of the strongest (argmin)": masks.flatten(1)[
            index, maps.flatten(1).argmin(dim=1)
        ].float(),
    }
    _compare(
        got,
        expected,
        "pointing game",
        "hit_n = 1 if the map's strongest pixel, argmax over (i, j) of M^(n)_ij, lies on mask_n, "
        "else 0: one value per image (maps.flatten(1).argmax(1) finds each map's peak).",
        mistakes,
        lambda index: f"image {index[0]}",
    )
    return (
        f"pointing game: your hits match evaluate.pointing_game on {n} images "
        f"({int(expected.sum())} hits)."
    )


check_pointing_game = Check(
    _run_pointing_game, _judge_pointing_game, library=["lecture_lib.evaluate.pointing_game"]
)


def _deletion_cases(seed: int | None) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """``[(image [C, H, W], importance [H, W], target)]``: importance values all distinct (the
    order is unique); the first case ranks the object's pixels first, the second is random."""
    images, labels, masks = make_shapes(2, seed=5 if seed is None else seed)
    generator = torch.Generator().manual_seed(seed or 0)
    h, w = masks.shape[1:]
    cases = []
    for i in range(2):
        distinct = torch.randperm(h * w, generator=generator).view(h, w).float() / (h * w)
        importance = masks[i].float() + 0.5 * distinct if i == 0 else distinct + 0.1
        cases.append((images[i], importance, int(labels[i])))
    return cases


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 64:
        raise ValueError(f"check_deletion_curve: steps must be an int in 1..64, got {steps!r}.")


def _run_deletion_curve(fn: Callable, steps: int = 8, seed: int | None = None) -> dict:
    """``fn(model, image, importance, target, steps)`` returns the deletion curve of one image
    ``[steps + 1]``: the target's probability after removing the first ``k * H * W // steps``
    pixels, most important first, replaced by the image's mean colour; compared with
    ``evaluate.deletion_curve(..., substrate="mean")``."""
    _check_steps(steps)
    model, fresh = load_shapes_net(), load_shapes_net()
    cases = []
    for image, importance, target in _deletion_cases(seed):
        before = image.clone()
        got = fn(model, image, importance.clone(), target, steps)
        cases.append({"got": observe(got), "in_place": not torch.equal(image, before)})
    return {"cases": cases, "changes": _changes(model, fresh, "your deletion_curve")}


def _removal_curve(model, image, order, target, cuts, substrate, probability=True):
    """The target's probability (or score) after replacing the pixels ``order[:cut]`` by
    ``substrate`` [C, H, W], for each cut: a plain version, to name the mistakes."""
    flat, fill = image.flatten(1), substrate.flatten(1)
    steps = []
    for cut in cuts:
        x = flat.clone()
        x[:, order[:cut]] = fill[:, order[:cut]]
        steps.append(x.view_as(image))
    with torch.no_grad():
        scores = model(torch.stack(steps))
    values = scores.softmax(dim=1) if probability else scores
    return values[:, target]


def _judge_deletion_curve(observed, steps: int = 8, seed=None) -> str:
    _check_steps(steps)
    _untouched(observed)
    model = load_shapes_net()
    for number, ((image, importance, target), case) in enumerate(
        zip(_deletion_cases(seed), observed["cases"])
    ):
        if case["in_place"]:
            raise AssertionError(
                "your deletion_curve changed `image` in place; change a copy for each step "
                "(x = image.clone()) and leave the image as it came."
            )
        expected = evaluate.deletion_curve(model, image, importance, target, steps=steps)
        got = _array(case["got"], "your deletion_curve")
        if got.shape == (steps,):
            raise AssertionError(
                f"your deletion curve has {steps} points, expected steps + 1 = {steps + 1}: step 0 "
                "is the image itself (nothing removed yet), step `steps` the mean colour alone."
            )
        _compare_lazily(
            got,
            expected,
            f"deletion curve ({'object first' if number == 0 else 'a random map'})",
            "p_k = softmax(S(I_k))_c, where I_k is the image with its k * H * W // steps most "
            "important pixels (all channels) set to the image's mean colour.",
            functools.partial(_deletion_mistakes, model, image, importance, target, steps),
            lambda index: f"step {index[0]}",
        )
    return (
        f"your deletion curves ({steps} steps) match evaluate.deletion_curve with the mean colour."
    )


def _deletion_mistakes(model, image, importance, target, steps) -> dict:
    c, h, w = image.shape
    order = importance.flatten().argsort(descending=True)
    cuts = [k * h * w // steps for k in range(steps + 1)]
    mean = image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    mistakes = {
        "removing the least important pixels first (sort in descending order)": (
            _removal_curve(model, image, order.flip(0), target, cuts, mean)
        ),
        "the score S_c (a logit) instead of the probability softmax(S)_c": _removal_curve(
            model, image, order, target, cuts, mean, probability=False
        ),
        "black (0) instead of the image's mean colour": _removal_curve(
            model, image, order, target, cuts, torch.zeros_like(image)
        ),
        "one grey level, the mean over all channels, instead of the mean colour (one mean "
        "per channel)": _removal_curve(
            model, image, order, target, cuts, image.mean().expand_as(image)
        ),
    }
    if (h * w) % steps:
        mistakes[
            f"chunks of H*W // steps pixels, k * (H*W // steps): then the last step leaves "
            f"{h * w - steps * (h * w // steps)} pixels (the rule is k * H * W // steps)"
        ] = _removal_curve(
            model, image, order, target, [k * (h * w // steps) for k in range(steps + 1)], mean
        )
    return mistakes


check_deletion_curve = Check(
    _run_deletion_curve,
    _judge_deletion_curve,
    library=[
        "lecture_lib.evaluate.deletion_curve",
        "lecture_lib.evaluate.insertion_curve",
        "lecture_lib.evaluate._curve",
        "lecture_lib.evaluate._removal",
        "lecture_lib.evaluate.step_images",
        "lecture_lib.evaluate.pixel_order",
    ],
)


def _spearman_cases(seed: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of maps: related maps without ties, maps with many ties (values rounded), and a
    map that is zero on most pixels (as guided backprop's maps are)."""
    generator = torch.Generator().manual_seed(seed or 0)
    size = 8 if seed is None else int(torch.randint(6, 24, (1,), generator=generator))

    def noise(*shape):
        return torch.randn(*shape, generator=generator)

    a = noise(size, size)
    smooth = (a + 0.8 * noise(size, size), a)
    tied = ((a * 2).round() / 2, (a + noise(size, size)).round())
    sparse = ((a - a.quantile(0.7)).clamp(min=0), a.abs() + 0.5 * noise(size, size).abs())
    return [smooth, tied, sparse]


def _run_spearman(fn: Callable, seed: int | None = None) -> dict:
    """``fn(a, b)`` returns Spearman's rank correlation of two maps of the same shape (one
    number), tied values sharing their average rank; compared with ``evaluate.spearman``."""
    return {"cases": [observe(fn(a.clone(), b.clone())) for a, b in _spearman_cases(seed)]}


def _plain_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..D of a flat tensor, ties broken by position (no averaging)."""
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[x.argsort(stable=True)] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    return ranks


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])


def _judge_spearman(observed, seed=None) -> str:
    kinds = ["maps without ties", "maps with tied values", "a map that is zero on most pixels"]
    for kind, (a, b), got in zip(kinds, _spearman_cases(seed), observed["cases"]):
        x, y = a.flatten(), b.flatten()
        got = _array(got, "your spearman")
        if got.size != 1:
            raise AssertionError(
                f"your spearman returned shape {got.shape} for two maps of shape "
                f"{tuple(a.shape)}; return one number, the correlation of the two maps' ranks."
            )
        n = len(x)
        r, s = evaluate.rank(x.double()), evaluate.rank(y.double())
        mistakes = {
            "the Pearson correlation of the values themselves (correlate their ranks)": (
                _pearson(x, y)
            ),
            "the ranks taken from argsort, which gives the order of the pixels, not each pixel's "
            "rank (the rank of x_i is the number of values below it, plus 1)": _pearson(
                x.argsort().double(), y.argsort().double()
            ),
            "ranks that ignore ties (tied values must share their average rank)": _pearson(
                _plain_ranks(x), _plain_ranks(y)
            ),
            "the shortcut 1 - 6 Σ d² / (n (n² - 1)), exact only without ties (with tied values "
            "use the correlation of the average ranks)": 1
            - 6 * float(((r - s) ** 2).sum()) / (n * (n * n - 1)),
        }
        _compare(
            got.reshape(()),
            evaluate.spearman(x, y),
            "Spearman correlation",
            "ρ = the Pearson correlation of the ranks r, s of the two maps' values; a value with "
            "b smaller and e equal values (itself included) gets the rank b + (e + 1) / 2.",
            mistakes,
            lambda index, kind=kind: kind,
        )
    return "your Spearman correlations match evaluate.spearman, ties included."


check_spearman = Check(
    _run_spearman,
    _judge_spearman,
    library=["lecture_lib.evaluate.spearman", "lecture_lib.evaluate.rank"],
)
