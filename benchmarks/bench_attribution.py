"""How much does an explanation cost, compared with one plain forward + backward pass?

    python benchmarks/bench_attribution.py            # ShapesNet (batch 64) and VGG11 (batch 8, 224x224)
    python benchmarks/bench_attribution.py --quick    # ShapesNet only
    python benchmarks/bench_attribution.py --ig-only --threads 1     # integrated gradients only

For each model, the baseline is one forward pass and one backward pass to the input
(``torch.autograd.grad(score, x)``) on the same batch, timed in the same run. Each method's time
is printed divided by that baseline. DeepLIFT's budget is that pass plus a forward pass of its
baseline (one image: the same black image serves the whole batch). Integrated gradients is
printed per path step (goal <= 1.15); its ratio is the median over rounds that each time
``steps`` baseline passes and, right before or after them, integrated gradients with ``steps``
steps, so that a shared machine's changing load cancels out (the ratio of the process's CPU
times is printed too). Occlusion is printed per occluded window (and as a ratio to one forward
pass of one image). VGG11 has random weights: speed does not depend on what the weights are.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from timing import forward_backward, median_time, paired

from lecture_lib import attribution as A
from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net
from lecture_lib.perturbation import occlusion


def bench(name, model, x, repeat, ig_steps, window, stride, ig_only=False):
    target = model(x[:1]).argmax(1).expand(len(x)).clone()
    base = median_time(lambda: forward_backward(model, x, target), repeat)
    with torch.no_grad():
        forward_one = median_time(lambda: model(x[:1]), repeat)
    rows = [("forward + backward (baseline)", base, 1.0, "")]
    if not ig_only:
        for method in (A.gradient, A.saliency, A.input_x_gradient, A.deconvnet, A.guided_backprop):
            t = median_time(lambda m=method: m(model, x, target), repeat)
            rows.append((method.__name__, t, t / base, "goal <= 1.25"))
        t = median_time(lambda: A.deeplift(model, x, target), repeat)
        budget = base + forward_one
        rows.append(
            ("deeplift", t, t / base, f"goal <= 1.25 x (fb + fwd(1)) = {1.25 * budget / base:.2f}")
        )
    t, ratio, cpu_ratio = paired(
        lambda: A.integrated_gradients(model, x, target, steps=ig_steps, progress=False),
        lambda: forward_backward(model, x, target),
        repeat,
        per=ig_steps,
    )
    label = f"integrated_gradients / step ({ig_steps} steps)"
    note = f"goal <= 1.15; {repeat} paired rounds; CPU-time ratio {cpu_ratio:.2f}"
    rows.append((label, t, ratio, note))
    if not ig_only:
        image = x[:2]
        side = x.shape[-1]
        positions = len(range(0, side - window + 1, stride)) + ((side - window) % stride != 0)
        windows = positions**2 * len(image)
        t = median_time(
            lambda: occlusion(model, image, target[:2], window=window, stride=stride), 1
        )
        rows.append(
            (
                f"occlusion / window ({window}x{window}, stride {stride}, {windows} windows)",
                t / windows,
                t / windows / forward_one,
                "ratio to one forward of one image",
            )
        )
    print(f"\n{name}: batch {tuple(x.shape)}, {torch.get_num_threads()} threads")
    print(f"{'method':58s} {'seconds':>9s} {'ratio':>7s}")
    for label, seconds, ratio, note in rows:
        print(f"{label:58s} {seconds:9.4f} {ratio:7.2f}  {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="ShapesNet only")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ig-only", action="store_true", help="only integrated gradients")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    images, _, _ = make_shapes(64, seed=2026)
    bench("ShapesNet", load_shapes_net(), images, args.repeat, 50, 8, 4, args.ig_only)
    if args.quick:
        return
    vgg = torchvision.models.vgg11(weights=None).eval()
    photos = torch.rand(8, 3, 224, 224)
    repeat = max(2, args.repeat // 2)
    bench("VGG11 (random weights)", vgg, photos, repeat, 4, 56, 28, args.ig_only)


if __name__ == "__main__":
    main()
