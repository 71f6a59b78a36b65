"""Readers shared by the adapters: depth files in their own units, 16-bit PNGs, intrinsics text files, and bilinear
sampling of an RGB image (for adapters that undistort)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rlkit.convert.core import ConvertError



def read_depth_file(path: Path, source: str) -> np.ndarray:
    """A depth map file as an array in its own units: .npy, .npz (the array 'depth', or the only one), or an image
    PIL reads as 16-bit or 32-bit single channel (PNG, TIFF: modes I;16, I, F). 8-bit images are refused."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "depth" in keys:
                    return z["depth"]
                if len(keys) == 1:
                    return z[keys[0]]
                raise ConvertError(f"{source}: {path} holds {keys}, not one array or an array named 'depth'")
        with Image.open(path) as img:
            if img.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise ConvertError(f"{source}: {path} is a {img.mode} image, not a 16-bit or 32-bit single-channel "
                                   "depth map")
            return np.asarray(img)
    except FileNotFoundError:
        raise ConvertError(f"{source}: depth file not found: {path}") from None
    except (UnidentifiedImageError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # a cut or corrupt file
        raise ConvertError(f"{source}: {path} cannot be read as a depth map ({type(e).__name__}: {e})") from None


def read_png16(path: Path, source: str) -> np.ndarray:
    """A 16-bit PNG as uint16 (KITTI's and SUN RGB-D's depth)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("I;16", "I;16B", "I;16L") and not (img.mode == "I" and img.format == "PNG"):
                raise ConvertError(f"{source}: {path} is a {img.mode} image, not a 16-bit PNG")
            return np.asarray(img).astype(np.uint16)
    except FileNotFoundError:
        raise ConvertError(f"{source}: depth file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ConvertError(f"{source}: {path} cannot be read as a 16-bit PNG ({e})") from None


def _numbers(text: str) -> list[float]:
    return [float(t) for t in re.split(r"[\s,;]+", re.sub(r"#.*", "", text).strip()) if t]


def read_intrinsics_file(path: Path, source: str) -> tuple[float, float, float, float]:
    """fx fy cx cy from a text file of 4 numbers (fx fy cx cy) or 9 (the 3x3 matrix K row by row:
    fx 0 cx 0 fy cy 0 0 1, as KITTI's depth-selection intrinsics/*.txt and SUN RGB-D's intrinsics.txt)."""
    try:
        nums = _numbers(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{source}: intrinsics file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, binary data
        raise ConvertError(f"{source}: {path}: cannot be read as an intrinsics text file "
                           f"({type(e).__name__}: {getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:
        raise ConvertError(f"{source}: {path}: not a list of numbers ({e})") from None
    if len(nums) == 4:
        return tuple(nums)
    if len(nums) == 12:  # a 3x4 projection matrix P = K [R|t] (KITTI P_rect rows), K is its first three columns
        nums = nums[0:3] + nums[4:7] + nums[8:11]
    if len(nums) == 9:
        k = np.array(nums).reshape(3, 3)
        if k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0 or k[2, 2] != 1:
            raise ConvertError(f"{source}: {path}: a camera matrix K must read fx s cx / 0 fy cy / 0 0 1, got "
                               f"{k.tolist()}")
        return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])
    raise ConvertError(f"{source}: {path} has {len(nums)} numbers; expected 4 (fx fy cx cy), 9 (K) or 12 (P)")


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(H, W, C) float image sampled at pixel-center coordinates; black outside."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)

    def at(yy, xx):
        return img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]

    out = (at(y0, x0) * (1 - ax) * (1 - ay) + at(y0, x0 + 1) * ax * (1 - ay)
           + at(y0 + 1, x0) * (1 - ax) * ay + at(y0 + 1, x0 + 1) * ax * ay)
    out[~inside] = 0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
