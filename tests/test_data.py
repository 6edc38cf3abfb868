import math

import numpy as np
import pytest
import torch

from lecture_lib.data import CLASSES, class_name, make_shapes, to_hwc


def test_types_shapes_and_ranges():
    images, labels, masks = make_shapes(20, seed=3, size=48)
    assert images.shape == (20, 3, 48, 48) and images.dtype == torch.float32
    assert labels.shape == (20,) and labels.dtype == torch.int64
    assert masks.shape == (20, 48, 48) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1
    assert set(labels.tolist()) <= set(range(len(CLASSES)))
    assert len(CLASSES) >= 5


def test_same_arguments_same_tensors_whatever_the_global_rng():
    torch.manual_seed(1)
    np.random.seed(1)
    first = make_shapes(30, seed=7)
    torch.manual_seed(99)
    np.random.seed(99)
    torch.rand(5)
    second = make_shapes(30, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = make_shapes(30, seed=8)
    assert not torch.equal(first[0], other[0])


def test_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    make_shapes(10, seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_classes_balanced():
    _, labels, _ = make_shapes(1003, seed=0)
    counts = torch.bincount(labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1


def test_mask_covers_exactly_the_object():
    """Re-draw each object over two different flat backgrounds: the pixels that change with the
    object's colour are its mask. Here: the object's pixels all carry one colour (plus the
    sensor noise), and the mask's share matches the analytic area of the shape."""
    images, labels, masks = make_shapes(200, seed=5)
    for image, mask in zip(images[:50], masks[:50]):
        inside = image[:, mask]
        assert inside.std(dim=1).max() < 0.05  # one colour under noise of std 0.03
        outside_mean = image[:, ~mask].mean(dim=1)
        assert (inside.mean(dim=1) - outside_mean).abs().max() > 0.05  # visible against the rest
    # Objects are at least a fifth of the image across and lie fully inside it.
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert xs.min() > 0 and ys.min() > 0 and xs.max() < 63 and ys.max() < 63
    widths = [(m.any(0).nonzero().max() - m.any(0).nonzero().min() + 1).item() for m in masks]
    assert min(widths) >= 64 / 5


def test_circle_area_matches_geometry():
    images, labels, masks = make_shapes(400, seed=11)
    circles = masks[labels == CLASSES.index("circle")]
    # Each circle's area is pi r^2 with r in [0.2, 0.32] * 0.85 * 64: compare with its extent.
    for mask in circles[:20]:
        width = mask.any(0).sum().item()
        assert abs(mask.sum().item() - math.pi * width**2 / 4) < 0.12 * mask.sum().item()


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="n=0"):
        make_shapes(0)
    with pytest.raises(ValueError, match="n=-3"):
        make_shapes(-3)
    with pytest.raises(ValueError, match="size=8"):
        make_shapes(4, size=8)


def test_vectorised_speed_smoke():
    # 2,000 images must not take long (10,000 take a few seconds on 2 cores). CPU time, not
    # wall time: a machine busy with other work must not fail it, a per-image loop still would.
    import time

    start = time.process_time()
    make_shapes(2000, seed=0)
    assert time.process_time() - start < 10


def test_display_helpers():
    images, labels, _ = make_shapes(2, seed=0)
    assert to_hwc(images[0]).shape == (64, 64, 3)
    assert to_hwc(images[0, :1]).shape == (64, 64)
    assert class_name(labels[0]) in CLASSES
    with pytest.raises(ValueError, match="shape"):
        to_hwc(images)


def test_load_image_resizes_and_crops(tmp_path):
    from PIL import Image

    from lecture_lib.data import load_image

    array = (np.arange(120 * 80 * 3) % 256).astype(np.uint8).reshape(80, 120, 3)
    Image.fromarray(array).save(tmp_path / "photo.png")
    image = load_image(tmp_path / "photo.png", size=32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert load_image(tmp_path / "photo.png", size=None).shape == (3, 80, 120)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_sample_photos_are_offline_natural_images():
    from lecture_lib.data import sample_photos

    photos = sample_photos(("chelsea", "coffee"), size=64)
    assert photos.shape == (2, 3, 64, 64)
    assert photos.std() > 0.1  # real pictures, not blank
