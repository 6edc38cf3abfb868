"""How long a student waits after moving a control of an explorer (``lecture_lib.widgets``).

    python benchmarks/bench_widgets.py [--repeats 5] [--class-model-repeats 2] [--threads N] [--busy]

One update = compute what is not cached yet + redraw the figure + encode it as PNG. Each row
is the mean of several updates on ShapesNet (64 x 64 images), next to one plain forward +
backward pass of ShapesNet on one image, the baseline, measured in the same run. "new" rows
empty the explorer's cache first (the first visit of a setting); "cached" rows redraw a
setting seen before. "best" is the fastest of the repeats, the better guess on a busy machine;
"x base" and "best x" divide the mean by the baseline's mean and the best by its best.
"first ms" is the mean time until the first picture is on screen: the whole update for every
explorer but the class model's, which shows its ascent as it goes (the steps so far after
``widgets.FIRST_FRAME_S``) and its result when the ascent is done. "cpu ms" is the CPU time
this process spent until then, the steadier figure on a machine shared with other programs.
The target is at most 100 ms until a picture answers the control.

The "picture" rows time the drawing alone, on the method explorer's figure: the whole figure
drawn by matplotlib and encoded by Pillow (what an explorer did before, and what ipympl does
for each frame it sends), against ``picture.Picture`` (the fixed parts drawn once, the changing
artists on top, one PNG). ``--compare DIR`` first runs the same table in a
subprocess with the ``lecture_lib`` found in DIR (an older commit's: ``git archive <commit>
lecture_lib | tar -x -C DIR``), so that both tables come from the same load.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from lecture_lib import widgets  # noqa: E402
from lecture_lib.data import make_shapes  # noqa: E402
from lecture_lib.models import load_shapes_net  # noqa: E402

LIMIT_MS = 100.0


def once(action, explorer: widgets.Explorer | None = None) -> tuple[float, float, float]:
    """Milliseconds that ``action()`` takes, until ``explorer`` showed its first picture, and
    the process's CPU time until then (on a machine shared with other programs, the CPU time
    of single-threaded work is the steadier figure)."""
    shown: list[tuple[float, float]] = []
    if explorer is not None:
        widget, trait = screen(explorer)
        widget.observe(
            record := lambda change: shown.append((time.perf_counter(), time.process_time())),
            trait,
        )
    start, cpu = time.perf_counter(), time.process_time()
    try:
        action()
    finally:
        end = (time.perf_counter(), time.process_time())
        if explorer is not None:
            widget.unobserve(record, trait)
    first = shown[0] if shown else end
    return (end[0] - start) * 1000, (first[0] - start) * 1000, (first[1] - cpu) * 1000


def screen(explorer: widgets.Explorer):
    """The widget whose change puts a new picture on screen, and its trait: the ``Image`` of
    this library's explorers, or the ``Output`` of a ``lecture_lib`` that drew into one
    (``--compare`` with an older checkout)."""
    if hasattr(explorer, "image"):
        return explorer.image, "value"
    return explorer.output, "outputs"


def timed(action, repeats: int, explorer: widgets.Explorer | None = None):
    """Mean and best wall time of ``action()`` in milliseconds, after one warm-up call, the
    mean time until ``explorer`` showed its first picture, and the mean CPU time until then.
    (The best of several is the better guess of the cost on a machine that is busy.)"""
    action()
    return summary([once(action, explorer) for _ in range(repeats)])


def summary(measured: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    times, first, cpu = zip(*measured)
    n = len(measured)
    return sum(times) / n, min(times), sum(first) / n, sum(cpu) / n


def fresh(explorer: widgets.Explorer):
    """An update that finds nothing in the cache."""

    def action():
        explorer.cache.clear()
        explorer.update()
        assert explorer.error is None, explorer.error

    return action


def next_image(explorer: widgets.Explorer):
    """Move the image slider on by one (what a student does most)."""
    slider = explorer.controls["image"]

    def action():
        slider.value = (slider.value + 1) % (slider.max + 1)
        assert explorer.error is None, explorer.error

    return action


def forward_backward(model, image):
    def action():
        x = image[None].clone().requires_grad_(True)
        model(x)[0, 0].backward()

    return action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--class-model-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--busy", action="store_true", help="with one core kept busy (bench_lectures.py's helper)"
    )
    parser.add_argument(
        "--compare", metavar="DIR", help="first the same table with DIR's lecture_lib (a checkout)"
    )
    args = parser.parse_args()
    if args.compare:
        argv = [a for a in sys.argv[1:] if a != "--compare" and a != args.compare]
        argv = [a for a in argv if not a.startswith("--compare=")]
        env = {**os.environ, "PYTHONPATH": os.path.abspath(args.compare)}
        print(f"--- lecture_lib of {args.compare}:", flush=True)
        subprocess.run([sys.executable, __file__, *argv], env=env, check=True)
        print(f"--- lecture_lib of {os.path.dirname(widgets.__file__)}:", flush=True)
    if args.busy:
        from bench_lectures import load  # the benchmarks' folder is on the path of a script

        with load("busy"):
            measure(args)
    else:
        measure(args)


def measure(args) -> None:
    r = args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = load_shapes_net()
    images, labels, _ = make_shapes(4, seed=2026)
    baseline = timed(forward_backward(model, images[0]), 4 * r)
    rows: list[tuple[str, tuple[float, ...]]] = []

    start = time.perf_counter()
    browser = widgets.feature_map_browser(model, images)
    build = 1000 * (time.perf_counter() - start)
    rows.append(("feature maps: build (maps of 4 images, once)", (build, build, build, build)))
    with browser.hold():
        browser.controls["layer"].value = "relu2"
    rows.append(("feature maps: next image, one channel", timed(next_image(browser), r, browser)))
    with browser.hold():
        browser.controls["view"].value = "all channels"
    rows.append(
        ("feature maps: next image, all 32 channels", timed(next_image(browser), r, browser))
    )

    methods = widgets.method_explorer(model, images, labels)
    for method in widgets.METHODS:
        with methods.hold():
            methods.controls["method"].value = method
        rows.append((f"methods: {method}, new", timed(fresh(methods), r, methods)))
    rows.append(("methods: deeplift, cached", timed(methods.update, r, methods)))

    start = time.perf_counter()
    occlusion = widgets.occlusion_explorer(model, images)  # window 16, stride 8
    build = 1000 * (time.perf_counter() - start)
    rows.append(("occlusion: build (4 images at window 16, stride 8)", (build,) * 4))
    rows.append(
        (
            "occlusion: next image, at the starting settings",
            timed(next_image(occlusion), r, occlusion),
        )
    )
    for window, stride in ((16, 8), (16, 4), (8, 4)):
        with occlusion.hold():
            occlusion.controls["window"].value = window
            occlusion.controls["stride"].value = stride
        rows.append(
            (
                f"occlusion: window {window}, stride {stride}, new",
                timed(fresh(occlusion), r, occlusion),
            )
        )

    class_models = widgets.class_model_explorer(model, steps=100)
    rows.append(
        (
            "class model: 100 steps, new",
            timed(fresh(class_models), args.class_model_repeats, class_models),
        )
    )
    rows.append(("class model: cached", timed(class_models.update, r, class_models)))
    steps = class_models.controls["steps"]
    fewer, more = [], []
    for _ in range(args.class_model_repeats):
        class_models.cache.clear()
        class_models.update()  # a fresh ascent of 100 steps
        fewer.append(once(lambda: setattr(steps, "value", 50), class_models))
        more.append(once(lambda: setattr(steps, "value", 110), class_models))
        steps.value = 100
    for name, measured in (("50 steps after 100 (kept)", fewer), ("110 steps after 100", more)):
        rows.append((f"class model: {name}", summary(measured)))

    rows.extend(deletion_rows(model, images, r))
    rows.extend(grad_cam_rows(model, images, labels, r))
    rows.extend(fooling_and_shortcut_rows(model, images, r))
    rows.extend(pictures(methods, r))
    print(f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}")
    header = f"{'update':52s} {'mean ms':>8s} {'best ms':>8s} {'x base':>7s} {'best x':>7s}"
    print(f"{header} {'first ms':>8s} {'cpu ms':>7s}  first <= {LIMIT_MS:.0f} ms")
    rows.insert(0, ("baseline: ShapesNet forward + backward, 1 image", baseline))
    for name, (mean, best, first, cpu) in rows:
        ratios = f"{mean / baseline[0]:7.1f} {best / baseline[1]:7.1f}"
        verdict = "yes" if first <= LIMIT_MS else "no"
        print(f"{name:52s} {mean:8.1f} {best:8.1f} {ratios} {first:8.1f} {cpu:7.1f}  {verdict}")


def built(make) -> tuple[widgets.Explorer, tuple[float, ...]]:
    """An explorer and the milliseconds its building took, as a row's four numbers."""
    start = time.perf_counter()
    explorer = make()
    build = 1000 * (time.perf_counter() - start)
    return explorer, (build,) * 4


