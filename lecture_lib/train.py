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
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import make_shapes
from .models import WEIGHTS_PATH, ShapesNet

TRAIN_SEED = 1
"""Seed of the training images. Tests and notebooks use other seeds (unseen shapes)."""
VALIDATION_SEED = 2
"""Seed of the held-out images whose accuracy is printed after every epoch."""


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
) -> float:
    """The share of ``images`` that ``model`` classifies as ``labels``."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size])
            correct += (logits.argmax(1) == labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


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
) -> tuple[ShapesNet, list[float]]:
    """Train a fresh ShapesNet; returns it (eval mode) and the validation accuracy per epoch."""
    torch.manual_seed(seed)
    images, labels, _ = make_shapes(n_train, seed=TRAIN_SEED)
    val_images, val_labels, _ = make_shapes(n_validation, seed=VALIDATION_SEED)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="where to write the weights")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=16_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model, history = train(epochs=args.epochs, n_train=args.n_train, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(
        f"wrote {args.out}: validation accuracy {history[-1]:.2%} "
        f"after {args.epochs} epochs in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
