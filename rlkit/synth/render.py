"""Vectorized ray casting of box worlds: exact per-pixel euclidean and principal-axis depth.

World frame: x right, y up, z forward at yaw 0. Camera frame: x right, y down, z forward.
Every pixel center (integer coordinates, see rlkit.camera) gets one ray; there is no
per-pixel Python loop: each primitive is intersected with all rays at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlkit.camera import Camera


@dataclass
class Box:
    """An axis-aligned box. ``inside`` boxes are rooms: the camera is within and sees the walls."""

    lo: np.ndarray
    hi: np.ndarray
    texture: dict
    inside: bool = False


@dataclass
class Scene:
    family: str
    boxes: list[Box]
    position: np.ndarray  # camera center, world
    yaw: float  # radians, left-right
    pitch: float  # radians, positive looks up
    roll: float
    camera: Camera
    ground: dict | None = None  # texture of the infinite plane y = 0 (outdoor), None indoors
    sky: tuple = (150, 190, 235)
    light: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.8, -0.45]))
    fog: float = 0.0  # extinction per meter
    # > 0: a light at the camera (a flash) instead of the sun; a surface facing it this many meters away is half lit
    lamp: float = 0.0


def camera_to_world(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation taking camera-frame vectors (x right, y down, z forward) to the world frame."""
    flip = np.diag([1.0, -1.0, 1.0])  # camera y down -> world y up
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return r_yaw @ r_pitch @ r_roll @ flip