def deletion_rows(model, images, repeats: int) -> list[tuple[str, tuple]]:
    """``evaluation_widgets.deletion_explorer`` with the gradient's maps against a random map:
    a new image computes both curves (10 steps), a step only redraws."""
    from lecture_lib import attribution, evaluation_widgets

    maps = {
        "gradient": attribution.gradient(model, images),
        "random": torch.rand(images[:, 0].shape, generator=torch.Generator().manual_seed(0)),
    }
    explorer, build = built(
        lambda: evaluation_widgets.deletion_explorer(model, images, maps, against="random")
    )
    step = explorer.controls["step"]

    def next_step():
        step.value = (step.value + 1) % (step.max + 1)

    return [
        ("deletion: build (4 images, 2 maps, 10 steps)", build),
        ("deletion: next step (drawn only)", timed(next_step, 2 * repeats, explorer)),
        ("deletion: new image, both curves", timed(fresh(explorer), repeats, explorer)),
    ]


def grad_cam_rows(model, images, labels, repeats: int) -> list[tuple[str, tuple]]:
    """``cam_widgets.grad_cam_explorer``: each method at the default layer, computed anew, and
    the first layer (the largest maps), and a setting seen before."""
    from lecture_lib import cam_widgets

    explorer, build = built(lambda: cam_widgets.grad_cam_explorer(model, images, labels))
    rows = [("Grad-CAM: build (4 images)", build)]
    for method in cam_widgets.METHODS:
        with explorer.hold():
            explorer.controls["method"].value = method
        rows.append((f"Grad-CAM: {method}, new", timed(fresh(explorer), repeats, explorer)))
    with explorer.hold():
        explorer.controls["method"].value = "Grad-CAM"
        explorer.controls["layer"].value = explorer.controls["layer"].options[0]
    rows.append(("Grad-CAM: first layer, new", timed(fresh(explorer), repeats, explorer)))
    rows.append(("Grad-CAM: cached", timed(explorer.update, repeats, explorer)))
    return rows


