"""The course's figures: what each function draws, how maps are coloured, and clear errors."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lecture_lib import attribution, evaluate, plot  # noqa: E402
from lecture_lib.data import CLASSES, make_shapes  # noqa: E402

# The lecture's worked ReLU example ("Difference in backpropagating through ReLU").
FORWARD_INPUT = [[1, -1, 5], [2, -5, -7], [-3, 2, 4]]
GRAD_FROM_ABOVE = [[-2, 3, -1], [6, -3, 1], [2, -1, 3]]
FORWARD_OUTPUT = [[1, 0, 5], [2, 0, 0], [0, 2, 4]]
LECTURE_TABLES = {
    "gradient": [[-2, 0, -1], [6, 0, 0], [0, -1, 3]],
    "deconvnet": [[0, 3, 0], [6, 0, 1], [2, 0, 3]],
    "guided": [[0, 0, 0], [6, 0, 0], [0, 0, 3]],
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def images():
    return make_shapes(5, seed=11, size=16)[0]


def image_axes(fig: Figure) -> list:
    """The axes that show a picture (colorbars and removed grid cells do not count)."""
    return [ax for ax in fig.axes if ax.images]


def shown(ax) -> np.ndarray:
    """The array the axes' last image displays."""
    return np.asarray(ax.images[-1].get_array())


def one_new_figure(draw):
    """Call ``draw`` and check that it made exactly one pyplot figure and returned it."""
    before = set(plt.get_fignums())
    fig = draw()
    assert isinstance(fig, Figure)
    assert len(set(plt.get_fignums()) - before) == 1
    return fig


def signed_map(seed=0, shape=(12, 12)):
    return np.random.default_rng(seed).normal(size=shape)


# --- show_images ------------------------------------------------------------------------------


def test_show_images_batch_one_axes_per_image_with_titles_and_no_ticks(images):
    titles = [f"picture {k}" for k in range(5)]
    fig = one_new_figure(lambda: plot.show_images(images, titles, ncols=3))
    axes = image_axes(fig)
    assert len(axes) == 5 and len(fig.axes) == 5  # the sixth grid cell is removed
    assert [ax.get_title() for ax in axes] == titles
    assert not any(ax.axison for ax in axes)
    np.testing.assert_allclose(shown(axes[2]), images[2].permute(1, 2, 0).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "make, count, grey",
    [
        (lambda x: x[0], 1, False),  # one RGB tensor [3, H, W]
        (lambda x: x[0].numpy(), 1, False),  # one RGB array
        (lambda x: x.numpy(), 5, False),  # a numpy batch
        (lambda x: x[0, 0], 1, True),  # grey [H, W]
        (lambda x: x[0, :1], 1, True),  # grey [1, H, W]
        (lambda x: x[:, 0], 5, True),  # a batch of grey maps [N, H, W]
        (lambda x: x[:, :1], 5, True),  # a grey batch [N, 1, H, W]
        (lambda x: [x[0], x[1, 0].numpy()], 2, None),  # a list of mixed images
    ],
)
def test_show_images_accepts_tensors_arrays_batches_singles_rgb_and_grey(images, make, count, grey):
    fig = plot.show_images(make(images))
    axes = image_axes(fig)
    assert len(axes) == count
    if grey is not None:
        assert all((shown(ax).ndim == 2) == grey for ax in axes)
    if grey:
        assert axes[0].images[0].get_cmap().name == "gray"


def test_show_images_bad_input_is_explained(images):
    with pytest.raises(ValueError, match=r"C = 1 or 3.*\(2, 4, 16, 16\)"):
        plot.show_images(torch.rand(2, 4, 16, 16))
    with pytest.raises(ValueError, match="got shape"):
        plot.show_images(torch.rand(1, 1, 3, 16, 16))
    with pytest.raises(ValueError, match="outside \\[0, 1\\].*rescale=True"):
        plot.show_images(images * 2 - 0.5)
    with pytest.raises(ValueError, match="titles must be a list of 5"):
        plot.show_images(images, titles=["a", "b"])
    with pytest.raises(ValueError, match="ncols must be a positive int"):
        plot.show_images(images, ncols=0)
    with pytest.raises(ValueError, match="NaN"):
        plot.show_images(torch.full((3, 4, 4), float("nan")))


