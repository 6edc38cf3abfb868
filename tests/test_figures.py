"""The figures as a student sees them in JupyterLab: at full size, with a labelled colour scale.

JupyterLab shows a notebook's output about 970 pixels wide in a 1400-pixel browser window and
scales a wider figure down, titles and numbers with it. These tests check the stored figures of
the lectures and solutions, and that every grid of maps says how its colours read.
"""

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from notebooks import LECTURES, ROOT, SOLUTIONS  # noqa: E402
from PIL import Image  # noqa: E402

from lecture_lib import evaluate, plot  # noqa: E402

NOTEBOOKS = LECTURES + SOLUTIONS
OUTPUT_AREA = 975
"""Pixels: the widest figure JupyterLab shows unscaled (about 970) and a few pixels of slack."""


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def stored_pictures(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            png = output.get("data", {}).get("image/png")
            if png:
                yield index, Image.open(io.BytesIO(base64.b64decode(png)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS])
def test_stored_figures_fit_the_output_area_unscaled(path):
    too_wide = [
        f"cell {index}: {picture.width} px"
        for index, picture in stored_pictures(path)
        if picture.width > OUTPUT_AREA
    ]
    assert not too_wide, f"{path.name}: figures wider than {OUTPUT_AREA} px: {too_wide}"


def colour_bars(fig):
    """The colorbars of a figure, whether they are axes of their own or strips inside an axes."""
    axes = [*fig.axes, *(child for ax in fig.axes for child in ax.child_axes)]
    return [ax for ax in axes if hasattr(ax, "_colorbar")]


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def maps(seed=0, shape=(3, 3, 16, 16)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- every grid of maps has a labelled colour scale --------------------------------------------


def test_compare_methods_own_scales_say_so_under_the_columns(images):
    fig = plot.compare_methods(images, {"gradient": maps(1), "saliency": maps(2).abs()[:, 0]})
    bars = colour_bars(fig)
    assert len(bars) == 2  # one per method column: its colormap, signed or not
    assert [bar.get_xlabel() for bar in bars] == [plot.OWN_SCALE, ""]  # said once
    for bar in bars:
        assert [t.get_text() for t in bar.get_xticklabels()][-1] == "max"
    assert len(image_axes(fig)) == 3 * 3  # the strips are not extra grid cells


def test_compare_methods_column_scale_shares_the_limit_and_gives_its_values(images):
    fig = plot.compare_methods(
        images,
        {"gradient": maps(1) * torch.tensor([1.0, 5.0, 20.0])[:, None, None, None]},
        scale="column",
        label="dS/dI",
    )
    grid = np.array(fig.axes).reshape(3, 2)
    limits = {ax.images[0].get_clim() for ax in grid[:, 1]}
    assert len(limits) == 1  # one scale for the column: the third image's map is the strongest
    (bar,) = colour_bars(fig)
    assert bar.get_xlabel() == "dS/dI"
    vmin, vmax = limits.pop()
    labels = [t.get_text() for t in bar.get_xticklabels()]
    assert labels[-1] == f"{vmax:.2g}" and labels[1] == "0"


def test_compare_methods_all_scale_is_one_limit_for_every_map(images):
    fig = plot.compare_methods(images, {"a": maps(1), "b": maps(2) * 10}, scale="all")
    grid = np.array(fig.axes).reshape(3, 3)
    assert len({ax.images[0].get_clim() for ax in grid[:, 1:].ravel()}) == 1


def test_compare_methods_overlay_draws_each_map_over_its_image(images):
    fig = plot.compare_methods(images, {"occlusion": maps(3)[:, 0]}, overlay=True)
    grid = np.array(fig.axes).reshape(3, 2)
    for i, ax in enumerate(grid[:, 1]):
        base, heat = ax.images
        grey = images[i].permute(1, 2, 0).numpy() @ np.array([0.299, 0.587, 0.114])
        np.testing.assert_allclose(base.get_array(), grey, atol=1e-6)
        np.testing.assert_allclose(heat.get_array(), maps(3)[i, 0].numpy(), rtol=1e-5)


def test_overlay_grid_has_a_colour_scale_own_or_shared(images):
    own = plot.overlay_grid(images, maps(4)[:, 0])
    (bar,) = colour_bars(own)
    assert bar.get_ylabel() == plot.OWN_SCALE
    shared = plot.overlay_grid(images, maps(4)[:, 0], scale="all", label="drop of S")
    (bar,) = colour_bars(shared)
    assert bar.get_ylabel() == "drop of S"
    assert len({ax.images[1].get_clim() for ax in image_axes(shared)}) == 1


def test_feature_map_grid_says_each_map_has_its_own_range():
    fig = plot.feature_map_grid(torch.rand(6, 8, 8))
    assert fig.get_supxlabel() == plot.OWN_RANGE
    shared = plot.feature_map_grid(torch.rand(6, 8, 8), shared_scale=True)
    assert shared.get_supxlabel() == "" and colour_bars(shared)


def test_randomization_maps_write_rho_under_each_map_and_explain_the_colours():
    generator = torch.Generator().manual_seed(0)
    result = evaluate.RandomizationResult(
        ["fc2", "fc1"],
        torch.rand(2, 2, generator=generator),
        torch.rand(2, 8, 8, generator=generator),
        torch.rand(2, 2, 8, 8, generator=generator),
    )
    fig = plot.randomization_maps({"a": result, "b": result}, torch.rand(3, 8, 8), 0)
    fig.canvas.draw()
    (bar,) = colour_bars(fig)
    assert "own scale" in bar.get_xlabel()
    for ax in image_axes(fig)[1:]:
        (rho,) = [t for t in ax.texts if t.get_text().startswith("ρ")]
        box = rho.get_window_extent()
        assert box.y1 <= ax.get_window_extent().y0 + 1  # under the map, not on it
        assert rho.get_fontsize() >= 9


# --- readable at full size ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "draw",
    [
        lambda x: plot.compare_methods(x, {f"method {k}": maps(k) for k in range(10)}),
        lambda x: plot.show_images(torch.rand(11, 3, 8, 8), ncols=11),
        lambda x: plot.overlay_grid(torch.rand(8, 3, 8, 8), torch.rand(8, 8, 8), size=3),
        lambda x: plot.feature_map_grid(torch.rand(16, 8, 8), ncols=16),
        lambda x: plot.relu_tables(np.ones((3, 3)), np.ones((3, 3)), ["gradient", "guided"] * 3),
        lambda x: plot.deletion_insertion({"a": torch.rand(2, 5)}, {"a": torch.rand(2, 5)}),
    ],
    ids=["compare_methods", "show_images", "overlay_grid", "feature_maps", "relu", "deletion"],
)
def test_wide_grids_shrink_their_cells_to_fit_the_output_area(images, draw):
    fig = draw(images)
    assert fig.get_figwidth() <= plot.MAX_WIDTH + 1e-9
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    assert Image.open(buffer).width <= OUTPUT_AREA


def test_long_column_titles_are_broken_and_never_overlap(images):
    names = [
        r"input $\times$ gradient, sum over RGB",
        "gradient $w$, sum over RGB",
        "occlusion 16 x 16",
    ]
    fig = plot.compare_methods(images, {name: maps(k) for k, name in enumerate(names)}, size=1.9)
    fig.canvas.draw()
    titles = [ax.title for ax in np.array(fig.axes).reshape(3, 4)[0, 1:]]
    assert "\n" in titles[0].get_text() and "$\\times$" in titles[0].get_text()
    assert titles[2].get_text() == "occlusion 16 x 16"  # short enough: one line
    boxes = [title.get_window_extent() for title in titles]
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0


def test_overlay_of_magnitudes_darkens_the_image_so_zero_does_not_look_strong(images):
    """Under "magma" (black = 0) a light image would read as the bright, strong end."""
    white = torch.ones(3, 16, 16) * torch.linspace(0.5, 1.0, 16)  # a light image
    fig = plot.overlay(white, torch.zeros(16, 16).index_fill_(0, torch.tensor([3]), 1.0))
    base, heat = image_axes(fig)[0].images
    shown = base.to_rgba(np.asarray(base.get_array()))[..., :3]
    assert shown.max() <= plot.DARK_IMAGE + 1e-6
    signed = plot.overlay(white, maps(5)[0, 0])
    base = image_axes(signed)[0].images[0]
    assert base.get_alpha() == pytest.approx(0.6)  # light under a signed map: white is zero


def test_vmax_fixes_the_limit_and_is_checked():
    style = plot.map_style(np.array([[0.5, -2.0], [1.0, 0.0]]), vmax=4.0)
    assert (style.vmin, style.vmax) == (-4.0, 4.0)
    with pytest.raises(ValueError, match="vmax must be a positive number"):
        plot.map_style(np.ones((2, 2)), vmax=0)
    with pytest.raises(ValueError, match="scale must be one of 'own', 'column', 'all'"):
        plot.compare_methods(torch.rand(3, 4, 4), {"a": torch.rand(3, 4, 4)}, scale="shared")
    with pytest.raises(ValueError, match="label names \\['b'\\]"):
        plot.compare_methods(torch.rand(3, 4, 4), {"a": torch.rand(3, 4, 4)}, label={"b": "x"})


# --- the notebooks use these options where the issue was --------------------------------------


def code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "lectures" / "02_saturation.ipynb",
        ROOT / "solutions" / "02_saturation" / "02_saturation.ipynb",
    ],
    ids=["lecture", "solution"],
)
def test_occlusion_maps_are_drawn_over_their_images(path):
    calls = [s for s in code_cells(path) if "occlusion" in s and "compare_methods(" in s]
    assert calls
    for source in calls:
        assert "overlay=True" in source, source


def test_lecture_01_overlays_share_a_labelled_scale_per_layer():
    (source,) = [
        s for s in code_cells(ROOT / "lectures" / "01_activations.ipynb") if "plot.overlay(" in s
    ]
    assert "vmax=v" in source and "fig.colorbar(" in source and "activation" in source
    (grid,) = [
        s for s in code_cells(ROOT / "lectures" / "01_activations.ipynb") if "overlay_grid(" in s
    ]
    assert 'scale="all"' in grid and "label=" in grid


@pytest.mark.parametrize("function", [plot.show_images, plot.overlay_grid])
def test_titles_of_a_squeezed_row_are_broken_instead_of_overlapping(function):
    pictures = torch.rand(8, 3, 8, 8)
    titles = [f"triangle (p = 0.9{k})\ntrue: triangle" for k in range(8)]
    args = (
        (pictures, titles)
        if function is plot.show_images
        else (pictures, torch.rand(8, 8, 8), titles)
    )
    fig = function(*args, ncols=8, size=1.8)
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in image_axes(fig)]
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0
    assert image_axes(fig)[0].get_title().count("\n") == 2  # the first line broken in two
