"""Prediction difference analysis against occlusion with the same windows, in one run.

    python benchmarks/bench_prediction_difference.py            # window 8, stride 2, 10 samples
    python benchmarks/bench_prediction_difference.py --repeats 5 --whole

One ShapesNet image (``make_shapes(1, seed=2026)``), window 8, stride 2 (841 windows): grey
occlusion (``perturbation.occlusion``, one pass per window) and ``prediction_difference`` with
the marginal and the conditional sampler, 10 samples per window (8,410 passes), drawn from 64
shapes. The conditional sampler's Gaussian over 12 x 12 patches is timed on its own (fitted once
per data set and window, then passed as ``data``) and with the map. Each case is timed in
interleaved rounds; the table gives the best of the rounds and the ratio to occlusion's best.
``--whole`` adds ``incremental=False`` (every sampled image through the whole network).
"""

from __future__ import annotations

import argparse
import time

from lecture_lib import perturbation
from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net
from lecture_lib.prediction_difference import forward_passes, patch_gaussian

WINDOW, STRIDE, SAMPLES, PADDING = 8, 2, 10, 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--whole", action="store_true", help="also time incremental=False")
    args = parser.parse_args()

    model = load_shapes_net()
    image = make_shapes(1, seed=2026)[0]
    data = make_shapes(64, seed=7)[0]
    gaussian = patch_gaussian(data, WINDOW + 2 * PADDING)
    common = {"window": WINDOW, "stride": STRIDE, "progress": False}
    pd = perturbation.prediction_difference
    cases = {
        "grey occlusion": lambda: perturbation.occlusion(model, image, baseline=0.5, **common),
        "marginal": lambda: pd(
            model, image, sampler="marginal", data=data, samples=SAMPLES, **common
        ),
        "conditional (Gaussian given)": lambda: pd(
            model, image, data=gaussian, samples=SAMPLES, padding=PADDING, **common
        ),
        "conditional (with the fit)": lambda: pd(
            model, image, data=data, samples=SAMPLES, padding=PADDING, **common
        ),
        "the fit alone (64 shapes)": lambda: patch_gaussian(data, WINDOW + 2 * PADDING),
    }
    if args.whole:
        cases["marginal, whole passes"] = lambda: pd(
            model, image, sampler="marginal", data=data, samples=SAMPLES, incremental=False,
            **common,
        )  # fmt: skip
    best = {name: float("inf") for name in cases}
    for _ in range(args.repeats):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    windows = forward_passes(image.shape, WINDOW, STRIDE, 1) - 1
    print(
        f"one ShapesNet image, window {WINDOW}, stride {STRIDE} ({windows} windows), "
        f"{SAMPLES} samples per window, best of {args.repeats}"
    )
    print(f"{'case':<32} {'seconds':>8} {'x occlusion':>12}")
    for name, seconds in best.items():
        print(f"{name:<32} {seconds:>8.2f} {seconds / best['grey occlusion']:>12.1f}")


if __name__ == "__main__":
    main()
