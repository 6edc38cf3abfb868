"""The explorers' picture: a matplotlib figure redrawn fast enough to answer a control at once,
and the small cache of results behind it.

An explorer's figure has parts that never change (axes frames, fixed labels) and parts that
change with the controls (the image and the map, titles, a colour scale). ``Picture`` draws the
fixed parts once (one full Agg draw, kept as the *background*). An update then starts from a
copy of the background, pastes each changing image as pixels (nearest neighbour, in the image's
own colormap and limits: what ``imshow(..., interpolation="nearest")`` draws), draws the other
changing artists (titles, the colour scale's axes) with Agg on top, and encodes the picture
once as PNG at the size shown. The bytes go to an ``ipywidgets.Image``: sent as a binary
message (no base64), and the browser swaps the picture of one ``<img>`` in place (its class:
``PICTURE_CLASS``).

Why not redraw the whole figure (``canvas.draw()``, which is also what ipympl does for each
frame before it encodes a PNG)? A full draw resamples both images through matplotlib's image
pipeline and lays out every tick label again: on the method explorer's figure it took 45-48 ms
of CPU time with Pillow's PNG, the composed picture 24-27 ms, in the same run on a shared
2-core machine (``benchmarks/bench_widgets.py``, its "picture" rows). Most of what is left is
text (titles, the colour scale's tick labels), which Agg renders glyph by glyph.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping, Sequence

import ipywidgets as widgets
import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator, ScalarFormatter
from matplotlib.transforms import Bbox

from . import plot

DPI = 80
"""Resolution of the pictures the explorers send (pixels per figure inch)."""

WIDTH = 960
"""Width of the explorers' pictures in pixels: about the width of a JupyterLab output on a laptop
screen, where a wider picture would be shrunk."""

TITLE_ROOM, MARGIN, SCALE_ROOM = 48, 16, 90
"""Pixels kept above the panels (two-line titles), around the figure, and right of a colour
scale (tick labels of up to 6 characters and the scale's label)."""

PICTURE_CLASS = "lecture-explorer-picture"
"""The CSS class of the ``<img>`` that shows an explorer's picture (for tests in a browser)."""


class Picture:
    """The picture of ``figure``, whose ``changing`` artists are redrawn on every ``render``.

    Everything else is drawn once, the first time (and again after ``forget_background``, for
    when a fixed part changed). ``widget`` is the ``ipywidgets.Image`` that shows it;
    ``backgrounds`` counts the full draws.
    """

    def __init__(self, figure: Figure, changing: Sequence[Artist]) -> None:
        self.figure = figure
        self.canvas = FigureCanvasAgg(figure)
        self.changing = list(changing)
        for artist in self.changing:
            artist.set_animated(True)  # left out of the full draw: the background
        self.backgrounds = 0
        self._background: np.ndarray | None = None
        self.widget = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.widget.add_class(PICTURE_CLASS)

    def forget_background(self) -> None:
        """Draw the fixed parts again on the next ``render``."""
        self._background = None

    def render(self) -> np.ndarray:
        """The picture ``[height, width, 4]`` (uint8 RGBA) of the figure as its artists are now."""
        size = tuple(int(v) for v in self.canvas.get_width_height(physical=True))
        if self._background is None or self._background.shape[:2] != size[::-1]:
            self.canvas.draw()
            self._background = np.array(self.canvas.buffer_rgba())
            self.backgrounds += 1
        pixels = np.asarray(self.canvas.buffer_rgba())
        pixels[...] = self._background
        for artist in self.changing:
            if artist.get_visible() and not _paste(pixels, artist):
                self.figure.draw_artist(artist)
        return pixels

    def show(self) -> bytes:
        """Render, encode as PNG once, and send it to ``widget``; returns the PNG."""
        png = encode_png(self.render())
        self.widget.value = png
        return png


def _paste(pixels: np.ndarray, image: Artist) -> bool:
    """Paste an ``AxesImage`` drawn with nearest-neighbour interpolation, as imshow places it
    (``origin="upper"``), straight into ``pixels``; False for any other artist (Agg draws it)."""
    if not isinstance(image, AxesImage) or image.get_interpolation() != "nearest":
        return False
    if image.origin != "upper" or image.get_alpha() is not None or image.get_array() is None:
        return False
    data = image.get_array()
    if data.ndim == 3:
        data = np.clip(data, 0, 1) if data.dtype.kind == "f" else data
    colours = image.to_rgba(data, bytes=True)  # [h, w, 4]: the colormap and limits applied
    image.axes.apply_aspect()
    left, right, bottom, top = image.get_extent()
    (x_left, y_top), (x_right, y_bottom) = image.get_transform().transform(
        [(left, top), (right, bottom)]
    )
    height = pixels.shape[0]
    box = Bbox.from_extents(x_left, height - y_top, x_right, height - y_bottom)  # rows from top
    cols = _nearest(box.x0, box.x1, colours.shape[1], pixels.shape[1])
    rows = _nearest(box.y0, box.y1, colours.shape[0], pixels.shape[0])
    if cols is None or rows is None:
        return True  # nothing of it is inside the picture
    (c0, c_index), (r0, r_index) = cols, rows
    if x_left > x_right:
        c_index = c_index[::-1]
    if y_top < y_bottom:  # row 0 drawn at the bottom: an inverted y axis
        r_index = r_index[::-1]
    block = np.take(np.take(colours, r_index, axis=0), c_index, axis=1)
    target = pixels[r0 : r0 + len(r_index), c0 : c0 + len(c_index)]
    if colours[..., 3].min() == 255:
        target[...] = block
    else:  # see-through pixels (NaN in a map) blend with what lies under them
        alpha = block[..., 3:] / 255.0
        target[..., :3] = (block[..., :3] * alpha + target[..., :3] * (1 - alpha)).round()
    return True


def _nearest(start: float, stop: float, n: int, limit: int):
    """The pixels ``first, [source index of each]`` whose centres lie in [start, stop), which
    shows ``n`` source pixels; None when none of them is inside ``[0, limit)``."""
    low, high = sorted((start, stop))
    first, last = max(0, int(np.ceil(low - 0.5))), min(limit, int(np.ceil(high - 0.5)))
    if last <= first or high == low:
        return None
    centres = np.arange(first, last) + 0.5
    index = np.floor((centres - low) / (high - low) * n).astype(int)
    return first, np.clip(index, 0, n - 1)


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """``pixels`` ``[height, width, 4]`` (uint8 RGBA, as Agg draws them) as PNG bytes: each row
    with PNG's "sub" filter (each byte minus the same byte of the pixel to its left, one numpy
    subtraction), then zlib at ``level`` (1: the fastest). On an explorer's picture of 960 x 444
    pixels: 3.9 ms of CPU time and 68 kB, against 10.9 ms and 51 kB for Pillow's encoder at the
    same level, whose adaptive choice of filters costs more than the compression."""
    height, width = pixels.shape[:2]
    flat = np.ascontiguousarray(pixels).reshape(height, 4 * width)
    rows = np.empty((height, 1 + 4 * width), np.uint8)
    rows[:, 0] = 1  # filter type "sub"
    rows[:, 1:5] = flat[:, :4]
    np.subtract(flat[:, 4:], flat[:, :-4], out=rows[:, 5:])  # modulo 256, as PNG wants

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    compressed = zlib.compress(rows, level)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )


class Cache(MutableMapping):
    """Results already computed, at most ``max_items`` of them and about ``max_bytes`` in all
    (``nbytes`` of each value, as numpy arrays and ``size(value)`` give it): adding one more
    forgets the least recently used first. Reading a result makes it the most recent."""

    def __init__(
        self,
        max_items: int = 128,
        max_bytes: int = 64 * 2**20,
        size: Callable[[object], int] | None = None,
    ) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._size = size or (lambda value: int(getattr(value, "nbytes", 0)))
        self._items: OrderedDict = OrderedDict()
        self.nbytes = 0

    def __getitem__(self, key):
        value = self._items[key]
        self._items.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        if key in self._items:
            del self[key]
        self._items[key] = value
        self.nbytes += self._size(value)
        while len(self._items) > 1 and (
            len(self._items) > self.max_items or self.nbytes > self.max_bytes
        ):
            del self[next(iter(self._items))]

    def __delitem__(self, key) -> None:
        self.nbytes -= self._size(self._items.pop(key))

    def __contains__(self, key) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# --- the explorers' layout: axes placed by hand, in pixels ----------------------------------


def new_figure(width: int, height: int) -> Figure:
    """An empty figure of ``width`` x ``height`` pixels whose axes are placed by hand
    (``place``): no layout solver runs on a draw, and nothing moves when a title or a tick
    label gets longer."""
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="none")


