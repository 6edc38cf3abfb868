"""Occlusion by incremental inference against whole forward passes and Captum, side by side.

    python benchmarks/bench_occlusion.py                  # ShapesNet, then VGG11
    python benchmarks/bench_occlusion.py --quick          # ShapesNet only (--vgg-only: VGG11)
    python benchmarks/bench_occlusion.py --vgg-all-windows --repeats 3

Cases: ShapesNet on 8 shapes, window 8, stride 4 (225 windows per image); VGG11 with random
weights (speed does not depend on them) on one 224 x 224 image, window 16, stride 8 (729
windows). Columns, all in one process and timed in interleaved rounds:

- ``incremental``: ``perturbation.occlusion``, which recomputes each layer only where the window
  reaches (``lecture_lib.incremental``; the plan, printed first, gives each layer's region);
- ``whole passes``: ``perturbation.occlusion(..., incremental=False)``, every occluded image
  through the whole network, ``batch_size`` at a time (how the library computed it before);
- ``captum``: ``captum.attr.Occlusion`` with 1 and with 64 windows per forward pass, each with
  torch's thread setting and with one thread (the best of the four is Captum's best).

The library's methods choose their threads themselves (``lecture_lib.threads``: one thread on
a busy machine). "x incremental" divides a column's best time by the incremental's best time;
the goal is at least 3 for Captum's best. A whole forward pass of VGG11 costs 7.6 GMAC, so by
default its baselines are timed once, without a warm-up run, on the windows of stride 16 (196)
and scaled to the 729 windows, since each window costs them one forward pass;
``--vgg-all-windows`` times them on all 729. The maps are compared too: the
incremental one with the whole passes' (goal: within 1e-5 of the map's largest value) and with
Captum's. Without Captum installed (``pip install captum``, or the extra ``bench``) its columns
are left out with a note.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net
from lecture_lib.perturbation import occlusion, occlusion_plan, window_positions

try:
    from captum.attr import Occlusion
except ImportError:  # the benchmark runs without Captum, and says so
    Occlusion = None


INCREMENTAL = "incremental (lecture_lib)"
WHOLE = "whole passes (lecture_lib, incremental=False)"


def with_threads(threads: int | None, action):
    """``action`` run with torch set to ``threads`` (None: as it is), the setting restored."""

    def run():
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return action()
        finally:
            torch.set_num_threads(before)

    return run


def captum_occlusion(model, x, target, window, stride, per_pass):
    attributor = Occlusion(model)

    def run():
        with torch.no_grad():
            maps = attributor.attribute(
                x,
                sliding_window_shapes=(x.shape[1], window, window),
                strides=(x.shape[1], stride, stride),
                baselines=0.0,
                target=target,
                perturbations_per_eval=per_pass,
            )
        return maps[:, 0]  # every channel holds the same map

    return run


def captum_windows(side: int, window: int, stride: int) -> int:
    """Captum's windows: stride apart, none added at the border."""
    return ((side - window) // stride + 1) ** 2


def our_windows(side: int, window: int, stride: int) -> int:
    return len(window_positions(side, window, stride)) ** 2


def timed_rounds(columns: dict, rounds: int, warm_up: bool = True) -> tuple[dict, dict]:
    """Each column's action timed once per round, the columns interleaved, after one warm-up
    run of each (if ``warm_up``); returns the times and each column's last result."""
    times: dict[str, list[float]] = {name: [] for name in columns}
    results = {name: action() for name, (action, _) in columns.items()} if warm_up else {}
    for _ in range(rounds):
        for name, (action, _) in columns.items():
            start = time.perf_counter()
            results[name] = action()
            times[name].append(time.perf_counter() - start)
    return times, results


def multiply_adds(model, x, route) -> tuple[float, float]:
    """Multiply-adds of convolutions and linear layers per occluded image: a whole forward
    pass, and the incremental computation (each window layer on its region, the layers from
    the first full one on the whole map)."""
    whole: dict[str, float] = {}
    modules = dict(route_layers(route))

    def count(name):
        def hook(module, inputs, output):
            if isinstance(module, torch.nn.Conv2d):
                per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
                whole[name] = output[0].numel() * per_output
            elif isinstance(module, torch.nn.Linear):
                whole[name] = module.in_features * module.out_features

        return hook

    handles = [module.register_forward_hook(count(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    incremental = dict(whole)
    for step in route.steps[: route.full_from]:
        if step.name in whole and step.kind == "window":
            incremental[step.name] = whole[step.name] * (
                step.region[0] * step.region[1] / (step.map[0] * step.map[1])
            )
    return sum(whole.values()), sum(incremental.values())


def route_layers(route):
    return [(step.name, step.module) for step in route.steps]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def case(name, model, x, window, stride, rounds, baseline_stride, batch_size, warm_up=True):
    """Time every column on one case and print the table. The baselines (whole passes and
    Captum) run the windows of ``baseline_stride`` and are scaled to those of ``stride``;
    without ``warm_up`` (long runs) one forward pass of each batch size stands for it."""
    side = x.shape[-1]
    with torch.no_grad():
        target = model(x).argmax(dim=1)
        if not warm_up:
            model(x.expand(batch_size, -1, -1, -1))
    windows = our_windows(side, window, stride)
    print(
        f"\n== {name}: {len(x)} image(s) {side}x{side}, window {window}, stride {stride}: "
        f"{windows} windows per image, {windows * len(x)} occluded images"
    )
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    route = occlusion_plan(model, x, target, window, stride)
    print(route)
    whole, fewer = multiply_adds(model, x, route)
    print(f"multiply-adds per occluded image: whole pass {whole / 1e6:.1f} M, incremental "
          f"{fewer / 1e6:.1f} M: at most {whole / fewer:.1f} times faster")  # fmt: skip

    whole_stride = captum_stride = baseline_stride  # the same windows for both
    whole_windows = our_windows(side, window, whole_stride)
    columns = {
        INCREMENTAL: (
            lambda: occlusion(model, x, target, window, stride, progress=False),
            1.0,
        ),
        WHOLE: (
            lambda: occlusion(
                model,
                x,
                target,
                window,
                whole_stride,
                batch_size=batch_size,
                incremental=False,
                progress=False,
            ),
            windows / whole_windows,
        ),  # fmt: skip
    }
    captum_names = []
    if Occlusion is None:
        print("note: captum is not installed (pip install captum): its columns are left out")
    else:
        counted = captum_windows(side, window, captum_stride)
        for per_pass in (1, 64):
            for threads in (None, 1):
                label = f"captum, {per_pass} a pass, {threads or torch.get_num_threads()} thread(s)"
                run = captum_occlusion(model, x, target, window, captum_stride, per_pass)
                columns[label] = (with_threads(threads, run), windows / counted)
                captum_names.append(label)
    times, results = timed_rounds(columns, rounds, warm_up)

    best = {label: min(t) * columns[label][1] for label, t in times.items()}
    median = {label: statistics.median(t) * columns[label][1] for label, t in times.items()}
    reference = best[INCREMENTAL]
    print(f"\n{'method':44s} {'best s':>9s} {'median s':>9s} {'x incremental':>14s}")
    for label in columns:
        scaled = columns[label][1]
        note = "" if scaled == 1.0 else f"  (timed on fewer windows, x {scaled:.2f})"
        print(f"{label:44s} {best[label]:9.3f} {median[label]:9.3f} "
              f"{best[label] / reference:14.2f}{note}")  # fmt: skip
    if captum_names:
        fastest = min(captum_names, key=best.get)
        ratio = best[fastest] / reference
        print(f"Captum's best ({fastest}) / incremental: {ratio:.2f} (goal >= 3)")

    # the maps: incremental against the whole passes' (same windows) and Captum's
    fast = results[INCREMENTAL]
    if whole_stride != stride:
        fast = occlusion(model, x, target, window, whole_stride, progress=False)
    difference = relative_difference(fast, results[WHOLE])
    print(f"maps (window {window}, stride {whole_stride}), incremental vs whole passes: "
          f"max |difference| / max |map| = {difference:.1e} (goal <= 1e-5)")  # fmt: skip
    if captum_names and (side - window) % captum_stride == 0:  # the same windows as ours
        difference = relative_difference(fast, results[captum_names[-1]])
        print(f"maps (window {window}, stride {captum_stride}), incremental vs Captum: "
              f"max |difference| / max |map| = {difference:.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ShapesNet only")
    parser.add_argument("--vgg-only", action="store_true", help="VGG11 only")
    parser.add_argument("--repeats", type=int, default=3, help="rounds on ShapesNet")
    parser.add_argument("--vgg-repeats", type=int, default=1, help="rounds on VGG11")
    parser.add_argument("--vgg-all-windows", action="store_true", help="no scaling (slow)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if not args.vgg_only:
        model = load_shapes_net()
        images, _, _ = make_shapes(8, seed=2026)
        case("ShapesNet", model, images, 8, 4, args.repeats, 4, 256)

    if not args.quick:
        import torchvision

        torch.manual_seed(0)
        vgg = torchvision.models.vgg11(weights=None).eval()
        photo = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        stride = 8 if args.vgg_all_windows else 16
        case("VGG11 (random weights)", vgg, photo, 16, 8, args.vgg_repeats, stride, 64, False)


if __name__ == "__main__":
    main()