def fooling_and_shortcut_rows(model, images, repeats: int) -> list[tuple[str, tuple]]:
    """The explorers of lectures 08 (``fooling_widgets``) and 09 (``shortcut_widgets``)."""
    from lecture_lib.fooling_widgets import fooling_explorer
    from lecture_lib.models import load_shortcut_net
    from lecture_lib.shortcut_widgets import METHODS, shortcut_explorer

    fool, build = built(lambda: fooling_explorer(model, images))
    rows = [("fooling: build (4 images)", build)]
    for attack in ("signed step", "gradient steps"):
        with fool.hold():
            fool.controls["attack"].value = attack
        rows.append((f"fooling: {attack}, new", timed(fresh(fool), repeats, fool)))
    rows.append(("fooling: cached", timed(fool.update, repeats, fool)))

    networks = {"cheating net": load_shortcut_net(), "ShapesNet": model}
    cheat, build = built(lambda: shortcut_explorer(networks))
    rows.append(("shortcut: build (8 images, 3 marks)", build))
    for method in METHODS:
        with cheat.hold():
            cheat.controls["method"].value = method
        rows.append((f"shortcut: {method}, new", timed(fresh(cheat), repeats, cheat)))
    rows.append(("shortcut: cached", timed(cheat.update, repeats, cheat)))
    return rows


def pictures(explorer: widgets.Explorer, repeats: int) -> list[tuple[str, tuple]]:
    """The drawing alone: the whole figure drawn and encoded by Pillow, and (where the
    explorer has one) ``picture.Picture``'s render and PNG."""
    import numpy as np
    import PIL.Image

    figure = explorer.figure
    changing = getattr(getattr(explorer, "picture", None), "changing", [])

    def whole():
        for artist in changing:
            artist.set_animated(False)
        try:
            figure.canvas.draw()
            pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]
            PIL.Image.fromarray(pixels).save(io.BytesIO(), format="png", compress_level=1)
        finally:
            for artist in changing:
                artist.set_animated(True)

    rows = [("picture: whole figure drawn, Pillow PNG (ipympl)", timed(whole, 2 * repeats))]
    if changing:
        explorer.picture.forget_background()
        explorer.picture.render()  # the background, drawn again after whole()'s draws
        composed = timed(explorer.picture.show, 2 * repeats)  # render, one PNG, sent
        rows.append(("picture: changing parts on the background, PNG", composed))
    return rows


if __name__ == "__main__":
    main()
