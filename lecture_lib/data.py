"""The *shapes* data set: generated images with a ground-truth mask of the object.

Every image holds one object of a known class (circle, square, triangle, cross, star) drawn at
a random position, scale, rotation and colour over a textured, noisy background with a few
distracting line strokes ("clutter") that belong to no class. Because the generator knows which
pixels are the object, the course can check where an explanation points.

    images, labels, masks = make_shapes(64, seed=0)
    images: float32 [64, 3, 64, 64] in [0, 1]
    labels: int64   [64]             index into CLASSES
    masks:  bool    [64, 64, 64]     True on the object's pixels

The same arguments always give the same tensors, whatever the global random state.

``make_shortcut_shapes`` gives the same shapes with a small coloured mark in a corner whose
colour gives the class away (or lies about it), and the mark's mask: the data of a network
that cheats.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import threads

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")

MIN_SIZE = 16
"""Smallest image side that still draws recognisable shapes."""

_CHUNK = 512  # images generated per random stream; keeps memory bounded for large n


@threads.under_policy
def make_shapes(
    n: int, *, seed: int = 0, size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` shape images with their labels and object masks.

    Args:
        n: number of images (> 0).
        seed: the random seed (images are generated from their own random stream, so the
            global random state neither matters nor changes).
        size: the side of the square images in pixels (>= 16).

    Returns:
        ``(images, labels, masks)``: float32 ``[n, 3, size, size]`` in [0, 1], int64 ``[n]``
        (balanced: every class appears ``n // 5`` or ``n // 5 + 1`` times), bool
        ``[n, size, size]`` (the object's pixels).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(
            f"make_shapes: n must be a positive int (the number of images), got n={n!r}."
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(
            f"make_shapes: size must be an int of at least {MIN_SIZE} pixels, got size={size!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"make_shapes: seed must be a non-negative int, got seed={seed!r}.")

    parts = [
        _make_chunk(start, min(start + _CHUNK, n), seed=seed, size=size)
        for start in range(0, n, _CHUNK)
    ]
    images, labels, masks = (torch.cat(p) for p in zip(*parts))
    return images, labels, masks


def _make_chunk(
    start: int, stop: int, *, seed: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``start..stop-1`` of the stream ``seed``, from their own random generator."""
    state = np.random.SeedSequence([seed, start // _CHUNK]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(state))
    m = stop - start

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen)

    # Balanced labels: global index modulo the number of classes, shuffled inside the chunk.
    labels = torch.arange(start, stop) % len(CLASSES)
    labels = labels[torch.randperm(m, generator=gen)]

    # Pixel centres in [0, size), shared by every image.
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)

    background = _background(m, size, uniform, xx, yy)
    images = _draw_clutter(background, size, uniform, xx, yy)

    # The object: position, scale and rotation; it always lies fully inside the image.
    radius = uniform(m, low=0.2, high=0.32) * size
    cx = radius + uniform(m) * (size - 2 * radius)
    cy = radius + uniform(m) * (size - 2 * radius)
    angle = uniform(m, high=2 * math.pi)
    masks = _shape_masks(labels, xx, yy, cx, cy, radius, angle)

    colour = _object_colour(background, uniform)
    images = torch.where(masks[:, None], colour[:, :, None, None], images)
    images = images + 0.03 * torch.randn(images.shape, generator=gen)  # sensor noise
    return images.clamp_(0.0, 1.0), labels.long(), masks


def _background(m, size, uniform, xx, yy) -> torch.Tensor:
    """A desaturated base colour with a smooth wave texture: [m, 3, size, size]."""
    base = uniform(m, 1, low=0.15, high=0.85) + uniform(m, 3, low=-0.08, high=0.08)
    texture = torch.zeros(m, size, size)
    for _ in range(3):  # a sum of three plane waves of random direction and frequency
        theta = uniform(m, 1, 1, high=2 * math.pi)
        freq = uniform(m, 1, 1, low=1.0, high=4.0) * 2 * math.pi / size
        phase = uniform(m, 1, 1, high=2 * math.pi)
        texture += torch.sin(freq * (xx * torch.cos(theta) + yy * torch.sin(theta)) + phase)
    amplitude = uniform(m, 1, 1, low=0.02, high=0.08)
    return base[:, :, None, None] + (amplitude * texture)[:, None]


