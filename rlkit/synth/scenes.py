"""Random indoor and outdoor box worlds with consistent metric sizes and metric textures.

Object sizes come from small catalogues (a car is always about 4.5 x 1.5 x 1.8 m, a door
frame 2 m, floor tiles 0.5 m), so distance is readable from appearance, and the camera
intrinsics come from a wide range, so the same scene through a longer lens looks closer
(the camera ambiguity the paper studies). Rooms are lit by a distant light, or (``Rooms.lamp``)
by a lamp at the camera whose light falls off with distance (a flash photograph), which gives the
indoor family a local depth cue as the haze does outdoors; ``Rooms.color_jitter`` narrows how much
the paint varies from room to room, so that brightness says more about distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlkit.camera import Camera
from rlkit.synth.render import Box, Scene

FAMILIES = ("indoor", "outdoor")


@dataclass(frozen=True)
class CameraRange:
    """Image sizes and fields of view to draw from. Defaults suit the CPU miniature."""

    width: tuple[int, int] = (160, 320)
    aspect: tuple[float, float] = (0.6, 0.85)  # height / width
    hfov_deg: tuple[float, float] = (45.0, 95.0)
    anisotropic: float = 0.2  # share of cameras with fx != fy
    principal_jitter: float = 0.04  # of the image size


@dataclass(frozen=True)
class Rooms:
    """How the indoor family looks. The defaults (sunlight, the full spread of paints) leave indoor
    brightness with little to say about distance; lamp and color_jitter add that cue."""

    lamp: float = 0.0  # > 0: lit from the camera; a facing surface this many meters away is half lit
    color_jitter: float = 1.0  # scales the random room-to-room spread of paint colors (0: fixed paints)

    def __post_init__(self):
        if self.lamp < 0 or self.color_jitter < 0:
            raise ValueError(f"room lamp and color jitter must be >= 0, got {self}")


def sample_camera(rng: np.random.Generator, r: CameraRange) -> Camera:
    width = int(rng.integers(r.width[0], r.width[1] + 1))
    height = max(8, int(round(width * rng.uniform(*r.aspect))))
    fx = width / (2 * np.tan(np.radians(rng.uniform(*r.hfov_deg)) / 2))
    fy = fx * (rng.uniform(0.85, 1.15) if rng.random() < r.anisotropic else 1.0)
    cx = (width - 1) / 2 + rng.uniform(-1, 1) * r.principal_jitter * width
    cy = (height - 1) / 2 + rng.uniform(-1, 1) * r.principal_jitter * height
    return Camera(float(fx), float(fy), float(cx), float(cy), width, height)


def _color(rng, base, spread=30):
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


def _box(center_xz, size, y0, texture):
    (x, z), (sx, sy, sz) = center_xz, size
    return Box(np.array([x - sx / 2, y0, z - sz / 2]), np.array([x + sx / 2, y0 + sy, z + sz / 2]), texture)


# (name, size x, y, z in meters, base color, texture)
FURNITURE = [
    ("table", (1.4, 0.75, 0.8), (150, 100, 60), {"kind": "stripes", "size": 0.1, "dir": 0}),
    ("chair", (0.45, 0.9, 0.45), (120, 70, 40), {"kind": "plain"}),
    ("cabinet", (0.9, 2.0, 0.5), (200, 190, 170), {"kind": "grid", "size": 0.45, "width": 0.03}),
    ("bed", (1.6, 0.55, 2.0), (90, 110, 160), {"kind": "checker", "size": 0.4}),
    ("sofa", (2.0, 0.85, 0.9), (110, 140, 90), {"kind": "stripes", "size": 0.25, "dir": 1}),
    ("shelf", (1.0, 1.8, 0.35), (170, 130, 80), {"kind": "grid", "size": 1.0, "width": 0.05,
                                                "size_v": 0.4, "width_v": 0.04}),
    ("box", (0.5, 0.5, 0.5), (190, 150, 100), {"kind": "plain"}),
]


def indoor_scene(rng: np.random.Generator, cam: Camera, look: Rooms = Rooms()) -> Scene:
    def paint(base, spread=30):
        s = int(spread * look.color_jitter)
        color = _color(rng, base, max(s, 1))  # draws even when s == 0: the geometry never depends on the paints
        return color if s else tuple(base)

    w, d, h = rng.uniform(3.5, 9.0), rng.uniform(4.0, 13.0), rng.uniform(2.5, 3.4)
    room_tex = {"kind": "grid", "size": 0.5, "width": 0.03, "color": paint((205, 200, 185), 25),
                "color2": (120, 110, 100)}
    floor_tex = {"kind": "checker", "size": 0.5, "color": paint((160, 120, 80), 40),
                 "color2": paint((90, 70, 50), 20)}
    room = Box(np.array([-w / 2, 0.0, -d / 2]), np.array([w / 2, h, d / 2]), room_tex, inside=True)
    boxes = [room]
    cam_pos = np.array([rng.uniform(-0.3, 0.3) * w, rng.uniform(1.0, 1.8), -d / 2 + rng.uniform(0.3, 1.5)])
    for _ in range(int(rng.integers(3, 9))):
        name, size, base, tex = FURNITURE[int(rng.integers(len(FURNITURE)))]
        size = tuple(s * rng.uniform(0.9, 1.1) for s in size)
        x = rng.uniform(-w / 2 + size[0] / 2, w / 2 - size[0] / 2)
        z = rng.uniform(cam_pos[2] + 1.0, d / 2 - size[2] / 2)
        if z - size[2] / 2 < cam_pos[2] + 0.5:
            continue
        boxes.append(_box((x, z), size, 0.0, {**tex, "color": paint(base)}))
    # the floor is the room's bottom face; give it its own texture via a thin slab
    boxes.insert(1, Box(np.array([-w / 2, -0.01, -d / 2]), np.array([w / 2, 0.001, d / 2]), floor_tex))
    return Scene("indoor", boxes, cam_pos, yaw=rng.uniform(-0.5, 0.5), pitch=np.radians(rng.uniform(-25, 5)),
                 roll=np.radians(rng.uniform(-3, 3)), camera=cam, ground=None, sky=(0, 0, 0),
                 fog=0.0, lamp=look.lamp)


def outdoor_scene(rng: np.random.Generator, cam: Camera) -> Scene:
    road_w = rng.uniform(6.0, 10.0)
    ground = {"kind": "grid", "size": 3.0, "width": 0.15, "size_v": 100.0, "width_v": 0.0,
              "color": _color(rng, (95, 95, 100), 15), "color2": (230, 230, 220)}
    boxes = []
    # sidewalks and buildings on both sides, repeating along the street
    for side in (-1, 1):
        z = rng.uniform(-5, 5)
        while z < 120:
            bw, bh, bd = rng.uniform(8, 20), rng.uniform(6, 30), rng.uniform(8, 15)
            x = side * (road_w / 2 + 2.0 + rng.uniform(0, 6) + bd / 2)
            wall = {"kind": "grid", "size": 3.0, "width": 1.2, "size_v": 3.2, "width_v": 1.4,
                    "color": _color(rng, (180, 160, 140), 50), "color2": (60, 75, 95)}
            boxes.append(_box((x, z + bw / 2), (bd, bh, bw), 0.0, wall))
            z += bw + rng.uniform(0, 6)
        walk = {"kind": "checker", "size": 1.0, "color": (170, 165, 160), "color2": (150, 145, 140)}
        boxes.append(Box(np.array([min(side * road_w / 2, side * (road_w / 2 + 2.0)), 0.0, -10.0]),
                         np.array([max(side * road_w / 2, side * (road_w / 2 + 2.0)), 0.15, 130.0]), walk))
    for _ in range(int(rng.integers(2, 9))):  # cars: 4.5 x 1.5 x 1.8 m, along the road
        lane = rng.choice([-1, 1]) * road_w / 4
        z = rng.uniform(4, 70)
        car = {"kind": "stripes", "size": 0.75, "dir": 1, "color": _color(rng, (160, 40, 40), 90),
               "color2": (40, 45, 55)}
        boxes.append(_box((lane + rng.uniform(-0.4, 0.4), z), (1.8 * rng.uniform(0.95, 1.05), 1.5, 4.5), 0.0, car))
    cam_pos = np.array([rng.uniform(-road_w / 4, road_w / 4), rng.uniform(1.4, 2.2), 0.0])
    return Scene("outdoor", boxes, cam_pos, yaw=rng.uniform(-0.35, 0.35), pitch=np.radians(rng.uniform(-12, 4)),
                 roll=np.radians(rng.uniform(-2, 2)), camera=cam, ground=ground, fog=0.004)


def sample_scene(family: str, rng: np.random.Generator, cam_range: CameraRange, rooms: Rooms = Rooms()) -> Scene:
    cam = sample_camera(rng, cam_range)
    if family == "indoor":
        return indoor_scene(rng, cam, rooms)
    if family == "outdoor":
        return outdoor_scene(rng, cam)
    raise ValueError(f"unknown scene family {family!r}; choose from {FAMILIES}")
