"""ScanNet++ iPhone stream: RGB frames with the iPhone LiDAR's depth, the part the official DepthLM curation uses.

SOURCE is the release's data/ folder (one folder per scene) after the ScanNet++ toolkit's
``python -m iphone.prepare_iphone_data`` extracted each scene's frames: SCENE/iphone/rgb/frame_NNNNNN.jpg (the video's
frames at its own size, 1920x1440), rgb_masks/frame_NNNNNN.png and depth/frame_NNNNNN.png, beside
pose_intrinsic_imu.json (per frame: ``intrinsic``, the 3x3 K of the RGB frame). The toolkit (iphone/
prepare_iphone_data.py) writes the depth as uint16 millimeters at 256x192, 0 = none; its iphone/arkit_pcl.py
back-projects it as camera z (K^-1 (x, y, 1) z) with K used at integer pixel coordinates, the kit's convention.

As the official curation (utils/curate_scannet.py): the iPhone stream, every 10th frame (its sample_interval 10;
here the frames whose number is a multiple of 10, so the pick does not depend on file order), and labels only where
the anonymization mask is not 0. Unlike it: the RGB stays at its own size (it resizes to 1280x960), K comes from
each frame's own entry (it hard-codes 1427.4375 / 959.5 / 719.5 for every scene), and the depth is not stretched
over the image: each 256x192 depth pixel labels only the RGB pixel nearest its center, (j + 0.5) * W / w - 0.5 (at
7.5x, 0.25 px off; the official code gives every RGB pixel the depth of the depth pixel containing it, up to half a
depth pixel from where that depth was measured: wrong by the depth step at every edge). Its euclidean conversion,
sqrt(((x - cx) / fx)^2 + ((y - cy) / fy)^2 + z^2), also forgets to multiply the ray by z; the kit's core does
z * sqrt(... + 1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing
from rlkit.convert.readers import read_png16

SAMPLE_INTERVAL = 10  # every 10th frame, as the official curation's sample_interval
MM = 0.001


def scannetpp(source: Path):
    """One entry per sampled frame of every SCENE/iphone below SOURCE, named SCENE/frame_NNNNNN."""

    scenes = sorted(p.parent.parent for p in source.glob("*/iphone/pose_intrinsic_imu.json"))
    if not scenes:
        raise ConvertError(f"scannetpp: no SCENE/iphone/pose_intrinsic_imu.json in {source}; SOURCE is the ScanNet++ "
                           "data/ folder, its iPhone frames extracted with the toolkit's iphone.prepare_iphone_data")
    spec = DepthSpec(kind="z", scale=MM, native="ScanNet++ iPhone depth/*.png: uint16 mm of camera z at 256x192, "
                                                "0 = none, each depth pixel on the RGB pixel nearest its center; "
                                                "anonymized pixels (rgb_masks 0) never labeled")
    entries = []
    for scene_dir in scenes:
        iphone = scene_dir / "iphone"
        cameras = read_intrinsics(iphone / "pose_intrinsic_imu.json")
        for image in sorted((iphone / "rgb").glob("frame_*.jpg")):
            number = re.fullmatch(r"frame_(\d+)", image.stem)
            if number is None or int(number.group(1)) % SAMPLE_INTERVAL:
                continue
            depth, mask = iphone / "depth" / f"{image.stem}.png", iphone / "rgb_masks" / f"{image.stem}.png"
            for what, path in (("depth map", depth), ("anonymization mask", mask)):
                if not path.is_file():
                    raise ConvertError(f"scannetpp: the {what} of {image} is missing: {path}")
            if image.stem not in cameras:
                raise ConvertError(f"{iphone / 'pose_intrinsic_imu.json'}: no entry for {image.stem}")
            name = f"{scene_dir.name}/{image.stem}"
            entries.append(Entry(name, lambda name=name, image=image, depth=depth, mask=mask,
                                 camera=cameras[image.stem], scene=scene_dir.name:
                                 _frame(name, image, depth, mask, camera, scene)))
    if not entries:
        raise ConvertError(f"scannetpp: no iphone/rgb/frame_NNNNNN.jpg numbered a multiple of {SAMPLE_INTERVAL} "
                           f"below {source}")
    return Listing(entries, spec)


def read_intrinsics(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """{frame: (fx, fy, cx, cy)} from pose_intrinsic_imu.json's ``intrinsic`` (3x3 K) of every frame."""
    try:
        frames = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConvertError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(frames, dict):
        raise ConvertError(f"{path}: expected an object of frames, got {type(frames).__name__}")
    out = {}
    for frame, data in frames.items():
        try:
            k = np.asarray(data["intrinsic"], dtype=np.float64).reshape(3, 3)
        except (TypeError, KeyError, ValueError):
            raise ConvertError(f"{path}: {frame}: key 'intrinsic' is not a 3x3 matrix") from None
        out[frame] = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
    return out


def _frame(name: str, image: Path, depth_path: Path, mask_path: Path, camera: tuple, scene: str) -> Frame:
    """The depth placed on an image-sized map (0 elsewhere: no measurement); the image's size is the mask's (the
    converter checks both against the image)."""

    depth = read_png16(depth_path, str(depth_path))
    try:
        with Image.open(mask_path) as img:
            valid = np.asarray(img.convert("L")) != 0
    except Exception as e:  # a missing, cut or corrupt PNG: PIL raises OSError, SyntaxError, ValueError...
        raise ConvertError(f"{mask_path}: cannot be read as a mask ({type(e).__name__}: {e})") from None
    (height, width), (h, w) = valid.shape, depth.shape
    if width * h != height * w:
        raise ConvertError(f"{depth_path} is {w}x{h} but its mask {mask_path} is {width}x{height}: not the same "
                           "aspect ratio")
    rows = np.rint((np.arange(h) + 0.5) * height / h - 0.5).astype(np.int64)
    cols = np.rint((np.arange(w) + 0.5) * width / w - 0.5).astype(np.int64)
    sparse = np.zeros((height, width), dtype=np.uint16)
    sparse[np.ix_(rows, cols)] = depth
    return Frame(name, camera, sparse, str(depth_path), image_path=image, valid=valid, scene=scene)
