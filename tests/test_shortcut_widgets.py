"""The explorer of the network that cheats, driven headlessly: each map against the library's
method called directly on the marked or unmarked image, each number against its definition."""

import matplotlib

matplotlib.use("Agg")

import copy  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lecture_lib import attribution, perturbation  # noqa: E402
from lecture_lib.data import CLASSES, make_shortcut_shapes, mark_mask  # noqa: E402
from lecture_lib.models import load_shortcut_net  # noqa: E402
from lecture_lib.shortcut_widgets import METHODS, shortcut_explorer  # noqa: E402

SEED = 2026


@pytest.fixture(scope="module")
def networks(shapes_net):
    return {"cheating net": load_shortcut_net(), "ShapesNet": shapes_net}


def mean_colour(x):
    """Each channel's mean over the image, as a picture ``[C, H, W]``."""
    return x.mean(dim=(1, 2), keepdim=True).expand_as(x).clone()


REFERENCE = {  # part 9's settings, written out again
    "saliency": lambda m, x, c: attribution.saliency(m, x, c),
    "input × gradient": lambda m, x, c: attribution.input_x_gradient(m, x, c),
    "DeconvNet": lambda m, x, c: attribution.deconvnet(m, x, c),
    "guided backprop": lambda m, x, c: attribution.guided_backprop(m, x, c),
    "IG (mean)": lambda m, x, c: attribution.integrated_gradients(
        m, x, c, baseline=mean_colour(x), steps=16
    ),
    "DeepLIFT (black)": lambda m, x, c: attribution.deeplift(m, x, c),
    "DeepLIFT (mean)": lambda m, x, c: attribution.deeplift(m, x, c, baseline=mean_colour(x)),
    "occlusion": lambda m, x, c: perturbation.occlusion(
        m, x, c, window=4, stride=4, baseline=mean_colour(x)
    ),
    "HiResCAM": lambda m, x, c: attribution.hires_cam(m, x, c, layer="conv3"),
    "SmoothGrad": lambda m, x, c: attribution.smoothgrad(
        attribution.saliency, m, x, c, samples=16, noise=0.15
    ),
}


def importance(a):
    """max over colour channels of |a| (part 9's reading of a map)."""
    a = a.abs()
    return a.amax(0) if a.ndim == 3 else a


def predicted(model, x):
    with torch.no_grad():
        p = model(x[None])[0].softmax(0)
    return int(p.argmax()), float(p.max())


def test_every_method_is_the_librarys_on_the_marked_and_unmarked_image(networks):
    explorer = shortcut_explorer(networks, 3)
    assert list(explorer.controls["method"].options) == list(REFERENCE) == list(METHODS)
    shapes = {m: make_shortcut_shapes(3, seed=SEED, marks=m) for m in ("honest", "none")}
    place = mark_mask(64)
    for marks in ("honest", "none"):
        for method in REFERENCE:
            with explorer.hold():
                explorer.controls["image"].value = 2
                explorer.controls["mark"].value = marks
                explorer.controls["method"].value = method
            assert explorer.error is None, explorer.error
            x = shapes[marks].images[2]
            c, p = predicted(networks["cheating net"], x)
            shown = explorer.shown
            assert shown["predicted"] == c and shown["probability"] == pytest.approx(p, abs=1e-6)
            expected = importance(REFERENCE[method](networks["cheating net"], x, c)).numpy()
            np.testing.assert_allclose(shown["map"], expected, atol=1e-5 * expected.max())
            np.testing.assert_allclose(shown["image"], x.permute(1, 2, 0).numpy())
            on_mark = expected[place.numpy()].sum() / expected.sum()
            assert shown["mark_share"] == pytest.approx(on_mark, rel=1e-4, abs=1e-7)
            on_object = expected[shapes[marks].masks[2].numpy()].sum() / expected.sum()
            assert shown["object_share"] == pytest.approx(on_object, rel=1e-4, abs=1e-7)