def pixel_rays(cam: Camera) -> np.ndarray:
    """(H, W, 3) camera-frame rays with z = 1, through every pixel center."""
    u = (np.arange(cam.width) - cam.cx) / cam.fx
    v = (np.arange(cam.height) - cam.cy) / cam.fy
    rays = np.empty((cam.height, cam.width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    return rays


@dataclass
class Hit:
    t: np.ndarray  # (P,) ray parameter along the z=1 ray = principal-axis depth; inf for sky
    prim: np.ndarray  # (P,) index into boxes, -1 ground, -2 sky
    axis: np.ndarray  # (P,) normal axis 0/1/2
    sign: np.ndarray  # (P,) normal sign +-1


def _screen_rect(box: Box, scene: Scene, rot: np.ndarray) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (x0, y0, x1, y1) that holds the box's projection; None: the whole image."""
    cam = scene.camera
    corners = np.array([[x, y, z] for x in (box.lo[0], box.hi[0]) for y in (box.lo[1], box.hi[1])
                        for z in (box.lo[2], box.hi[2])]) - scene.position
    c = corners @ rot  # world -> camera frame (rot is orthonormal)
    if (c[:, 2] <= 1e-3).any():  # a corner at or behind the camera plane: no safe rectangle
        return None if (c[:, 2] > 1e-3).any() or box.inside else (0, 0, 0, 0)
    u = cam.fx * c[:, 0] / c[:, 2] + cam.cx
    v = cam.fy * c[:, 1] / c[:, 2] + cam.cy
    x0, x1 = max(0, int(np.floor(u.min()))), min(cam.width, int(np.ceil(u.max())) + 1)
    y0, y1 = max(0, int(np.floor(v.min()))), min(cam.height, int(np.ceil(v.max())) + 1)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else (0, 0, 0, 0)


def _intersect(box: Box, o: np.ndarray, dirs: np.ndarray, inv: np.ndarray):
    """(t, normal axis, normal sign) of rays against one box; t is inf where they miss."""
    n = len(dirs)
    with np.errstate(invalid="ignore"):
        t1 = (box.lo - o) * inv
        t2 = (box.hi - o) * inv
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    if box.inside:
        ax = np.argmin(far, axis=1)
        t = far[np.arange(n), ax]
    else:
        ax = np.argmax(near, axis=1)
        t = near[np.arange(n), ax]
        t = np.where((t <= far.min(axis=1)) & (t > 1e-6), t, np.inf)
    return t, ax, -np.sign(dirs[np.arange(n), ax])  # faces point back toward the camera


def cast(scene: Scene, dirs: np.ndarray, rot: np.ndarray | None = None) -> Hit:
    """Nearest intersection of rays from the camera center along world directions.

    ``dirs`` is (H*W, 3) in image order; with ``rot`` (camera-to-world) each box is tested only
    against the rays inside its projected screen rectangle, which is exact and much faster.
    """
    n = len(dirs)
    cam = scene.camera
    o = scene.position
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
    best = np.full(n, np.inf)
    prim = np.full(n, -2, dtype=np.int32)
    axis = np.zeros(n, dtype=np.int8)
    sign = np.ones(n, dtype=np.int8)
    if scene.ground is not None:
        t = np.where(dirs[:, 1] < 0, -o[1] * inv[:, 1], np.inf)
        closer = t < best
        best[closer], prim[closer], axis[closer], sign[closer] = t[closer], -1, 1, 1
    grid = np.arange(n).reshape(cam.height, cam.width)
    for k, box in enumerate(scene.boxes):
        rect = _screen_rect(box, scene, rot) if rot is not None else None
        idx = grid[rect[1]:rect[3], rect[0]:rect[2]].ravel() if rect is not None else np.arange(n)
        if not len(idx):
            continue
        t, ax, s = _intersect(box, o, dirs[idx], inv[idx])
        closer = t < best[idx]
        sel = idx[closer]
        best[sel], prim[sel], axis[sel], sign[sel] = t[closer], k, ax[closer], s[closer]
    return Hit(best, prim, axis, sign)


def _texture(tex: dict, uv: np.ndarray) -> np.ndarray:
    """Base colors (P, 3) float of a metric texture at surface coordinates uv (P, 2) in meters."""
    kind = tex["kind"]
    c1 = np.asarray(tex["color"], dtype=np.float64)
    c2 = np.asarray(tex.get("color2", c1 * 0.7), dtype=np.float64)
    if kind == "plain":
        mix = np.zeros(len(uv))
    elif kind == "checker":
        s = tex["size"]
        mix = ((np.floor(uv[:, 0] / s) + np.floor(uv[:, 1] / s)) % 2).astype(np.float64)
    elif kind == "stripes":
        mix = (np.floor(uv[:, tex.get("dir", 0)] / tex["size"]) % 2).astype(np.float64)
    elif kind == "grid":  # lines of width w every size meters (tiles, planks, windows)
        s, w = tex["size"], tex["width"]
        fu = np.mod(uv[:, 0], s) < w
        fv = np.mod(uv[:, 1], tex.get("size_v", s)) < tex.get("width_v", w)
        mix = (fu | fv).astype(np.float64)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return c1[None] * (1 - mix[:, None]) + c2[None] * mix[:, None]


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8 (H, W, 3), euclidean depth (H, W), principal-axis depth (H, W)); sky is inf."""
    cam = scene.camera
    rays_c = pixel_rays(cam).reshape(-1, 3)
    rot = camera_to_world(scene.yaw, scene.pitch, scene.roll)
    dirs = rays_c @ rot.T
    hit = cast(scene, dirs, rot)
    axis_depth = hit.t  # rays have camera-frame z = 1
    euclid = hit.t * np.linalg.norm(rays_c, axis=1)

    color = np.empty((len(dirs), 3))
    sky = ~np.isfinite(hit.t)
    color[sky] = scene.sky
    pts = scene.position[None] + dirs * np.where(sky, 0, hit.t)[:, None]
    normal = np.zeros_like(pts)
    idx = np.flatnonzero(~sky)
    normal[idx, hit.axis[idx]] = hit.sign[idx]
    light = scene.light / np.linalg.norm(scene.light)
    shade = 0.55 + 0.45 * np.clip(normal @ light, 0, 1)
    if scene.lamp > 0:  # irradiance falls as cos / d^2: brightness is a local, metric depth cue
        facing = np.abs((normal * dirs).sum(1)) / np.linalg.norm(dirs, axis=1)
        with np.errstate(divide="ignore"):
            irradiance = facing * (scene.lamp / euclid) ** 2
        shade = 0.15 + 0.85 * irradiance / (1 + irradiance)  # a camera's soft shoulder: no clipping near
    textures = [scene.ground] + [b.texture for b in scene.boxes]
    for k, tex in enumerate(textures, start=-1):
        sel = np.flatnonzero(hit.prim == k)
        if not len(sel):
            continue
        ax = hit.axis[sel]
        # surface coordinates: the two world axes other than the normal's
        u_axis = np.where(ax == 0, 2, 0)
        v_axis = np.where(ax == 1, 2, 1)
        p = pts[sel]
        uv = np.stack([p[np.arange(len(sel)), u_axis], p[np.arange(len(sel)), v_axis]], axis=1)
        color[sel] = _texture(tex, uv) * shade[sel, None]
    if scene.fog > 0:
        keep = np.exp(-scene.fog * np.where(sky, 0, euclid))[:, None]
        color = color * keep + np.asarray(scene.sky, dtype=np.float64)[None] * (1 - keep)
    rgb = np.clip(color, 0, 255).astype(np.uint8).reshape(cam.height, cam.width, 3)
    return rgb, euclid.reshape(cam.height, cam.width), axis_depth.reshape(cam.height, cam.width)
