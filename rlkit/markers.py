"""Visual markers that show the model which pixel is asked about.

Each shape is a small boolean stencil with an anchor (the stencil cell that lands on the
query pixel). Drawing is one masked slice assignment, no per-pixel Python loop. A marker
that would not fit whole inside the image is never moved or clipped: ``fits`` says no and
the caller skips (and counts) that label.

Shapes (``size`` is the stencil's side in pixels, default 5 as in the paper):
- arrow: tip on the pixel, shaft running to the lower right, a two-stroke head at the tip.
- cross: a plus centred on the pixel.
- circle: a ring centred on the pixel (the pixel itself stays visible).
- square: a filled square centred on the pixel (a large, easy marker for small models).
- official_arrow: the marker of the official DepthLM code (facebookresearch/DepthLM_Official,
  utils/datasets.py), which the released facebook/DepthLM model was trained on: a "-->" whose
  tip stops one pixel left of the query pixel (the pixel itself stays visible), a ``size``-pixel
  horizontal shaft and two ``size // 2``-pixel diagonal barbs. That code skips a label closer than
  ``size`` pixels to any border, so the stencil is the (2 size + 1)-pixel square centred on the pixel
  and ``fits`` skips exactly the labels the official code skips.
An optional ``outline`` color draws a one-pixel border around the stencil for contrast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SHAPES = ("arrow", "cross", "circle", "square", "official_arrow")


@dataclass(frozen=True)
class MarkerStyle:
    shape: str = "arrow"
    size: int = 5
    color: tuple[int, int, int] = (255, 0, 0)
    outline: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"marker shape {self.shape!r} is not one of {SHAPES}")
        if self.size < 3:
            raise ValueError(f"marker size must be >= 3 pixels, got {self.size}")


@lru_cache(maxsize=64)
def stencil(shape: str, size: int) -> tuple[np.ndarray, int, int]:
    """(mask, anchor_row, anchor_col) for a shape; cached because the builder draws millions."""
    s = size
    m = np.zeros((s, s), dtype=bool)
    c = s // 2
    if shape == "arrow":
        idx = np.arange(s)
        m[idx, idx] = True  # shaft from the tip (0, 0) to the lower right
        head = max(2, (s + 1) // 2)
        m[0, :head] = True
        m[:head, 0] = True
        return m, 0, 0
    if shape == "official_arrow":
        m = np.zeros((2 * s + 1, 2 * s + 1), dtype=bool)  # the query pixel is the centre cell (s, s)
        d = np.arange(1, s + 1)
        m[s, s - d] = True  # shaft: the s pixels left of the query pixel
        d = np.arange(1, s // 2 + 1)
        m[s - d, s - d - 1] = True  # barbs: diagonals running back (left) from the tip (s, s - 1)
        m[s + d, s - d - 1] = True
        return m, s, s
    if shape == "cross":
        m[c, :] = True
        m[:, c] = True
    elif shape == "circle":
        yy, xx = np.mgrid[:s, :s]
        r = np.hypot(yy - c, xx - c)
        m[:] = np.abs(r - (s - 1) / 2) <= 0.5
    elif shape == "square":
        m[:] = True
    else:
        raise ValueError(f"marker shape {shape!r} is not one of {SHAPES}")
    return m, c, c


@lru_cache(maxsize=64)
def _layers(style: MarkerStyle) -> list[tuple[np.ndarray, int, int, tuple[int, int, int]]]:
    mask, ar, ac = stencil(style.shape, style.size)
    layers = []
    if style.outline is not None:
        padded = np.pad(mask, 1)
        grown = padded.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= np.roll(np.roll(padded, dy, 0), dx, 1)
        layers.append((grown & ~padded, ar + 1, ac + 1, style.outline))
        layers.append((padded, ar + 1, ac + 1, style.color))
    else:
        layers.append((mask, ar, ac, style.color))
    return layers


def footprint(style: MarkerStyle) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) extent of the marker in pixels around the query pixel."""
    h, w = stencil(style.shape, style.size)[0].shape
    _, ar, ac = stencil(style.shape, style.size)
    pad = 1 if style.outline is not None else 0
    return ac + pad, ar + pad, w - 1 - ac + pad, h - 1 - ar + pad


def fits(style: MarkerStyle, x: int, y: int, width: int, height: int) -> bool:
    left, top, right, bottom = footprint(style)
    return x - left >= 0 and y - top >= 0 and x + right <= width - 1 and y + bottom <= height - 1


def draw(image: np.ndarray, x: int, y: int, style: MarkerStyle) -> None:
    """Draw the marker in place on an (H, W, 3) uint8 array. The caller checks ``fits`` first."""
    h, w = image.shape[:2]
    if not fits(style, x, y, w, h):
        raise ValueError(f"marker at ({x}, {y}) does not fit in a {w}x{h} image")
    for mask, ar, ac, color in _layers(style):
        top, left = y - ar, x - ac
        region = image[top:top + mask.shape[0], left:left + mask.shape[1]]
        region[mask] = color


# words a question can use for a marker's color (two_point tells its two markers apart by these)
COLOR_NAMES = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
               "cyan": (0, 255, 255), "magenta": (255, 0, 255), "orange": (255, 140, 0), "white": (255, 255, 255),
               "black": (0, 0, 0)}


def color_name(rgb) -> str:
    """The nearest of COLOR_NAMES to an (r, g, b) color."""
    return min(COLOR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOR_NAMES[n], rgb)))