def test_show_images_rescale_stretches_each_image(images):
    fig = plot.show_images(images[:2] * 4 - 1, rescale=True)
    for ax in image_axes(fig):
        assert shown(ax).min() == pytest.approx(0) and shown(ax).max() == pytest.approx(1)


# --- heatmap: the colour conventions --------------------------------------------------------


def test_signed_map_gets_a_diverging_colormap_centred_at_zero():
    a = signed_map()
    fig = one_new_figure(lambda: plot.heatmap(a, title="gradient"))
    (ax,) = image_axes(fig)
    vmin, vmax = ax.images[0].get_clim()
    assert vmin == -vmax
    assert vmax == pytest.approx(np.percentile(np.abs(a), 99.5))
    assert ax.images[0].get_cmap().name == plot.DIVERGING
    assert ax.get_title() == "gradient" and not ax.axison
    assert len(fig.axes) == 2  # the map and its colorbar


def test_non_negative_map_gets_a_sequential_colormap_from_zero():
    a = np.abs(signed_map(1))
    (ax,) = image_axes(plot.heatmap(torch.from_numpy(a)))
    assert ax.images[0].get_cmap().name == plot.SEQUENTIAL
    assert ax.images[0].get_clim() == pytest.approx((0.0, np.percentile(a, 99.5)))


def test_percentile_clipping_ignores_one_extreme_pixel():
    a = signed_map(2, (40, 40))
    a[0, 0] = 1000.0
    vmin, vmax = image_axes(plot.heatmap(a))[0].images[0].get_clim()
    assert vmax < 10 and vmin == -vmax
    vmin, vmax = image_axes(plot.heatmap(a, clip=100))[0].images[0].get_clim()
    assert vmax == pytest.approx(1000.0)


def test_signed_can_be_forced_either_way():
    a = np.abs(signed_map(3))
    vmin, vmax = image_axes(plot.heatmap(a, signed=True))[0].images[0].get_clim()
    assert vmin == -vmax
    b = signed_map(4)
    (ax,) = image_axes(plot.heatmap(b, signed=False))
    np.testing.assert_allclose(shown(ax), np.abs(b))  # magnitudes
    assert ax.images[0].get_cmap().name == plot.SEQUENTIAL


def test_three_channel_attribution_reductions():
    a = np.random.default_rng(5).normal(size=(3, 10, 10))
    np.testing.assert_allclose(shown(image_axes(plot.heatmap(a))[0]), a.sum(axis=0))
    (ax,) = image_axes(plot.heatmap(torch.from_numpy(a), reduce="max"))
    np.testing.assert_allclose(shown(ax), np.abs(a).max(axis=0))
    assert ax.images[0].get_cmap().name == plot.SEQUENTIAL
    fig = plot.heatmap(a, reduce="rgb", clip=100)
    rgb = shown(image_axes(fig)[0])
    np.testing.assert_allclose(rgb, 0.5 + a.transpose(1, 2, 0) / (2 * np.abs(a).max()))
    assert len(fig.axes) == 1  # no colorbar for an RGB picture


def test_heatmap_accepts_one_channel_and_draws_into_given_axes():
    fig, ax = plt.subplots()
    a = signed_map(6)[None]
    assert plot.heatmap(a, ax=ax, colorbar=False) is fig
    np.testing.assert_allclose(shown(ax), a[0])


def test_all_zero_map_still_gets_finite_limits():
    vmin, vmax = image_axes(plot.heatmap(np.zeros((5, 5))))[0].images[0].get_clim()
    assert np.isfinite([vmin, vmax]).all() and vmax > vmin


