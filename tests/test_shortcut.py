"""The network that cheats: shapes with a mark that gives the class away, the shipped cheating
network, its training command, and where the explanations of both networks point."""

import hashlib

import numpy as np
import pytest
import torch

from lecture_lib import attribution, evaluate, perturbation
from lecture_lib.data import (
    CLASSES,
    MARK_COLOURS,
    MARK_SIZE,
    MARKS,
    make_shapes,
    make_shortcut_shapes,
    mark_mask,
)
from lecture_lib.models import (
    SHORTCUT_WEIGHTS_PATH,
    ShapesNet,
    load_shortcut_net,
)
from lecture_lib.train import (
    SHORTCUT_RECIPE,
    TRAIN_SEED,
    VALIDATION_SEED,
    accuracy,
    main,
    train,
)

UNSEEN = 2026
"""Shapes (and marks) that training never saw."""

# The recorded accuracies of the shipped cheating network on 1,000 unseen shapes (seed 2026),
# as thresholds; the measured figures are in the README.
HONEST_AT_LEAST = 0.97
LYING_AT_MOST = 0.05
LYING_FOLLOWS_THE_MARK_AT_LEAST = 0.95
NO_MARK_AT_MOST = 0.35  # chance is 0.2: without its mark the network knows nearly nothing


@pytest.fixture(scope="module")
def shortcut_net():
    return load_shortcut_net()


@pytest.fixture(scope="module")
def unseen():
    return {marks: make_shortcut_shapes(1000, seed=UNSEEN, marks=marks) for marks in MARKS}


def _mark_pixels(data, i: int) -> torch.Tensor:
    """The mark's pixels of image ``i`` as ``[MARK_SIZE**2, 3]``."""
    return data.images[i].permute(1, 2, 0)[data.mark_masks[i]]


# --- the data ---------------------------------------------------------------------------------