def place(figure: Figure, left: int, top: int, width: int, height: int, axis_off: bool = True):
    """New axes at ``left``, ``top`` (pixels from the figure's top left corner), ``width`` x
    ``height`` pixels; an image drawn in it keeps its aspect and is centred in that box."""
    figure_width, figure_height = figure.get_size_inches() * DPI
    rect = (left / figure_width, 1 - (top + height) / figure_height)
    ax = figure.add_axes((*rect, width / figure_width, height / figure_height))
    ax.set_title("", y=1.0)  # a fixed title height: no title placement on every draw
    if axis_off:
        ax.set_axis_off()
    return ax


def image_and_map(image: int = 380, box: tuple[int, int] = (380, 380), gap: int = 66):
    """A figure ``WIDTH`` pixels wide: the image (an ``image`` x ``image`` square) on the left,
    a map (in a ``box`` = (width, height) box) and its colour scale on the right. Room is kept
    above the panels for two-line titles and right of the colour scale for its longest tick
    labels and its label, so nothing is cut off whatever the numbers."""
    box_width, box_height = box
    fig = new_figure(WIDTH, TITLE_ROOM + box_height + MARGIN)
    left = place(fig, MARGIN, TITLE_ROOM + (box_height - image) // 2, image, image)
    x = MARGIN + image + gap
    right = place(fig, x, TITLE_ROOM, box_width, box_height)
    scale = place(fig, x + box_width + 12, TITLE_ROOM, 16, box_height, axis_off=False)
    assert x + box_width + 12 + 16 + SCALE_ROOM <= WIDTH, "the colour scale's labels need room"
    return fig, left, right, scale


def changing_parts(left, right, scale) -> list[Artist]:
    """What an update of an image-and-map figure changes: both images, both titles, and the
    whole colour scale (its ticks follow the map's limits)."""
    return [left.images[0], left.title, right.images[0], right.title, scale]


def colorbar(figure: Figure, artist, scale, label: str | None = None):
    """The colour scale of ``artist`` in the axes ``scale``, with at most 5 ticks (text is most
    of a draw) and short tick labels: values under 0.01 or from 10000 on share one factor,
    written above the scale (``1e-3``), so a label has at most 6 characters (``-0.075``)."""
    bar = figure.colorbar(artist, cax=scale, label=label)
    bar.locator = MaxNLocator(4)
    formatter = ScalarFormatter()
    formatter.set_powerlimits((-3, 4))
    bar.formatter = formatter
    return bar


def fit_height(scale, full: Bbox, share: float) -> None:
    """Shrink the colour scale to ``share`` of its ``full`` height, centred: as tall as a wide
    map drawn beside it (a map keeps its aspect, so it fills less than its box's height)."""
    height = full.height * share
    scale.set_position((full.x0, full.y0 + (full.height - height) / 2, full.width, height))


def show_array(artist, values: np.ndarray) -> None:
    """New data for an AxesImage, whatever its shape (the axes limits follow)."""
    artist.set_data(values)
    height, width = values.shape[:2]
    artist.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))


def show_map(artist, style: plot.MapStyle) -> None:
    """New data, colormap and limits for the map panel (its colorbar follows). The colormap is
    set only when it changes: setting it redraws the colour scale's solids."""
    show_array(artist, style.values)
    cmap = style.cmap or matplotlib.rcParams["image.cmap"]
    if artist.get_cmap().name != cmap:
        artist.set_cmap(cmap)
    artist.set_clim(style.vmin, style.vmax)