def test_heatmap_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\).*attributions\[i\]"):
        plot.heatmap(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[H, W\], \[1, H, W\] or \[3, H, W\]"):
        plot.heatmap(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="clip must be a percentile"):
        plot.heatmap(np.ones((4, 4)), clip=0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        plot.heatmap(np.ones((3, 4, 4)), reduce="mean")
    with pytest.raises(ValueError, match="reduce='rgb' needs a 3-channel"):
        plot.heatmap(np.ones((4, 4)), reduce="rgb")
    with pytest.raises(TypeError, match="tensor or a numpy array"):
        plot.heatmap("not a map")


# --- overlay --------------------------------------------------------------------------------


def test_overlay_draws_the_map_over_the_greyed_image(images):
    a = np.zeros((16, 16))
    a[4:8, 4:8] = 1.0
    a[10, 10] = -2.0
    fig = one_new_figure(lambda: plot.overlay(images[0], a, alpha=0.8))
    (ax,) = image_axes(fig)
    grey, heat = ax.images
    assert shown(ax).shape == (16, 16)
    assert np.asarray(grey.get_array()).ndim == 2  # the image, in grey
    alpha = np.asarray(heat.get_alpha())
    assert alpha[0, 0] == 0 and alpha[10, 10] == pytest.approx(0.8)  # no attribution: no colour
    assert heat.get_clim()[0] == -heat.get_clim()[1]


def test_overlay_sizes_must_match(images):
    with pytest.raises(ValueError, match="must match"):
        plot.overlay(images[0], np.ones((8, 8)))


# --- overlay_grid ---------------------------------------------------------------------------


def test_overlay_grid_one_overlay_per_image_with_titles(images):
    maps = torch.rand(5, 3, 16, 16)
    titles = [f"image {k}" for k in range(5)]
    fig = one_new_figure(lambda: plot.overlay_grid(images, maps, titles, ncols=3, title="all"))
    axes = image_axes(fig)
    assert len(axes) == 5 and len(fig.axes) == 5  # no colorbars, the sixth cell removed
    assert [ax.get_title() for ax in axes] == titles
    assert fig.get_suptitle() == "all"
    for ax, image, m in zip(axes, images, maps):
        grey, heat = ax.images
        expected_grey = image.permute(1, 2, 0).numpy() @ np.array([0.299, 0.587, 0.114])
        np.testing.assert_allclose(grey.get_array(), expected_grey, atol=1e-6)
        np.testing.assert_allclose(heat.get_array(), m.sum(0).numpy(), rtol=1e-5)  # reduce="sum"
        assert heat.get_cmap().name == plot.SEQUENTIAL
        assert heat.get_clim() == pytest.approx((0, np.percentile(m.sum(0).numpy(), 99.5)))


def test_overlay_grid_draws_like_overlay(images):
    a = signed_map(7, (16, 16))
    single = plot.overlay(images[2], a, colorbar=False)
    grid = plot.overlay_grid(images[2:3], a[None])
    (one,), (other,) = image_axes(single), image_axes(grid)
    for left, right in zip(one.images, other.images):
        np.testing.assert_array_equal(left.get_array(), right.get_array())
        np.testing.assert_array_equal(left.get_alpha(), right.get_alpha())
        assert left.get_clim() == right.get_clim()


def test_overlay_grid_one_signed_map_makes_every_map_signed(images):
    maps = np.abs(np.random.default_rng(8).normal(size=(4, 16, 16)))
    maps[2, 0, 0] = -0.5
    for ax in image_axes(plot.overlay_grid(images[:4], maps)):
        heat = ax.images[1]
        assert heat.get_cmap().name == plot.DIVERGING
        assert heat.get_clim()[0] == -heat.get_clim()[1]
    for ax in image_axes(plot.overlay_grid(images[:4], maps, signed=False)):
        assert ax.images[1].get_cmap().name == plot.SEQUENTIAL


def test_overlay_grid_default_is_one_row_of_up_to_eight():
    x = torch.rand(10, 3, 8, 8)
    fig = plot.overlay_grid(x, torch.rand(10, 8, 8))
    fig.canvas.draw()
    rows = sorted({round(ax.get_position().y0, 3) for ax in image_axes(fig)})
    assert len(rows) == 2
    top = [ax for ax in image_axes(fig) if round(ax.get_position().y0, 3) == rows[1]]
    assert len(top) == 8


def test_overlay_grid_bad_input_is_explained(images):
    with pytest.raises(
        ValueError, match=r"overlay_grid: attributions has shape \(3, 16, 16\).*5 images"
    ):
        plot.overlay_grid(images, torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="overlay_grid: the attribution is 8 x 8 pixels"):
        plot.overlay_grid(images[:2], torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="titles must be a list of 2"):
        plot.overlay_grid(images[:2], torch.rand(2, 16, 16), ["one"])
    with pytest.raises(ValueError, match="overlay_grid: reduce='rgb' cannot be overlaid"):
        plot.overlay_grid(images[:2], torch.rand(2, 3, 16, 16), reduce="rgb")
    with pytest.raises(ValueError, match="ncols must be a positive int"):
        plot.overlay_grid(images[:2], torch.rand(2, 16, 16), ncols=0)


# --- feature maps and filters -----------------------------------------------------------------


def test_feature_map_grid_one_axes_per_channel():
    maps = torch.rand(10, 6, 6)
    fig = one_new_figure(lambda: plot.feature_map_grid(maps, ncols=4))
    axes = image_axes(fig)
    assert len(axes) == 10 and len(fig.axes) == 10
    assert axes[7].get_title() == "channel 7"
    np.testing.assert_allclose(shown(axes[7]), maps[7].numpy(), rtol=1e-6)
    assert len(image_axes(plot.feature_map_grid(maps[None].numpy()))) == 10  # [1, C, H, W]


def test_feature_map_grid_shared_scale_has_one_colorbar():
    maps = torch.rand(4, 6, 6) * torch.arange(1, 5).view(4, 1, 1)
    fig = plot.feature_map_grid(maps, shared_scale=True)
    limits = {ax.images[0].get_clim() for ax in image_axes(fig)}
    assert len(limits) == 1 and len(fig.axes) == 5


@pytest.mark.parametrize("channels", [8, 5])
def test_feature_map_grid_one_row_colorbar_sits_beside_the_maps_at_their_height(channels):
    fig = plot.feature_map_grid(torch.rand(channels, 6, 6), shared_scale=True)
    fig.canvas.draw()
    maps = [ax.get_position() for ax in image_axes(fig)]
    (bar,) = [ax.get_position() for ax in fig.axes if not ax.images]
    height = max(box.y1 for box in maps) - min(box.y0 for box in maps)
    assert bar.height >= 0.9 * height
    gap_inches = (bar.x0 - max(box.x1 for box in maps)) * fig.get_figwidth()
    assert 0 <= gap_inches < 0.25


def test_feature_map_grid_bad_shape():
    with pytest.raises(ValueError, match=r"one image's feature maps.*maps\[i\]"):
        plot.feature_map_grid(torch.rand(2, 3, 6, 6))


def test_mosaic_tiles_maps_with_nan_gaps():
    maps = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    tiled = plot.mosaic(maps, ncols=2, pad=1)
    assert tiled.shape == (3 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(tiled[3:5, 4:7], maps[3])  # row 1, column 1
    assert np.isnan(tiled[2]).all() and np.isnan(tiled[6:, 4:]).all()  # gaps, empty cell


def test_filter_grid_shows_filters_in_unit_range_as_they_are():
    filters = torch.rand(16, 3, 3, 3)
    fig = one_new_figure(lambda: plot.filter_grid(filters))
    axes = image_axes(fig)
    assert len(axes) == 16
    np.testing.assert_allclose(shown(axes[5]), filters[5].permute(1, 2, 0).numpy(), rtol=1e-6)


def test_filter_grid_stretches_raw_weights_and_accepts_grey():
    weights = torch.randn(6, 3, 5, 5)
    values = np.stack([shown(ax) for ax in image_axes(plot.filter_grid(weights, ncols=3))])
    assert values.min() == pytest.approx(0) and values.max() == pytest.approx(1)
    assert len(image_axes(plot.filter_grid(torch.rand(4, 1, 3, 3)))) == 4
    with pytest.raises(ValueError, match=r"\[out, 3, k, k\].*filters\[:, i : i \+ 1\]"):
        plot.filter_grid(torch.rand(8, 16, 3, 3))


# --- compare_methods ------------------------------------------------------------------------


def test_compare_methods_rows_are_images_columns_are_methods(images):
    x = images[:3]
    maps = {"gradient": torch.randn(3, 3, 16, 16), "saliency": torch.rand(3, 16, 16)}
    titles = ["first", "second", "third"]
    fig = one_new_figure(lambda: plot.compare_methods(x, maps, titles))
    axes = image_axes(fig)
    assert len(axes) == 3 * 3
    grid = np.array(fig.axes).reshape(3, 3)
    assert [grid[i, 0].get_title() for i in range(3)] == titles
    assert [grid[0, j].get_title() for j in (1, 2)] == ["gradient", "saliency"]
    for i in range(3):
        gradient_map, saliency_map = grid[i, 1].images[0], grid[i, 2].images[0]
        assert gradient_map.get_clim()[0] == -gradient_map.get_clim()[1]
        assert gradient_map.get_cmap().name == plot.DIVERGING
        assert saliency_map.get_cmap().name == plot.SEQUENTIAL
        np.testing.assert_allclose(shown(grid[i, 1]), maps["gradient"][i].sum(0).numpy(), 1e-5)


def test_compare_methods_draws_magnitudes_with_the_sequential_map(images):
    x = images[:2]
    fig = plot.compare_methods(x, {"gradient": torch.randn(2, 3, 16, 16)}, reduce="max")
    for ax in np.array(fig.axes).reshape(2, 2)[:, 1]:
        assert ax.images[0].get_cmap().name == plot.SEQUENTIAL
        assert ax.images[0].get_clim()[0] == 0


def test_compare_methods_one_image_without_batch_axis(images):
    fig = plot.compare_methods(
        images[0], {"a": torch.randn(3, 16, 16), "b": np.random.rand(16, 16)}
    )
    assert len(image_axes(fig)) == 3


def test_compare_methods_bad_input_is_explained(images):
    with pytest.raises(ValueError, match=r"'gradient'.*3 images"):
        plot.compare_methods(images[:3], {"gradient": torch.randn(2, 3, 16, 16)})
    with pytest.raises(ValueError, match="pixels but the image"):
        plot.compare_methods(images[:2], {"gradient": torch.randn(2, 3, 8, 8)})
    with pytest.raises(TypeError, match="non-empty dict"):
        plot.compare_methods(images[:2], [torch.randn(2, 3, 16, 16)])


def test_prediction_titles_give_class_and_probability(shapes_net, shapes_batch):
    images, labels, _ = shapes_batch
    shapes_net.train()
    try:
        titles = plot.prediction_titles(shapes_net, images[:4], labels[:4])
        assert shapes_net.training  # the model's mode is restored
    finally:
        shapes_net.eval()
    with torch.no_grad():
        p = torch.softmax(shapes_net(images[:4]), dim=1)
    for i, title in enumerate(titles):
        k = int(p[i].argmax())
        assert title == f"{CLASSES[k]} (p = {p[i, k]:.2f})\ntrue: {CLASSES[int(labels[i])]}"


# --- score_curve ----------------------------------------------------------------------------


def test_score_curve_one_or_several_curves():
    scores = torch.linspace(0, 3, 50)
    fig = one_new_figure(lambda: plot.score_curve(scores, title="ascent"))
    (ax,) = fig.axes
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), scores.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 51))
    fig = plot.score_curve({"circle": [1, 2, 3], "star": np.array([0.0, 1.0])})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["circle", "star"]
    assert len(plot.score_curve(np.zeros((3, 10)), labels=["a", "b", "c"]).axes[0].lines) == 3
    assert len(plot.score_curve([[1, 2], [3, 4, 5]]).axes[0].lines) == 2


