"""What do the evaluation measures say about each method on ShapesNet, and what do they cost?

    python benchmarks/bench_evaluate.py              # 64 images, every table
    python benchmarks/bench_evaluate.py --quick      # 16 images, no randomization test of IG
    python benchmarks/bench_evaluate.py --table      # 64 images, part 1 only

Part 1 (the notebook's table): for each method, on ``make_shapes(n, seed=2026)``: the time to
compute the maps, the pointing game, the mask share, the deletion and insertion AUC (20 steps,
mean-colour substrate) and the time of each measure. The baseline, timed in the same run, is one
plain forward pass over as many images as a curve needs (n x 21): a curve's time divided by it
shows the overhead of building the images.

Part 2: the cascading randomization test, layer by layer, for every method.

Part 3: the deletion curve's time for several ``batch_size`` values, as a ratio to the default.
"""

from __future__ import annotations

import argparse
import time

import torch

from lecture_lib import attribution as A
from lecture_lib.data import make_shapes
from lecture_lib.evaluate import (
    auc,
    deletion_curve,
    insertion_curve,
    mask_share,
    pointing_game,
    randomization_test,
)
from lecture_lib.models import load_shapes_net

METHODS = {
    "gradient": A.gradient,
    "guided_backprop": A.guided_backprop,
    "deconvnet": A.deconvnet,
    "integrated_gradients": A.integrated_gradients,
    "deeplift": A.deeplift,
}
STEPS = 20


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 images, no IG randomization")
    parser.add_argument("--table", action="store_true", help="part 1 only (the measures)")
    args = parser.parse_args()
    n = 16 if args.quick else 64
    torch.manual_seed(0)
    model = load_shapes_net()
    images, labels, masks = make_shapes(n, seed=2026)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} images\n")

    many = images.repeat(STEPS + 1, 1, 1, 1)
    with torch.no_grad():
        model(many[:256])  # warm-up
        _, baseline = timed(lambda: [model(chunk) for chunk in many.split(256)])
    print(f"baseline: plain forward of {len(many)} images: {baseline:.2f} s\n")

    header = (
        f"{'method':<22}{'maps s':>7}{'point':>7}{'share':>7}{'del AUC':>9}{'ins AUC':>9}"
        f"{'del s':>7}{'ratio':>7}{'ins s':>7}{'total s':>9}"
    )
    print(header)
    total_all = 0.0
    maps_of = {}
    for name, method in METHODS.items():
        maps, t_maps = timed(lambda method=method: method(model, images))
        maps_of[name] = maps
        (point, share), t_mask = timed(
            lambda maps=maps: (pointing_game(maps, masks), mask_share(maps, masks))
        )
        deletion, t_del = timed(lambda maps=maps: deletion_curve(model, images, maps, steps=STEPS))
        insertion, t_ins = timed(
            lambda maps=maps: insertion_curve(model, images, maps, steps=STEPS)
        )
        total = t_maps + t_mask + t_del + t_ins
        total_all += total
        print(
            f"{name:<22}{t_maps:>7.2f}{point:>7.2f}{share:>7.2f}{auc(deletion):>9.3f}"
            f"{auc(insertion):>9.3f}{t_del:>7.2f}{t_del / baseline:>7.2f}{t_ins:>7.2f}{total:>9.2f}"
        )
    for name, reference in (("mask (ideal)", masks.float()), ("uniform noise", None)):
        if reference is None:
            reference = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
        deletion = deletion_curve(model, images, reference, steps=STEPS)
        insertion = insertion_curve(model, images, reference, steps=STEPS)
        print(
            f"{name:<22}{'':>7}{pointing_game(reference, masks):>7.2f}"
            f"{mask_share(reference, masks):>7.2f}{auc(deletion):>9.3f}{auc(insertion):>9.3f}"
        )
    print(f"\nall five methods, maps + every measure: {total_all:.1f} s\n")
    if args.table:
        return

    print("cascading randomization test: Spearman of |map| with the trained model's, mean")
    table = {}
    for name, method in METHODS.items():
        if name == "integrated_gradients" and args.quick:
            continue
        result, seconds = timed(lambda method=method: randomization_test(model, images, method))
        table[name] = (result, seconds)
    layers = next(iter(table.values()))[0].layers
    print(f"{'randomized down to':<20}" + "".join(f"{name[:12]:>13}" for name in table))
    for i, layer in enumerate(layers):
        print(f"{layer:<20}" + "".join(f"{r.mean[i]:>13.2f}" for r, _ in table.values()))
    print(f"{'time (s)':<20}" + "".join(f"{s:>13.1f}" for _, s in table.values()))

    print("\ndeletion curve (gradient maps) by batch_size, time / time at 256")
    maps = maps_of["gradient"]
    _, reference = timed(lambda: deletion_curve(model, images, maps, progress=False))
    for size in (32, 64, 128, 256, 512, 2048):
        _, seconds = timed(
            lambda size=size: deletion_curve(model, images, maps, batch_size=size, progress=False)
        )
        print(f"  batch_size {size:>5}: {seconds:6.2f} s  ratio {seconds / reference:.2f}")


if __name__ == "__main__":
    main()