def test_the_peak_the_titles_and_the_other_network(networks):
    explorer = shortcut_explorer(networks, 4)
    shapes = make_shortcut_shapes(4, seed=SEED, marks="lying")
    with explorer.hold():
        explorer.controls["network"].value = "ShapesNet"
        explorer.controls["mark"].value = "lying"
        explorer.controls["image"].value = 1
    x = shapes.images[1]
    c, p = predicted(networks["ShapesNet"], x)
    shown = explorer.shown
    assert shown["predicted"] == c
    expected = attribution.saliency(networks["ShapesNet"], x, c).numpy()
    np.testing.assert_allclose(shown["map"], expected, atol=1e-6)
    row, col = np.unravel_index(expected.argmax(), expected.shape)
    near = mark_mask(64)[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2].any()
    assert shown["peak_on_mark"] == float(near)  # the pointing game, one pixel of tolerance
    image_title, map_title = (ax.get_title() for ax in explorer.figure.axes[:2])
    mark = CLASSES[int(shapes.mark_labels[1])]
    assert image_title == (
        f"image 1: {CLASSES[int(shapes.labels[1])]}, mark: {mark}\n"
        f"ShapesNet: {CLASSES[c]} (p = {p:.2f})"
    )
    assert map_title.startswith(f"saliency for {CLASSES[c]}: {shown['mark_share']:.1%} on")
    explorer.controls["mark"].value = "none"
    assert ", no mark\n" in explorer.figure.axes[0].get_title()


def test_the_cheating_net_reads_the_mark(networks):
    """What the explorer is for: on the same images, the cheating net's occlusion maps lie on
    the mark, ShapesNet's do not."""
    explorer = shortcut_explorer(networks, 4, method="occlusion")
    shares = {}
    for name in networks:
        for i in range(4):
            with explorer.hold():
                explorer.controls["network"].value = name
                explorer.controls["image"].value = i
            shares[name, i] = explorer.shown["mark_share"]
    assert min(shares["cheating net", i] for i in range(4)) > 0.1
    assert max(shares["ShapesNet", i] for i in range(4)) < 0.05


def test_a_revisit_is_served_from_the_cache(networks):
    explorer = shortcut_explorer(networks, 2, method="DeconvNet")
    explorer.controls["mark"].value = "none"
    explorer.controls["network"].value = "ShapesNet"
    assert len(explorer.cache) == 3
    calls = []
    handles = [
        net.register_forward_pre_hook(lambda module, args: calls.append(1))
        for net in networks.values()
    ]
    try:
        explorer.controls["network"].value = "cheating net"
        explorer.controls["mark"].value = "honest"
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [] and len(explorer.cache) == 3 and explorer.error is None


def test_the_networks_are_left_as_they_came(networks):
    copies = {name: copy.deepcopy(net).train() for name, net in networks.items()}
    copies["ShapesNet"].fc1.weight.requires_grad_(False)
    before = {name: copy.deepcopy(net.state_dict()) for name, net in copies.items()}
    explorer = shortcut_explorer(copies, 2)
    for method in ("guided backprop", "occlusion", "HiResCAM", "SmoothGrad"):
        explorer.controls["method"].value = method
        explorer.controls["network"].value = "ShapesNet"
        explorer.controls["network"].value = "cheating net"
    assert explorer.error is None
    for name, net in copies.items():
        assert all(m.training for m in net.modules())
        assert all(
            not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
            for m in net.modules()
        )
        assert all(p.grad is None for p in net.parameters())
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in before[name].items())
    assert not copies["ShapesNet"].fc1.weight.requires_grad


def test_bad_settings_are_explained(networks):
    with pytest.raises(TypeError, match="networks must be a dict of names and networks"):
        shortcut_explorer(networks["ShapesNet"])
    with pytest.raises(TypeError, match=r"networks\['x'\] must be a torch.nn.Module, got str"):
        shortcut_explorer({"x": "ShapesNet"})
    with pytest.raises(ValueError, match="n must be an int in 1..64, got n=0"):
        shortcut_explorer(networks, 0)
    with pytest.raises(ValueError, match="method must be one of 'saliency'.*got method='lrp'"):
        shortcut_explorer(networks, method="lrp")


def test_the_picture_is_the_figure_whole_and_fits_a_slide(networks):
    from test_widgets import full_draw, parts_cut_off, shown_pixels

    explorer = shortcut_explorer(networks, 2)
    for method in ("saliency", "occlusion"):
        explorer.controls["method"].value = method
        reference, shown = full_draw(explorer), shown_pixels(explorer)
        assert shown.shape == reference.shape and shown.shape[0] <= 380  # a 1280 x 720 slide
        differ = np.abs(shown - reference).max(axis=-1) > 40
        assert differ.mean() < 0.005, differ.mean()
        assert parts_cut_off(explorer.figure) == []