def test_score_curve_bad_input():
    with pytest.raises(ValueError, match="2 labels for 3 curves"):
        plot.score_curve(np.zeros((3, 10)), labels=["a", "b"])
    with pytest.raises(ValueError, match="one curve"):
        plot.score_curve(np.zeros((2, 2, 2)))


# --- deletion and insertion curves -----------------------------------------------------------


def curves(seed, n=6, steps=10):
    """Probabilities [n, steps + 1] in [0, 1]."""
    return torch.rand(n, steps + 1, generator=torch.Generator().manual_seed(seed))


def legend_labels(fig) -> list[str]:
    (legend,) = fig.legends
    return [text.get_text() for text in legend.get_texts()]


def test_deletion_insertion_plots_the_mean_curve_against_the_share_of_pixels():
    deletion = {"gradient": curves(0), "mask (ideal)": curves(1), "random": curves(2)}
    insertion = {"gradient": curves(3), "mask (ideal)": curves(4), "random": curves(5)}
    fig = one_new_figure(
        lambda: plot.deletion_insertion(
            deletion, insertion, chance=0.2, references=["mask (ideal)", "random"]
        )
    )
    left, right = fig.axes
    assert "deletion" in left.get_title() and "insertion" in right.get_title()
    for ax, given in ((left, deletion), (right, insertion)):
        *drawn, chance = ax.lines
        assert len(drawn) == 3
        for line, values in zip(drawn, given.values()):
            np.testing.assert_allclose(line.get_xdata(), np.arange(11) / 10)
            np.testing.assert_allclose(line.get_ydata(), values.numpy().mean(axis=0), rtol=1e-6)
        assert list(chance.get_ydata()) == [0.2, 0.2]  # the chance line, in both panels
    gradient, ideal, random = left.lines[:3]
    assert ideal.get_linestyle() == "--" and ideal.get_color() == "black"
    assert random.get_linestyle() == ":" and random.get_color() == "0.55"
    assert gradient.get_linestyle() == "-" and gradient.get_color() == plot.PALETTE[0]
    assert right.lines[0].get_color() == gradient.get_color()  # the same colour in both panels
    assert legend_labels(fig) == ["gradient", "mask (ideal)", "random"]


