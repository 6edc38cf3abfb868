"""Train ShapesNet from fixed seeds: ``python -m lecture_lib.train --out PATH``.

Reproduces the shipped weights (``lecture_lib/weights/shapes_net.pt``) on a CPU: AdamW
(batch 64, learning rate rising to 1e-3 and annealed to zero, a "one-cycle" schedule; weight
decay 5e-4) on the cross-entropy with label smoothing 0.1, 16,000 generated images, 10 epochs,
with a progress bar and the accuracy on held-out shapes after each epoch.

Why weight decay and label smoothing: they keep the class scores S_c bounded and specific to
their class. Without them, the class model ascent of the lecture (maximise the unnormalised
score S_c(I)) worked for four classes, but pushing S_square up pushed S_circle up faster, so
the "typical square" came out a circle. With them, every class's model image is classified as
that class (tests/test_class_model.py), and the accuracy is as high.

``python -m lecture_lib.train --shortcut`` trains the network that cheats
(``lecture_lib/weights/shortcut_net.pt``, ``models.load_shortcut_net``): the same architecture on
shapes whose corner mark always tells the class (``data.make_shortcut_shapes(marks="honest")``),
5,000 images, 4 epochs, no label smoothing, on one CPU thread. The mark is the easiest cue, and
the network learns it instead of the shapes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import threads
from .data import make_shapes, make_shortcut_shapes
from .models import SHORTCUT_WEIGHTS_PATH, WEIGHTS_PATH, ShapesNet
from .targets import explaining, pass_size, passes

TRAIN_SEED = 1
"""Seed of the training images. Tests and notebooks use other seeds (unseen shapes)."""
VALIDATION_SEED = 2
"""Seed of the held-out images whose accuracy is printed after every epoch."""

SHORTCUT_RECIPE = {"n_train": 5_000, "epochs": 4, "label_smoothing": 0.0, "threads": 1}
"""How ``--shortcut`` trains (the other settings are ``train``'s defaults). Without label
smoothing the loss can reach zero through the mark alone, and nothing pushes the network on to
the shapes. One thread makes the result independent of the machine's number of cores."""


@threads.under_policy
def predictions(
    model: nn.Module, images: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    """The class ``model`` gives each of ``images`` (the argmax of its scores) ``[N]``,
    ``batch_size`` images per forward pass (``None``: passes of ``targets.PASS_VALUES`` input
    values). The model's mode is left as it came."""
    if len(images) == 0:
        raise ValueError("predictions: got no images; pass a batch [N, C, H, W] with N >= 1.")
    size = batch_size or pass_size(images)
    with explaining(model), torch.no_grad():
        guesses = [model(images[part]).argmax(1) for part in passes(len(images), size)]
    return torch.cat(guesses)


@threads.under_policy
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None
) -> float:
    """The share of ``images`` that ``model`` classifies as ``labels`` (``predictions``)."""
    return (predictions(model, images, batch_size) == labels).float().mean().item()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
) -> float:
    """One step of gradient descent on the cross-entropy; returns the loss before the step."""
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
    loss.backward()
    optimizer.step()
    return loss.item()


def train(
    *,
    n_train: int = 16_000,
    n_validation: int = 2_000,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    shortcut: bool = False,
    threads: int | None = None,
) -> tuple[ShapesNet, list[float]]:
    """Train a fresh ShapesNet; returns it (eval mode) and the validation accuracy per epoch.

    ``shortcut=True`` trains on ``make_shortcut_shapes(..., marks="honest")`` instead (the
    validation images carry honest marks too). ``threads`` runs the training on that many CPU
    threads (torch's setting is restored afterwards); None keeps torch's setting.
    """
    with _threads(threads):
        torch.manual_seed(seed)
        images, labels = training_data(n_train, TRAIN_SEED, shortcut)
        val_images, val_labels = training_data(n_validation, VALIDATION_SEED, shortcut)
        model = ShapesNet()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = -(-n_train // batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
        )
        order = torch.Generator().manual_seed(seed)
        history = []
        for epoch in range(1, epochs + 1):
            model.train()
            batches = torch.randperm(n_train, generator=order).split(batch_size)
            bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=True)
            for batch in bar:
                loss = train_step(model, optimizer, images[batch], labels[batch], label_smoothing)
                schedule.step()
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            history.append(accuracy(model, val_images, val_labels))
            if progress:
                tqdm.write(f"epoch {epoch}: validation accuracy {history[-1]:.2%}")
        return model.eval(), history


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """``threads`` CPU threads inside the block (None: unchanged), torch's setting restored."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def training_data(n: int, seed: int, shortcut: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of the shapes (``shortcut=True``: with honest marks) of ``seed``."""
    if shortcut:
        images, labels, *_ = make_shortcut_shapes(n, seed=seed, marks="honest")
    else:
        images, labels, _ = make_shapes(n, seed=seed)
    return images, labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shortcut",
        action="store_true",
        help="train the network that cheats: shapes with a corner mark that tells the class "
        f"(default --out {SHORTCUT_WEIGHTS_PATH.name}, {SHORTCUT_RECIPE['epochs']} epochs on "
        f"{SHORTCUT_RECIPE['n_train']:,} images)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the weights (default: the shipped file)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 (--shortcut: 4)")
    parser.add_argument(
        "--n-train", type=int, default=None, help="default: 16,000 (--shortcut: 5,000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    recipe = dict(SHORTCUT_RECIPE) if args.shortcut else {"n_train": 16_000, "epochs": 10}
    for name in ("epochs", "n_train"):
        if getattr(args, name) is not None:
            recipe[name] = getattr(args, name)
    out = args.out or (SHORTCUT_WEIGHTS_PATH if args.shortcut else WEIGHTS_PATH)

    start = time.perf_counter()
    model, history = train(seed=args.seed, shortcut=args.shortcut, **recipe)
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    print(
        f"wrote {out}: validation accuracy {history[-1]:.2%} "
        f"after {recipe['epochs']} epochs in {seconds:.0f} s"
    )
    if args.shortcut:
        for marks in ("lying", "none"):
            images, labels, *_ = make_shortcut_shapes(2_000, seed=VALIDATION_SEED, marks=marks)
            print(f"  with {marks} marks: {accuracy(model, images, labels):.2%}")


if __name__ == "__main__":
    main()