def _draw_clutter(images, size, uniform, xx, yy, strokes: int = 3) -> torch.Tensor:
    """Thin straight strokes of random colour: distractors that belong to no class."""
    m = images.shape[0]
    for _ in range(strokes):
        x0, y0 = uniform(m, 1, 1) * size, uniform(m, 1, 1) * size
        length = uniform(m, 1, 1, low=0.15, high=0.35) * size
        theta = uniform(m, 1, 1, high=2 * math.pi)
        dx, dy = torch.cos(theta), torch.sin(theta)
        along = (xx - x0) * dx + (yy - y0) * dy
        across = (xx - x0) * -dy + (yy - y0) * dx
        width = uniform(m, 1, 1, low=0.5, high=1.0)
        stroke = (along.abs() <= length / 2) & (across.abs() <= width)
        colour = uniform(m, 3)[:, :, None, None]
        images = torch.where(stroke[:, None], colour, images)
    return images


def _shape_masks(labels, xx, yy, cx, cy, radius, angle) -> torch.Tensor:
    """Boolean masks [m, size, size] of each image's object, in rotated, scaled coordinates."""
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    dx = (xx - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    dy = (yy - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    u, v = c * dx + s * dy, -s * dx + c * dy  # object coordinates: the shape fits the unit disc
    tests = {
        "circle": lambda u, v: u**2 + v**2 <= 0.85**2,
        "square": lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.72,
        "triangle": lambda u, v: _regular_polygon(u, v, sides=3),
        "cross": _cross,
        "star": _star,
    }
    masks = torch.zeros(u.shape, dtype=torch.bool)
    for k, name in enumerate(CLASSES):
        chosen = labels == k
        masks[chosen] = tests[name](u[chosen], v[chosen])
    return masks


def _regular_polygon(u: torch.Tensor, v: torch.Tensor, sides: int) -> torch.Tensor:
    """Inside a regular polygon inscribed in the unit circle: every edge's half-plane holds."""
    apothem = math.cos(math.pi / sides)
    inside = torch.ones(u.shape, dtype=torch.bool)
    for j in range(sides):
        phi = 2 * math.pi * j / sides + math.pi / sides  # outward normal of edge j
        inside &= u * math.cos(phi) + v * math.sin(phi) <= apothem
    return inside


def _cross(
    u: torch.Tensor, v: torch.Tensor, arm: float = 0.9, half_width: float = 0.3
) -> torch.Tensor:
    """A plus sign: the union of a horizontal and a vertical bar."""
    horizontal = (u.abs() <= arm) & (v.abs() <= half_width)
    vertical = (v.abs() <= arm) & (u.abs() <= half_width)
    return horizontal | vertical


def _star(u: torch.Tensor, v: torch.Tensor, points: int = 5, inner: float = 0.45) -> torch.Tensor:
    """A five-pointed star: fold the angle into one half-spike and test the spike's edge."""
    sector = 2 * math.pi / points
    r = torch.sqrt(u**2 + v**2)
    phi = torch.remainder(torch.atan2(v, u), sector)
    phi = torch.minimum(phi, sector - phi)  # in [0, sector / 2], the spike's tip at 0
    px, py = r * torch.cos(phi), r * torch.sin(phi)
    # Edge from the tip (1, 0) to the inner corner at angle sector / 2.
    ix, iy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    cross = (ix - 1.0) * py - iy * (px - 1.0)  # > 0: the point lies on the origin's side
    return cross >= 0


def _object_colour(background: torch.Tensor, uniform) -> torch.Tensor:
    """A saturated colour whose brightness differs from the background's by at least 0.3."""
    m = background.shape[0]
    hue = uniform(m, 1) * 6.0  # the colour wheel: red, yellow, green, cyan, blue, magenta
    pure = torch.cat([(hue - 3).abs() - 1, 2 - (hue - 2).abs(), 2 - (hue - 4).abs()], dim=1).clamp(
        0.0, 1.0
    )
    whiteness = uniform(m, 1, high=0.35)
    colour = uniform(m, 1, low=0.35, high=1.0) * (pure * (1 - whiteness) + whiteness)
    background_level = background.mean(dim=(1, 2, 3))
    too_close = (colour.mean(dim=1) - background_level).abs() < 0.3
    brighten = too_close & (background_level < 0.5)
    darken = too_close & (background_level >= 0.5)
    colour[brighten] = 0.55 + 0.45 * colour[brighten]
    colour[darken] = 0.45 * colour[darken]
    return colour


# --- the shortcut variant: a mark that gives the class away --------------------------------

MARKS: tuple[str, ...] = ("honest", "lying", "none")
"""What the mark of ``make_shortcut_shapes`` says: the object's own class, another class, or
nothing (no mark at all)."""

MARK_COLOURS = torch.tensor(
    [
        [0.95, 0.10, 0.10],  # circle: red
        [0.10, 0.85, 0.15],  # square: green
        [0.15, 0.25, 0.95],  # triangle: blue
        [0.95, 0.90, 0.10],  # cross: yellow
        [0.90, 0.15, 0.90],  # star: magenta
    ]
)
"""The colour of each class's mark, one row per class of ``CLASSES`` (RGB in [0, 1])."""

MARK_SIZE = 3
"""The side of the square mark in pixels."""

MARK_INSET = 1
"""Pixels between the mark and the image's left and bottom borders."""

_MARK_STREAM = 1_000_003  # tells the marks' random stream apart from the images'


class ShortcutShapes(NamedTuple):
    """What ``make_shortcut_shapes`` returns: five tensors, by name or unpacked in this order."""

    images: torch.Tensor
    """float32 ``[n, 3, size, size]`` in [0, 1]: the shapes with their mark."""
    labels: torch.Tensor
    """int64 ``[n]``: the object's class (the truth)."""
    masks: torch.Tensor
    """bool ``[n, size, size]``: the object's visible pixels."""
    mark_masks: torch.Tensor
    """bool ``[n, size, size]``: the mark's pixels (all False with ``marks="none"``)."""
    mark_labels: torch.Tensor
    """int64 ``[n]``: the class whose colour the mark carries (-1 with ``marks="none"``)."""


@threads.under_policy
def make_shortcut_shapes(
    n: int, *, seed: int = 0, size: int = 64, marks: str = "honest"
) -> ShortcutShapes:
    """The shapes of ``make_shapes(n, seed=seed, size=size)`` with a small coloured mark in the
    bottom-left corner whose colour gives the class away: a shortcut that a network can learn
    instead of the shape, like the source tag in the corner of photographs (Lapuschkin et al.
    2019).

    The mark is a ``MARK_SIZE`` x ``MARK_SIZE`` square (3 x 3 pixels: 9 of 4,096),
    ``MARK_INSET`` pixel from the left and bottom borders, where the object never reaches on
    64 x 64 images. Its colour is ``MARK_COLOURS[k]`` (plus the images' sensor noise) of a
    class ``k``:

    - ``marks="honest"``: the object's own class, as in the training data of the cheating
      network (``models.load_shortcut_net``);
    - ``marks="lying"``: another class, the same one for the same seed (the object's class plus
      1 to 4, modulo 5);
    - ``marks="none"``: no mark; the images are exactly ``make_shapes``'s.

    The three variants of one seed share everything else (objects, background, noise): they
    differ only in the mark's pixels.

    Returns:
        ``ShortcutShapes(images, labels, masks, mark_masks, mark_labels)``, see its fields.
        ``masks`` are the object's pixels that the mark leaves visible (on 64 x 64 images, all of
        them).
    """
    if marks not in MARKS:
        raise ValueError(
            f"make_shortcut_shapes: marks must be one of {', '.join(map(repr, MARKS))}, got "
            f"marks={marks!r}."
        )
    images, labels, masks = make_shapes(n, seed=seed, size=size)
    shift, noise = _mark_draws(n, seed)
    mark_masks = mark_mask(size).expand(n, size, size).clone()
    if marks == "none":
        return ShortcutShapes(
            images, labels, masks, torch.zeros_like(mark_masks), torch.full_like(labels, -1)
        )
    mark_labels = labels if marks == "honest" else (labels + shift) % len(CLASSES)
    colour = MARK_COLOURS[mark_labels][:, None, :] + noise  # [n, MARK_SIZE**2, 3]
    marked = images.permute(0, 2, 3, 1).clone()  # [n, size, size, 3]: pixels in row-major order
    marked[mark_masks] = colour.clamp(0.0, 1.0).reshape(-1, 3)
    marked = marked.permute(0, 3, 1, 2).contiguous()
    return ShortcutShapes(marked, labels, masks & ~mark_masks, mark_masks, mark_labels)


@threads.under_policy
def mark_mask(size: int = 64) -> torch.Tensor:
    """Where the mark of ``make_shortcut_shapes`` sits: bool ``[size, size]``, True on the
    ``MARK_SIZE`` x ``MARK_SIZE`` square ``MARK_INSET`` pixel from the left and bottom borders."""
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(
            f"mark_mask: size must be an int of at least {MIN_SIZE} pixels, got size={size!r}."
        )
    mask = torch.zeros(size, size, dtype=torch.bool)
    bottom = size - MARK_INSET
    mask[bottom - MARK_SIZE : bottom, MARK_INSET : MARK_INSET + MARK_SIZE] = True
    return mask


def _mark_draws(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The marks' random draws, chunk by chunk like the images (image ``i`` gets the same mark
    whatever ``n``): the shift of a lying mark's class (1..4) and the sensor noise on the mark's
    pixels ``[n, MARK_SIZE**2, 3]``."""
    shifts, noises = [], []
    for start in range(0, n, _CHUNK):
        m = min(start + _CHUNK, n) - start
        state = np.random.SeedSequence([seed, start // _CHUNK, _MARK_STREAM]).generate_state(1)
        gen = torch.Generator().manual_seed(int(state[0]))
        shifts.append(torch.randint(1, len(CLASSES), (m,), generator=gen))
        noises.append(0.03 * torch.randn(m, MARK_SIZE**2, 3, generator=gen))
    return torch.cat(shifts), torch.cat(noises)


# --- display helpers ------------------------------------------------------------------------


@threads.under_policy
def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image ``[C, H, W]`` (tensor or array, C in {1, 3}) as an ``[H, W, C]`` numpy array
    for ``matplotlib.pyplot.imshow``; a grey image ``[H, W]`` or ``[1, H, W]`` gives ``[H, W]``."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(
            f"to_hwc: expected one image of shape [C, H, W] with C = 1 or 3, got shape {tuple(array.shape)}."
        )
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


@threads.under_policy
def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a batch ``[N, C, H, W]`` with a Gaussian of ``sigma`` pixels: a separable kernel cut
    at 3 sigma (at least one pixel each side), reflected at the borders."""
    radius = min(max(1, math.ceil(3 * sigma)), images.shape[-1] - 1, images.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(
        padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
    )
    return torch.nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def class_name(label: int | torch.Tensor) -> str:
    """The name of a shapes class index, e.g. ``class_name(4) == "star"``."""
    return CLASSES[int(label)]


@threads.under_policy
def load_image(path: str | Path, size: int | None = 224) -> torch.Tensor:
    """An image file as a float32 ``[3, H, W]`` tensor in [0, 1], resized so that the shorter
    side is ``size`` and centre-cropped to ``size x size`` (``size=None`` keeps it as it is).
    For an instructor's own photographs with an ImageNet model."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_image: no image file at {str(path)!r}.")
    picture = Image.open(path).convert("RGB")
    if size is None:
        array = np.asarray(picture, dtype=np.float32) / 255.0
        return torch.from_numpy(array.transpose(2, 0, 1).copy())
    return _resize_crop(picture, size)


SAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
"""Public-domain photographs that scikit-image ships (an optional dependency: ``photos`` extra)."""


@threads.under_policy
def sample_photos(names: tuple[str, ...] = SAMPLE_PHOTOS, size: int = 224) -> torch.Tensor:
    """Natural photographs for the ImageNet models, ``[len(names), 3, size, size]`` in [0, 1].

    Uses scikit-image's bundled samples (``pip install -e ".[photos]"``); nothing is downloaded.
    For your own photographs use ``load_image(path)``.
    """
    try:
        from skimage import data as samples
    except ImportError as error:
        raise ImportError(
            'sample_photos needs scikit-image (pip install -e ".[photos]"); or load your own '
            "photographs with lecture_lib.data.load_image(path)."
        ) from error
    from PIL import Image

    photos = []
    for name in names:
        array = getattr(samples, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        picture = Image.fromarray(array[..., :3])
        photos.append(_resize_crop(picture, size))
    return torch.stack(photos)


def _resize_crop(picture, size: int) -> torch.Tensor:
    """A PIL image resized so its shorter side is ``size``, centre-cropped, as [3, size, size]."""
    from PIL import Image

    scale = size / min(picture.size)
    width, height = round(picture.width * scale), round(picture.height * scale)
    picture = picture.resize((width, height), Image.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    picture = picture.crop((left, top, left + size, top + size))
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())