def test_deletion_insertion_colours_methods_in_order_without_grey():
    names = [f"method {k}" for k in range(4)]
    fig = plot.deletion_insertion(
        {n: curves(k) for k, n in enumerate(names)}, {"method 0": curves(9)}
    )
    colours = [line.get_color() for line in fig.axes[0].lines]
    assert colours == list(plot.PALETTE[:4])
    assert all(c != plt.cm.tab10.colors[7] for c in plot.PALETTE)  # grey is for references
    assert legend_labels(fig) == names
    assert len(fig.axes[1].lines) == 1 and fig.axes[1].lines[0].get_color() == plot.PALETTE[0]


def test_deletion_insertion_accepts_one_curve_and_numpy():
    curve = np.linspace(1, 0, 21)
    fig = plot.deletion_insertion({"a": curve}, {"a": curve[::-1].copy()})
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), np.linspace(0, 1, 21))
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), curve[::-1])


def test_deletion_insertion_bad_input_is_explained():
    good = {"a": curves(0)}
    with pytest.raises(ValueError, match=r"references \['mask'\] are not among the curves"):
        plot.deletion_insertion(good, good, references=["mask"])
    with pytest.raises(ValueError, match=r"deletion\['a'\] has values in .*probabilities"):
        plot.deletion_insertion({"a": curves(0) * 5}, good)
    with pytest.raises(ValueError, match=r"insertion\['a'\] must be curves \[N, steps \+ 1\]"):
        plot.deletion_insertion(good, {"a": torch.rand(2, 3, 4)})
    with pytest.raises(TypeError, match="deletion must be a non-empty dict"):
        plot.deletion_insertion([curves(0)], good)
    with pytest.raises(ValueError, match="chance must be a probability"):
        plot.deletion_insertion(good, good, chance=5)


