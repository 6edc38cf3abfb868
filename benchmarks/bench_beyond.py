"""How much do the methods beyond the lecture cost, compared with one forward + backward pass?

    python benchmarks/bench_beyond.py            # ShapesNet, then VGG11 (random weights, 224 x 224)
    python benchmarks/bench_beyond.py --quick    # ShapesNet only

The baseline is one forward pass and one backward pass to the input on the same batch, timed in
the same run (as in bench_attribution.py). Goals:

- Grad-CAM at most 1.1 x the baseline (it backpropagates only down to its layer);
- SmoothGrad with n samples at most n x its base method on the same images;
- one fooling image of ShapesNet (iterated gradient steps) in at most 2 s.

Feature visualization and top patches are timed for information. Timings on a shared machine are
noisy: read the ratios, which are measured against a baseline of the same moment.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from timing import forward_backward, median_time  # the same baseline and timing

from lecture_lib import activations, attribution, fooling, threads
from lecture_lib.class_model import feature_visualization
from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net
from lecture_lib.targets import Neuron


def row(label: str, seconds: float, ratio: float, note: str = "") -> None:
    print(f"{label:52s} {seconds:9.4f} {ratio:7.2f}  {note}")


def header(name: str, x: torch.Tensor) -> None:
    print(f"\n{name}: batch {tuple(x.shape)}, {torch.get_num_threads()} threads")
    print(f"{'method':52s} {'seconds':>9s} {'ratio':>7s}")


def bench_cam(name, model, x, layer, repeat):
    target = model(x[:1]).argmax(1).expand(len(x)).clone()
    header(name, x)
    base = median_time(lambda: forward_backward(model, x, target), repeat)
    row("forward + backward (baseline)", base, 1.0)
    t = median_time(lambda: attribution.grad_cam(model, x, target, layer=layer), repeat)
    row(f"grad_cam (layer {layer})", t, t / base, "goal <= 1.10")
    t = median_time(lambda: attribution.guided_grad_cam(model, x, target, layer=layer), repeat)
    row("guided_grad_cam", t, t / base, "guided backprop + Grad-CAM + one forward")


def bench_smoothgrad(model, x, samples, repeat):
    target = model(x).argmax(1)
    print(f"\nSmoothGrad, {samples} samples of {tuple(x.shape)}: ratio to {samples} x the method")
    for method in (attribution.gradient, attribution.guided_backprop, attribution.grad_cam):
        one = median_time(lambda m=method: m(model, x, target), repeat)
        t = median_time(
            lambda m=method: attribution.smoothgrad(m, model, x, target, samples=samples),
            max(1, repeat // 2),
        )
        row(f"smoothgrad({method.__name__})", t, t / (samples * one), "goal <= 1.00")


def bench_fooling(model, images, repeat):
    with torch.no_grad():
        targets = (model(images).argmax(1) + 1) % 5
    with threads.policy():  # as fooling_image runs: one thread on a busy machine
        one = median_time(lambda: forward_backward(model, images[:1], targets[:1]), repeat)
    times, steps = [], []
    for image, target in zip(images, targets):
        start = time.perf_counter()
        result = fooling.fooling_image(model, image, int(target))
        times.append(time.perf_counter() - start)
        steps.append(int(result.steps))
    print(f"\nfooling images of ShapesNet, one image at a time ({len(images)} images)")
    print(
        f"{'':52s} {'seconds':>9s} {'ratio':>7s}  (ratio: to one forward + backward of one image)"
    )
    row("forward + backward of one image (baseline)", one, 1.0)
    median = statistics.median(times)
    row("fooling_image: median", median, median / one, "goal <= 2 s")
    row("fooling_image: slowest", max(times), max(times) / one, f"({max(steps)} steps)")
    longest = median_time(
        lambda: fooling.fooling_image(model, images[0], int(targets[0]), step_size=1e-9), 1
    )  # steps too small to fool: it runs all max_steps = 100 steps
    row("fooling_image, all 100 steps (the longest call)", longest, longest / one, "goal <= 2 s")
    t = median_time(lambda: fooling.fast_gradient_sign(model, images[0], int(targets[0])), repeat)
    row("fast_gradient_sign (epsilon searched), one image", t, t / one)
    t = median_time(lambda: fooling.fooling_image(model, images, targets), 1)
    row(f"fooling_image, all {len(images)} as one batch", t, t / one)


def bench_features(model, images):
    print("\nfeature visualization and top patches")
    print(f"{'':52s} {'seconds':>9s}")
    targets = [Neuron("conv4", c, reduce="sum") for c in range(8)]
    start = time.perf_counter()
    feature_visualization(model, targets, steps=64)
    print(f"{'feature_visualization: 8 channels, 64 steps':52s} {time.perf_counter() - start:9.4f}")
    start = time.perf_counter()
    activations.top_patches(model, "conv4", 2, images, k=9)
    label = f"top_patches over {len(images)} images"
    print(f"{label:52s} {time.perf_counter() - start:9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="ShapesNet only")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    model = load_shapes_net()
    images, _, _ = make_shapes(1000, seed=2026)
    bench_cam("ShapesNet", model, images[:64], "conv4", args.repeat)
    bench_smoothgrad(model, images[:8], 16, args.repeat)
    bench_fooling(model, images[:8], args.repeat)
    bench_features(model, images)
    if args.quick:
        return
    vgg = torchvision.models.vgg11(weights=None).eval()
    bench_cam("VGG11 (random weights)", vgg, torch.rand(8, 3, 224, 224), "features.18", 2)


if __name__ == "__main__":
    main()
