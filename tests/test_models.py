import pytest
import torch
from torch import nn

from lecture_lib import models
from lecture_lib.data import make_shapes
from lecture_lib.models import ShapesNet, load_imagenet, load_shapes_net
from lecture_lib.train import TRAIN_SEED, VALIDATION_SEED, accuracy

ALLOWED = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Linear, nn.Flatten, nn.Dropout, ShapesNet)


def test_shipped_weights_reach_97_percent_on_unseen_shapes(shapes_net):
    unseen = 2026
    assert unseen not in (TRAIN_SEED, VALIDATION_SEED)
    images, labels, _ = make_shapes(2000, seed=unseen)
    assert accuracy(shapes_net, images, labels) >= 0.97


def test_loaded_in_eval_mode_on_cpu(shapes_net):
    assert not shapes_net.training
    assert all(not m.training for m in shapes_net.modules())
    assert next(shapes_net.parameters()).device.type == "cpu"


def test_architecture_uses_only_the_lectures_layer_types():
    model = ShapesNet()
    assert all(isinstance(m, ALLOWED) for m in model.modules())
    names = dict(model.named_children())
    for name in ["conv1", "conv2", "conv3", "conv4", "relu1", "pool1", "fc1", "fc2"]:
        assert name in names
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_weights_file_is_small():
    from lecture_lib.models import WEIGHTS_PATH

    assert WEIGHTS_PATH.stat().st_size <= 5 * 2**20


def test_missing_weights_name_the_file_and_the_command(tmp_path):
    missing = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match="nothing.pt") as info:
        load_shapes_net(path=missing)
    assert "python -m lecture_lib.train" in str(info.value)


def test_corrupt_weights_name_the_file_and_the_command(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt.pt") as info:
        load_shapes_net(path=corrupt)
    assert "python -m lecture_lib.train" in str(info.value)


def test_imagenet_never_downloads_unasked(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_imagenet("vgg16")
    with pytest.raises(ValueError, match="unknown model name"):
        load_imagenet("no_such_net")
    assert not any(tmp_path.rglob("*.pth"))


def test_load_model_by_notebook_name():
    from lecture_lib.data import CLASSES
    from lecture_lib.models import load_model

    model, names = load_model("shapes")
    assert isinstance(model, ShapesNet) and names == list(CLASSES) and not model.training


def test_normalize_lets_imagenet_models_take_images_in_0_1():
    from lecture_lib.models import IMAGENET_MEAN, IMAGENET_STD, Normalize

    layer = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize(
    "load, name, command",
    [
        (models.load_shapes_net, "The ShapesNet weights", "python -m lecture_lib.train"),
        (models.load_shortcut_net, "The weights of the shortcut network", "--shortcut"),
    ],
)
def test_missing_or_broken_weights_name_the_command_that_rebuilds_them(
    load, name, command, tmp_path
):
    with pytest.raises(FileNotFoundError, match=f"{name} are missing") as missing:
        load(path=tmp_path / "absent.pt")
    assert command in str(missing.value)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=f"{name} at .* could not be loaded") as unreadable:
        load(path=broken)
    assert command in str(unreadable.value)