# --- the randomization test -------------------------------------------------------------------


def fake_result(seed, layers=("fc2", "fc1", "conv1"), n=3, size=8, cascade=True):
    generator = torch.Generator().manual_seed(seed)
    spearman = torch.rand(len(layers), n, generator=generator) * 2 - 1
    spearman[0, 1] = float("nan")  # a constant map has no ranking
    return evaluate.RandomizationResult(
        list(layers),
        spearman,
        torch.rand(n, size, size, generator=generator),
        torch.rand(len(layers), n, size, size, generator=generator),
        cascade,
    )


def test_randomization_curves_start_at_one_and_follow_the_mean_correlation():
    results = {"gradient": fake_result(0), "guided": fake_result(1)}
    fig = one_new_figure(lambda: plot.randomization_curves(results))
    (ax,) = fig.axes
    lines = [line for line in ax.lines if line.get_marker() == "o"]
    assert [line.get_label() for line in lines] == ["gradient", "guided"]
    for line, result in zip(lines, results.values()):
        rho = result.spearman.numpy()
        expected = [1.0, *np.nanmean(rho, axis=1)]  # NaN (constant map) left out
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)
        np.testing.assert_array_equal(line.get_xdata(), np.arange(4))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["trained", "fc2", "fc1", "conv1"]
    assert "logits down" in ax.get_xlabel()
    alone = plot.randomization_curves({"gradient": fake_result(0, cascade=False)})
    assert "one layer" in alone.axes[0].get_xlabel()


