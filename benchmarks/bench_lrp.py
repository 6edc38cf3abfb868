"""Layer-wise relevance propagation: one forward and one modified backward pass.

    python benchmarks/bench_lrp.py            # ShapesNet (batch 64) and VGG11 (batch 4, 224x224)
    python benchmarks/bench_lrp.py --quick    # ShapesNet only

For each composite, ``attribution.lrp`` is timed against one plain forward + backward pass to
the input on the same batch (goal <= 1.5) and against Zennit's composite of the same name doing
the same work (goal <= 1.0; extra ``dev``). Each pair runs one right after the other, in
alternating order, and the median ratio over rounds is printed, so that a shared machine's
changing load mostly cancels out. VGG11 has random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from timing import forward_backward, paired  # the same baseline and timing as bench_attribution

from lecture_lib import attribution
from lecture_lib.data import make_shapes
from lecture_lib.models import load_shapes_net
from lecture_lib.relevance import COMPOSITES


def zennit_lrp(model, x, target, composite):
    """Zennit's composite of the same name, the output's relevance the target's score."""
    from zennit.attribution import Gradient
    from zennit.composites import (
        EpsilonGammaBox,
        EpsilonPlusFlat,
        LayerMapComposite,
        layer_map_base,
    )
    from zennit.rules import Epsilon
    from zennit.types import Linear

    if composite in ("zero", "epsilon"):
        rule = Epsilon(epsilon=0.0 if composite == "zero" else 1e-6)
        chosen = LayerMapComposite(layer_map_base() + [(Linear, rule)])
    elif composite == "epsilon-plus-flat":
        chosen = EpsilonPlusFlat()
    else:
        chosen = EpsilonGammaBox(low=0.0, high=1.0)
    with Gradient(model, chosen) as attributor:
        return attributor(x, lambda out: out * F.one_hot(target, out.shape[1]))[1]


def bench(name: str, model, x, repeat: int) -> None:
    with torch.no_grad():
        target = model(x).argmax(1)
    try:
        import zennit  # noqa: F401
    except ImportError:
        zennit = None
    print(f"\n{name}: {tuple(x.shape)}")
    print(f"{'composite':20s} {'seconds':>8s} {'/ fwd+bwd':>10s} {'/ Zennit':>9s}")
    for composite in COMPOSITES:

        def ours(c=composite):
            attribution.lrp(model, x, target, composite=c)

        seconds, ratio, _ = paired(ours, lambda: forward_backward(model, x, target), repeat)
        against = "-"
        if zennit is not None:
            _, to_zennit, _ = paired(
                ours, lambda c=composite: zennit_lrp(model, x, target, c), repeat
            )
            against = f"{to_zennit:.2f}"
        print(f"{composite:20s} {seconds:8.3f} {ratio:10.2f} {against:>9s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="ShapesNet only")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, _, _ = make_shapes(64, seed=1)
    bench("ShapesNet, 64 shapes", load_shapes_net(), images, args.repeat)
    if not args.quick:
        vgg = torchvision.models.vgg11(weights=None).eval()
        bench("VGG11, 4 images", vgg, torch.rand(4, 3, 224, 224), max(3, args.repeat // 2))


if __name__ == "__main__":
    main()