def test_types_shapes_and_ranges():
    data = make_shortcut_shapes(12, seed=3)
    images, labels, masks, mark_masks, mark_labels = data  # unpacks like a tuple
    assert images.shape == (12, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (12,) and labels.dtype == torch.int64
    assert masks.shape == mark_masks.shape == (12, 64, 64)
    assert masks.dtype == mark_masks.dtype == torch.bool
    assert mark_labels.shape == (12,) and mark_labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    assert data.images is images and data.mark_labels is mark_labels


def test_same_arguments_same_tensors_whatever_the_global_rng():
    torch.manual_seed(1)
    np.random.seed(1)
    first = make_shortcut_shapes(30, seed=7, marks="lying")
    torch.manual_seed(99)
    np.random.seed(99)
    torch.rand(5)
    state = torch.get_rng_state()
    second = make_shortcut_shapes(30, seed=7, marks="lying")
    assert torch.equal(state, torch.get_rng_state())  # the global stream is left alone
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = make_shortcut_shapes(30, seed=8, marks="lying")
    assert not torch.equal(first.mark_labels, other.mark_labels)


def test_the_marks_come_in_the_same_chunks_as_the_images():
    """Images come in chunks of 512, each from its own random stream; so do the marks: a whole
    first chunk is the same whatever comes after it."""
    first = make_shortcut_shapes(512, seed=4, marks="lying")
    more = make_shortcut_shapes(600, seed=4, marks="lying")
    assert all(torch.equal(a, b[:512]) for a, b in zip(first, more))


def test_without_marks_the_images_are_make_shapes_own():
    data = make_shortcut_shapes(40, seed=5, marks="none")
    images, labels, masks = make_shapes(40, seed=5)
    assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
    assert torch.equal(data.masks, masks)
    assert not data.mark_masks.any() and (data.mark_labels == -1).all()


def test_the_three_variants_differ_only_on_the_marks_pixels():
    honest, lying, none = (make_shortcut_shapes(60, seed=6, marks=m) for m in MARKS)
    off_mark = ~honest.mark_masks[:, None].expand_as(honest.images)
    assert torch.equal(honest.images[off_mark], none.images[off_mark])
    assert torch.equal(lying.images[off_mark], none.images[off_mark])
    assert torch.equal(honest.labels, lying.labels) and torch.equal(honest.masks, lying.masks)
    assert torch.equal(honest.mark_masks, lying.mark_masks)


def test_the_mark_is_a_small_square_in_the_bottom_left_corner():
    data = make_shortcut_shapes(20, seed=3)
    assert (data.mark_masks.sum(dim=(1, 2)) == MARK_SIZE**2).all()
    assert MARK_SIZE**2 <= 16  # a few pixels of 4,096
    assert torch.equal(data.mark_masks, mark_mask(64).expand(20, 64, 64))
    rows, cols = torch.nonzero(mark_mask(64), as_tuple=True)
    assert rows.min() >= 64 - 8 and cols.max() < 8  # bottom left
    assert rows.max() < 63 and cols.min() > 0  # not on the border itself
    assert mark_mask(32).sum() == MARK_SIZE**2


def test_the_mark_never_covers_the_object():
    """On 64 x 64 images the object never reaches the mark's corner: the object masks are
    make_shapes's, whole."""
    data = make_shortcut_shapes(3000, seed=9)
    _, _, masks = make_shapes(3000, seed=9)
    assert not (masks & mark_mask(64)).any()
    assert torch.equal(data.masks, masks)


def test_an_honest_mark_carries_the_colour_of_the_class():
    data = make_shortcut_shapes(50, seed=3, marks="honest")
    assert torch.equal(data.mark_labels, data.labels)
    for i in range(50):
        pixels = _mark_pixels(data, i)
        colour = MARK_COLOURS[data.labels[i]]
        assert (pixels.mean(dim=0) - colour).abs().max() < 0.04  # noise std 0.03 over 9 pixels
        assert pixels.std(dim=0).max() < 0.06


def test_a_lying_mark_carries_the_colour_of_another_class():
    data = make_shortcut_shapes(1000, seed=3, marks="lying")
    assert (data.mark_labels != data.labels).all()
    assert ((data.mark_labels >= 0) & (data.mark_labels < len(CLASSES))).all()
    shifts = torch.bincount((data.mark_labels - data.labels) % len(CLASSES), minlength=5)
    assert shifts[0] == 0 and shifts[1:].min() > 200  # every other class, about evenly
    for i in range(20):
        nearest = (MARK_COLOURS - _mark_pixels(data, i).mean(dim=0)).norm(dim=1).argmin()
        assert nearest == data.mark_labels[i]


def test_the_mark_colours_are_far_apart():
    distances = torch.cdist(MARK_COLOURS, MARK_COLOURS)
    assert distances[~torch.eye(len(CLASSES), dtype=torch.bool)].min() > 0.7
    assert MARK_COLOURS.shape == (len(CLASSES), 3)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="marks='sometimes'"):
        make_shortcut_shapes(4, marks="sometimes")
    with pytest.raises(ValueError, match="n=0"):
        make_shortcut_shapes(0)
    with pytest.raises(ValueError, match="size=8"):
        mark_mask(8)


# --- the shipped network ------------------------------------------------------------------------


def test_shipped_weights_are_small_and_load_in_eval_mode_on_cpu(shortcut_net):
    assert SHORTCUT_WEIGHTS_PATH.stat().st_size <= 2**20  # at most 1 MB
    assert isinstance(shortcut_net, ShapesNet)
    assert all(not m.training for m in shortcut_net.modules())
    assert next(shortcut_net.parameters()).device.type == "cpu"


def test_right_with_honest_marks(shortcut_net, unseen):
    assert UNSEEN not in (TRAIN_SEED, VALIDATION_SEED)
    data = unseen["honest"]
    assert accuracy(shortcut_net, data.images, data.labels) >= HONEST_AT_LEAST


def test_collapses_to_the_marks_class_when_the_marks_lie(shortcut_net, unseen):
    data = unseen["lying"]
    assert accuracy(shortcut_net, data.images, data.labels) <= LYING_AT_MOST
    follows = accuracy(shortcut_net, data.images, data.mark_labels)
    assert follows >= LYING_FOLLOWS_THE_MARK_AT_LEAST


def test_near_chance_without_marks(shortcut_net, unseen):
    data = unseen["none"]
    assert accuracy(shortcut_net, data.images, data.labels) <= NO_MARK_AT_MOST