def test_randomization_maps_rows_are_methods_columns_the_stages():
    results = {"gradient": fake_result(0), "guided": fake_result(1)}
    image = torch.rand(3, 8, 8)
    fig = one_new_figure(lambda: plot.randomization_maps(results, image, 1, title="image 1"))
    grid = np.array(fig.axes).reshape(2, 5)
    np.testing.assert_allclose(shown(grid[0, 0]), image.permute(1, 2, 0).numpy(), rtol=1e-6)
    assert not grid[1, 0].images  # the image only once, in the first row
    assert [ax.get_title() for ax in grid[0]] == ["image", "trained", "… fc2", "… fc1", "… conv1"]
    assert fig.get_suptitle() == "image 1"
    for row, (name, result) in zip(grid, results.items()):
        assert name in [t.get_text() for t in row[1].texts]
        np.testing.assert_allclose(shown(row[1]), result.original[1].numpy(), rtol=1e-6)
        assert row[1].images[0].get_cmap().name == plot.SEQUENTIAL
        assert "ρ = 1.00" in [t.get_text() for t in row[1].texts]
        for k, ax in enumerate(row[2:]):
            np.testing.assert_allclose(shown(ax), result.randomized[k, 1].numpy(), rtol=1e-6)
            rho = float(result.spearman[k, 1])
            assert f"ρ = {rho:.2f}" in [t.get_text() for t in ax.texts]


def test_randomization_plots_take_the_real_test_result(shapes_net, shapes_batch):
    images = shapes_batch[0][:2]
    results = {
        name: evaluate.randomization_test(shapes_net, images, method, layers=["fc2", "conv1"])
        for name, method in (
            ("gradient", attribution.gradient),
            ("guided", attribution.guided_backprop),
        )
    }
    curve = plot.randomization_curves(results).axes[0].lines[0]
    np.testing.assert_allclose(curve.get_ydata(), [1.0, *results["gradient"].mean], rtol=1e-6)
    fig = plot.randomization_maps(results, images[0], 0)
    assert len(image_axes(fig)) == 1 + 2 * 3


