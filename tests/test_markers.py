import numpy as np
import pytest

from rlkit.markers import MarkerStyle, draw, fits, footprint


def _drawn(style, x=10, y=10, size=(24, 24)):
    img = np.zeros((*size, 3), dtype=np.uint8)
    draw(img, x, y, style)
    return img


def _red_set(img):
    ys, xs = np.nonzero((img == [255, 0, 0]).all(-1))
    return set(zip(xs.tolist(), ys.tolist()))


def test_arrow_tip_on_pixel_shaft_to_lower_right():
    got = _red_set(_drawn(MarkerStyle("arrow", 5)))
    shaft = {(10 + i, 10 + i) for i in range(5)}
    head = {(10 + i, 10) for i in range(3)} | {(10, 10 + i) for i in range(3)}
    assert got == shaft | head
    assert footprint(MarkerStyle("arrow", 5)) == (0, 0, 4, 4)


def test_cross_and_circle_centered():
    cross = _red_set(_drawn(MarkerStyle("cross", 5)))
    assert cross == {(8 + i, 10) for i in range(5)} | {(10, 8 + i) for i in range(5)}
    ring = _red_set(_drawn(MarkerStyle("circle", 7)))
    assert (10, 10) not in ring  # the queried pixel stays visible
    assert {(7, 10), (13, 10), (10, 7), (10, 13)} <= ring
    xs, ys = zip(*ring)
    assert (min(xs), max(xs), min(ys), max(ys)) == (7, 13, 7, 13)


def test_color_and_outline():
    style = MarkerStyle("square", 3, color=(0, 255, 0), outline=(255, 255, 255))
    img = _drawn(style)
    assert (img[9:12, 9:12] == [0, 255, 0]).all()
    ring = (img[8:13, 8:13] == [255, 255, 255]).all(-1)
    assert ring.sum() == 16 and not ring[1:4, 1:4].any()
    assert footprint(style) == (2, 2, 2, 2)


def test_fits_at_the_borders():
    arrow = MarkerStyle("arrow", 5)
    assert fits(arrow, 0, 0, 20, 20) and fits(arrow, 15, 15, 20, 20)
    assert not fits(arrow, 16, 15, 20, 20) and not fits(arrow, 15, 16, 20, 20)
    cross = MarkerStyle("cross", 5)
    assert not fits(cross, 1, 5, 20, 20) and fits(cross, 2, 5, 20, 20)
    with pytest.raises(ValueError, match="does not fit"):
        draw(np.zeros((20, 20, 3), np.uint8), 16, 16, arrow)


def test_bad_style_is_rejected():
    with pytest.raises(ValueError, match="not one of"):
        MarkerStyle("star")
    with pytest.raises(ValueError, match=">= 3"):
        MarkerStyle("arrow", 1)