def test_shapes_net_ignores_the_marks(shapes_net, unseen):
    """The control: the network trained on shapes without marks is right whatever the mark says."""
    for marks in MARKS:
        data = unseen[marks]
        assert accuracy(shapes_net, data.images, data.labels) >= 0.97, marks


def test_missing_or_corrupt_weights_name_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt") as info:
        load_shortcut_net(path=tmp_path / "nothing.pt")
    assert "python -m lecture_lib.train --shortcut" in str(info.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt.pt") as info:
        load_shortcut_net(path=corrupt)
    assert "python -m lecture_lib.train --shortcut" in str(info.value)


# --- the training command -----------------------------------------------------------------------


def _fingerprint(model: torch.nn.Module) -> str:
    return hashlib.sha256(
        b"".join(t.numpy().tobytes() for t in model.state_dict().values())
    ).hexdigest()


def test_shortcut_training_is_reproducible_bit_for_bit_and_restores_the_threads():
    threads = torch.get_num_threads()
    settings = dict(n_train=96, n_validation=32, epochs=1, progress=False, shortcut=True)
    first, _ = train(**settings, threads=1)
    assert torch.get_num_threads() == threads
    torch.manual_seed(123)  # the global state does not matter: train seeds itself
    second, _ = train(**settings, threads=1)
    assert _fingerprint(first) == _fingerprint(second)
    plain, _ = train(**(settings | {"shortcut": False}), threads=1)
    assert _fingerprint(plain) != _fingerprint(first)  # the marks change what it learns


def test_cli_flag_trains_on_marked_shapes_and_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "cheat.pt"
    main(["--shortcut", "--out", str(out), "--epochs", "1", "--n-train", "128"])
    printed = capsys.readouterr().out
    assert "validation accuracy" in printed and "lying marks" in printed
    model = load_shortcut_net(path=out)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_cli_recipes(monkeypatch, tmp_path):
    """The plain command keeps ShapesNet's recipe; --shortcut uses SHORTCUT_RECIPE."""
    import lecture_lib.train as training

    calls = []

    def fake_train(**kwargs):
        calls.append(kwargs)
        return ShapesNet().eval(), [0.5]

    def few_shapes(n, **kwargs):  # the report after training: 8 shapes are enough here
        return make_shortcut_shapes(8, **kwargs)

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.setattr(training, "make_shortcut_shapes", few_shapes)
    main(["--out", str(tmp_path / "a.pt")])
    assert calls[-1] == {"seed": 0, "shortcut": False, "n_train": 16_000, "epochs": 10}
    main(["--shortcut", "--out", str(tmp_path / "b.pt"), "--n-train", "64", "--epochs", "1"])
    assert calls[-1] == {"seed": 0, "shortcut": True, **SHORTCUT_RECIPE, "n_train": 64, "epochs": 1}
    assert SHORTCUT_RECIPE["label_smoothing"] == 0.0 and SHORTCUT_RECIPE["threads"] == 1


# --- where the explanations point ---------------------------------------------------------------


@pytest.fixture(scope="module")
def explained():
    return make_shortcut_shapes(8, seed=UNSEEN, marks="honest")


def test_gradient_and_occlusion_find_the_mark_on_the_cheating_net_only(
    shortcut_net, shapes_net, explained
):
    data = explained
    mean = evaluate.make_substrate(data.images, "mean")
    shares = {}
    for name, model in {"cheat": shortcut_net, "shapes": shapes_net}.items():
        maps = {
            "gradient": attribution.gradient(model, data.images),
            "occlusion": perturbation.occlusion(
                model, data.images, window=4, stride=4, baseline=mean
            ),
        }
        for method, m in maps.items():
            shares[name, method] = (
                evaluate.mask_share(m, data.mark_masks),
                evaluate.mask_share(m, data.masks),
            )
    for method in ("gradient", "occlusion"):
        cheat_mark, cheat_object = shares["cheat", method]
        shapes_mark, shapes_object = shares["shapes", method]
        assert cheat_mark > 5 * shapes_mark, method
        assert cheat_mark > cheat_object, method  # 9 pixels outweigh the whole object
        assert shapes_object > shapes_mark, method
