"""The networks the course explains.

``ShapesNet`` is a small ConvNet made of exactly the lecture's layer types (convolution, ReLU,
max-pooling, linear), trained on the shapes data set and shipped with the package, so every
notebook and test runs offline. ``load_shortcut_net`` is the same architecture trained on shapes
with a mark that gives the class away: a network that cheats. ``load_imagenet`` is an opt-in
for instructors who have torchvision's ImageNet weights (VGG16 and friends) and want natural
photographs.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .data import CLASSES

WEIGHTS_PATH = Path(__file__).parent / "weights" / "shapes_net.pt"
REBUILD_COMMAND = (
    f"python -m lecture_lib.train --out {WEIGHTS_PATH.relative_to(Path(__file__).parent.parent)}"
)
SHORTCUT_WEIGHTS_PATH = Path(__file__).parent / "weights" / "shortcut_net.pt"
SHORTCUT_REBUILD_COMMAND = (
    "python -m lecture_lib.train --shortcut --out "
    f"{SHORTCUT_WEIGHTS_PATH.relative_to(Path(__file__).parent.parent)}"
)


class ShapesNet(nn.Sequential):
    """conv -> ReLU -> max-pool, four times, then two linear layers.

    ======  =================================  ==============
    layer   operation                          output (64x64 input)
    ======  =================================  ==============
    conv1   3x3 conv, 3 -> 16, padding 1       [16, 64, 64]
    relu1   max(x, 0)
    pool1   2x2 max-pool                       [16, 32, 32]
    conv2   3x3 conv, 16 -> 32                 [32, 32, 32]
    relu2, pool2                               [32, 16, 16]
    conv3   3x3 conv, 32 -> 64                 [64, 16, 16]
    relu3, pool3                               [64, 8, 8]
    conv4   3x3 conv, 64 -> 64                 [64, 8, 8]
    relu4, pool4                               [64, 4, 4]
    flatten                                    [1024]
    fc1     linear 1024 -> 128, relu5          [128]
    fc2     linear 128 -> 5: the class scores S_c(I)
    ======  =================================  ==============

    Inputs are images in [0, 1] (no normalisation layer), so every attribution lives in the
    same space as the picture it explains. A layer is reached by name: ``model.conv3``.
    """

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = [3, 16, 32, 64, 64]
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:]), start=1):
            layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
            layers[f"relu{i}"] = nn.ReLU()
            layers[f"pool{i}"] = nn.MaxPool2d(2)
        layers["flatten"] = nn.Flatten()
        layers["fc1"] = nn.Linear(64 * 4 * 4, 128)
        layers["relu5"] = nn.ReLU()
        layers["fc2"] = nn.Linear(128, num_classes)
        super().__init__(layers)


def load_shapes_net(
    device: str | torch.device = "cpu", path: str | Path | None = None
) -> ShapesNet:
    """The trained ShapesNet with the shipped weights, in eval mode, on ``device``."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    return _load_weights(path, "The ShapesNet weights", REBUILD_COMMAND).to(device).eval()


def load_shortcut_net(
    device: str | torch.device = "cpu", path: str | Path | None = None
) -> ShapesNet:
    """The network that cheats, in eval mode on ``device``: a ``ShapesNet`` trained on shapes
    whose small corner mark always tells the class (``data.make_shortcut_shapes``). It learned
    the mark's colour instead of the shapes: right with honest marks, wrong when the mark lies
    (the accuracies are in the README and in tests/test_shortcut.py)."""
    path = Path(path) if path is not None else SHORTCUT_WEIGHTS_PATH
    name = "The weights of the shortcut network"
    return _load_weights(path, name, SHORTCUT_REBUILD_COMMAND).to(device).eval()


def _load_weights(path: Path, name: str, rebuild: str) -> ShapesNet:
    """A ``ShapesNet`` with the weights stored at ``path``; a missing or unreadable file gets an
    error that names ``name`` and the command that rebuilds it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} are missing: no file at {path}. Rebuild them with: {rebuild}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = ShapesNet()
        model.load_state_dict(state)
    except Exception as error:  # a truncated, foreign or otherwise corrupt file
        raise RuntimeError(
            f"{name} at {path} could not be loaded ({type(error).__name__}: {error}). "
            f"Rebuild them with: {rebuild}"
        ) from error
    return model


# --- optional ImageNet models (instructors with the weights) --------------------------------


class Normalize(nn.Module):
    """``(x - mean) / std`` per colour channel: lets an ImageNet model take images in [0, 1], so
    its attributions live in the picture's own space, as ShapesNet's do."""

    pointwise = True  # each value on its own: incremental occlusion passes a changed box through

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def load_imagenet(
    name: str = "vgg16", *, download: bool = False, device: str | torch.device = "cpu"
) -> tuple[nn.Module, list[str]]:
    """A torchvision ImageNet classifier that takes images in [0, 1], and its 1000 class names.

    The model is ``nn.Sequential(Normalize(ImageNet mean, std), torchvision model)`` in eval
    mode; feed it ``data.load_image(path)`` (224 x 224). It uses weights already in the local
    torch cache (``torch.hub.get_dir()/checkpoints``); nothing is downloaded unless
    ``download=True``, and without the file the error says which file is missing and how to
    get it.
    """
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as error:
        valid = ", ".join(sorted(torchvision.models.list_models(torchvision.models)))
        raise ValueError(
            f"load_imagenet: unknown model name {name!r}. Valid torchvision names: {valid}."
        ) from error
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file() and not download:
        raise FileNotFoundError(
            f"load_imagenet: the {name} weights are not in the local torch cache (expected "
            f"{cached}). With internet access, call load_imagenet({name!r}, download=True) once, "
            f"or copy the file {Path(weights.url).name} from {weights.url} to that folder. "
            "The course's default model, ShapesNet, needs nothing: load_model('shapes')."
        )
    network = torchvision.models.get_model(name, weights=weights)
    model = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), network)
    return model.to(device).eval(), list(weights.meta["categories"])


def load_model(
    name: str = "shapes", device: str | torch.device = "cpu"
) -> tuple[nn.Module, list[str]]:
    """The model a notebook explains, by the name in its parameters cell, and its class names:
    ``"shapes"`` (the shipped ShapesNet, offline) or a torchvision ImageNet name such as
    ``"vgg16"`` (an opt-in that needs the weights, see ``load_imagenet``)."""
    if name == "shapes":
        return load_shapes_net(device), list(CLASSES)
    return load_imagenet(name, device=device)