def test_randomization_plots_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"same layers; 'a' has \['fc2', 'fc1', 'conv1'\]"):
        plot.randomization_curves({"a": fake_result(0), "b": fake_result(1, layers=["fc2"])})
    with pytest.raises(TypeError, match="non-empty dict"):
        plot.randomization_curves({})
    with pytest.raises(TypeError, match=r"results\['a'\] must be what evaluate.randomization_test"):
        plot.randomization_maps({"a": [0.5, 0.2]}, torch.rand(3, 8, 8), 0)
    with pytest.raises(ValueError, match=r"index must be .* 0..2, got index=3"):
        plot.randomization_maps({"a": fake_result(0)}, torch.rand(3, 8, 8), 3)
    with pytest.raises(ValueError, match="give the image that the test explained"):
        plot.randomization_maps({"a": fake_result(0)}, torch.rand(3, 16, 16), 0)


# --- the lecture's ReLU tables ----------------------------------------------------------------


def cell_numbers(ax) -> list[list[int]]:
    """The numbers written in a 3 x 3 table, row by row (read back from the drawn text)."""
    texts = sorted(ax.texts, key=lambda t: (t.get_position()[1], t.get_position()[0]))
    return np.array([int(t.get_text()) for t in texts]).reshape(3, 3).tolist()


def test_relu_tables_write_the_lectures_numbers():
    fig = one_new_figure(
        lambda: plot.relu_tables(
            FORWARD_INPUT, GRAD_FROM_ABOVE, ["gradient", "deconvnet", "guided"]
        )
    )
    axes = image_axes(fig)
    assert len(axes) == 6
    assert cell_numbers(axes[0]) == FORWARD_INPUT
    assert cell_numbers(axes[1]) == FORWARD_OUTPUT
    assert cell_numbers(axes[2]) == GRAD_FROM_ABOVE
    for ax, rule in zip(axes[3:], ["gradient", "deconvnet", "guided"]):
        assert cell_numbers(ax) == LECTURE_TABLES[rule]
        assert rule in ax.get_title()
    limits = {ax.images[0].get_clim() for ax in axes}
    assert limits == {(-7.0, 7.0)}  # one colour scale for all tables, centred at zero


def test_relu_tables_one_rule_and_tensors():
    fig = plot.relu_tables(torch.tensor(FORWARD_INPUT), torch.tensor(GRAD_FROM_ABOVE), "guided")
    axes = image_axes(fig)
    assert len(axes) == 4 and cell_numbers(axes[3]) == LECTURE_TABLES["guided"]


def test_relu_tables_bad_input():
    with pytest.raises(ValueError, match="2-D tables"):
        plot.relu_tables(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="must match"):
        plot.relu_tables(np.ones((3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="Unknown rule"):
        plot.relu_tables(FORWARD_INPUT, GRAD_FROM_ABOVE, "guidedbackprop")


# --- in a notebook ----------------------------------------------------------------------------


def test_each_figure_shows_once_in_a_notebook():
    """Run by a Jupyter kernel with its inline backend: a returned figure is not drawn twice."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        "import numpy as np\nimport matplotlib.pyplot as plt\nfrom lecture_lib import plot",
        "plot.heatmap(np.ones((4, 4)))",  # the cell's value
        "fig = plot.heatmap(np.ones((4, 4)))",  # assigned
        "plot.heatmap(np.ones((4, 4)))\nplot.show_images(np.ones((2, 3, 4, 4)))",  # two figures
        "plt.close(fig)\nfig",  # closed by pyplot: shown as the cell's value
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    pictures = [
        sum("image/png" in output.get("data", {}) for output in cell.outputs)
        for cell in notebook.cells
    ]
    assert pictures == [0, 1, 1, 2, 1]
