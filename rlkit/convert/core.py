"""The generic converter: RGB images + depth maps + intrinsics -> a DepthLMBench jsonl.

An adapter (rlkit.convert.adapters) lists a dataset's images as Entries, each of which loads one Frame: the RGB
image (a file to copy as is, or an array to write as PNG), the depth map in the dataset's own units, the pinhole
intrinsics in the kit's pixel convention (integer coordinates are pixel centers, rlkit.camera) and optionally a
mask of pixels the dataset marks unusable. Everything else happens here, once for every dataset:

- the depth as read, times ``scale``, is meters of either camera z (``kind="z"``) or euclidean distance from the
  camera center (``kind="euclidean"``); the jsonl always gets ``depth`` = euclidean distance and ``axis_depth`` =
  camera z, the one computed from the other with the pixel's ray ((x - cx) / fx, (y - cy) / fy, 1):
  euclidean = z * sqrt(((x - cx) / fx)^2 + ((y - cy) / fy)^2 + 1);
- a pixel is never labeled when its depth is not finite, is one of ``invalid_values`` (compared with the depth as
  read, before ``scale``: a sensor's saturation code), is <= 0, is outside [min_depth, max_depth] (meters of the
  kind read), is masked by the dataset, is farther than rlkit.records.MAX_DEPTH, or lies within ``margin`` pixels
  of the border (so a marker can be drawn around it);
- ``labels`` pixels per image are drawn uniformly without replacement from the rest, with a generator seeded by
  (seed, a hash of the image's name): an image's labels depend on nothing but its own data, the seed and its name
  (not on the order, a subset or an --exclude); an image with no such pixel is skipped and counted;
- output appears only when the whole conversion succeeded: images (and depth maps) are written into a hidden
  staging folder beside the jsonl; at the end (with --overwrite) the old jsonl is removed and the old output's files
  the new one does not write are deleted, then OUT.convert.json (what was read and written, counts, the files) is
  written, the files are moved into place and the jsonl is written, atomically and last: a jsonl on disk always
  describes the files beside it. Any error removes the staging folder. A file that exists is replaced only when it
  belongs to the output being replaced (--overwrite, listed in its OUT.convert.json), never another output's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from rlkit.errors import ConfigError
from rlkit.io import atomic_write_text
from rlkit.records import FOCAL_RANGE, MAX_DEPTH, MAX_SIDE

log = logging.getLogger(__name__)

DEPTH_KINDS = ("euclidean", "z")
# what each kind of input becomes in the jsonl (printed and written to OUT.convert.json)
WRITTEN = {
    "z": {"depth": "euclidean distance from the camera center, meters, converted from the camera z read with each "
                   "image's intrinsics",
          "axis_depth": "camera z (distance along the principal axis), meters, as read"},
    "euclidean": {"depth": "euclidean distance from the camera center, meters, as read",
                  "axis_depth": "camera z (distance along the principal axis), meters, converted from the euclidean "
                                "distance read with each image's intrinsics"},
}
PIXEL_REASONS = ("not_finite", "invalid_value", "nonpositive", "below_min_depth", "above_max_depth", "masked",
                 "margin")


class ConvertError(ConfigError):
    """Bad conversion input; the message names the file (and key). The command line reports it as one line, exit 2."""


@dataclass(frozen=True)
class DepthSpec:
    """How a dataset's depth maps read: ``kind`` ('z' or 'euclidean'), meters = value * ``scale``, values that
    mean "no measurement", the range of usable meters, and a sentence saying all that for the record."""

    kind: str
    scale: float = 1.0
    invalid_values: tuple[float, ...] = ()
    min_depth: float = 1e-3
    max_depth: float | None = None
    native: str = ""

    def __post_init__(self):
        if self.kind not in DEPTH_KINDS:
            raise ConvertError(f"depth kind must be one of {DEPTH_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConvertError(f"--scale must be a positive number, got {self.scale}")
        if not (math.isfinite(self.min_depth) and self.min_depth >= 0):
            raise ConvertError(f"--min-depth must be >= 0 meters, got {self.min_depth}")
        if self.max_depth is not None and not (self.max_depth > self.min_depth):
            raise ConvertError(f"--max-depth ({self.max_depth}) must be larger than --min-depth ({self.min_depth})")


@dataclass
class Frame:
    """One image of a dataset, loaded. ``intrinsics``: (fx, fy, cx, cy) in pixels, integer coordinates at pixel
    centers (OpenCV's convention, rlkit.camera); the image size comes from the image itself."""

    name: str  # unique within a conversion: the output image is IMAGES_DIR/NAME.EXT; also keys the label seed
    intrinsics: tuple[float, float, float, float]
    depth: np.ndarray  # (H, W), the dataset's own units (DepthSpec says how they read)
    source: str  # where this frame came from, for messages: a file, "file: key", "manifest:line"
    image_path: Path | None = None  # an image file, copied as is ...
    rgb: np.ndarray | None = None  # ... or an (H, W, 3) uint8 array, written as PNG
    valid: np.ndarray | None = None  # (H, W) bool, False where the dataset says the depth is unusable
    scene: str | None = None


@dataclass(frozen=True)
class Entry:
    """A frame not loaded yet: adapters list every entry (checking files exist) before anything is read."""

    name: str
    load: Callable[[], Frame]


@dataclass
class Report:
    images_listed: int = 0
    images_excluded: int = 0
    images_written: int = 0
    skipped: Counter = field(default_factory=Counter)
    fewer_labels: int = 0  # images with fewer valid pixels than labels asked for (all of them were taken)
    labels: int = 0
    pixels: Counter = field(default_factory=Counter)  # every pixel of every image, by the first reason it failed
    first_skipped: list = field(default_factory=list)  # the first skipped images, for the record


@dataclass
class Listing:
    """What an adapter lists: its entries, how their depth reads, and its default crop."""

    entries: list[Entry]
    spec: DepthSpec
    crop: tuple[int, int, int, int] | None = None  # the adapter's default crop (nyuv2)


def is_relative_name(name: str) -> bool:
    """A relative path of forward-slash parts, none of them empty, '.' or '..'."""
    parts = name.split("/")
    return bool(name) and not (os.path.isabs(name) or "\\" in name or any(p in ("", ".", "..") for p in parts)
                               or "\x00" in name)


MAX_NAME_PART = 200  # bytes; + ".png", ".depth.npz": file systems allow 255


def check_name(name: str, what: str) -> str:
    """An output name: a relative path without '..', each part short enough to be a file name."""
    if not is_relative_name(name):
        raise ConvertError(f"{what} {name!r} must be a relative path without '..' or empty parts")
    if any(len(part.encode()) > MAX_NAME_PART for part in name.split("/")):
        raise ConvertError(f"{what} {name[:60]!r}... has a part longer than {MAX_NAME_PART} bytes, more than a file "
                           "name can hold")
    return name


def seed_for(seed: int, name: str) -> np.random.Generator:
    """The label generator of one image: the run's seed and a stable hash of the image's name."""
    key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def ray_norms(fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> np.ndarray:
    """(H, W) length of each pixel's ray ((x - cx) / fx, (y - cy) / fy, 1): euclidean distance / camera z."""
    x = (np.arange(width, dtype=np.float64) - cx) / fx
    y = (np.arange(height, dtype=np.float64) - cy) / fy
    return np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)


def _round(v: float) -> float:
    return float(f"{v:.7g}")  # float32-like precision; never rounds a positive depth to 0


def read_image(frame: Frame, pixels: bool) -> tuple[int, int, np.ndarray | None]:
    """(width, height, the RGB pixels: the frame's array, or the file's when ``pixels``). A file is decoded whole even
    when it is only copied (PIL's open reads just the header): a truncated or corrupt image is a one-line error
    naming it here, like every other bad input of one image, not a traceback at --crop or a broken copy.
    (rlkit.records.open_image does not fit: it checks the size against intrinsics, and here the size comes from the
    image itself.)"""
    if frame.rgb is not None:
        rgb = frame.rgb
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ConvertError(f"{frame.source}: the RGB image is a {rgb.dtype} array of shape {rgb.shape}, "
                               "expected (height, width, 3) uint8")
        return rgb.shape[1], rgb.shape[0], rgb
    path = frame.image_path
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise ConvertError(f"{frame.source}: image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ConvertError(f"{frame.source}: {path} is not an image PIL can read ({e})") from None
    with img:
        try:
            img.load()  # a truncated file fails here, not at open
            return img.width, img.height, np.asarray(img.convert("RGB")) if pixels else None
        except Exception as e:  # broken data: PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error...
            raise ConvertError(f"{frame.source}: {path} cannot be decoded ({type(e).__name__}: {e})") from None


def _check_intrinsics(source: str, intrinsics: tuple, width: int, height: int) -> None:
    fx, fy, cx, cy = intrinsics
    lo, hi = FOCAL_RANGE
    if not all(math.isfinite(v) for v in intrinsics):
        raise ConvertError(f"{source}: intrinsics {list(intrinsics)} are not all finite")
    if not (lo <= fx <= hi and lo <= fy <= hi):
        raise ConvertError(f"{source}: focal lengths must be {lo:g} to {hi:g} pixels, got fx={fx}, fy={fy}")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ConvertError(f"{source}: the image is {width}x{height}; sides must be 1 to {MAX_SIDE} pixels")


def valid_pixels(depth: np.ndarray, spec: DepthSpec, norms: np.ndarray, dataset_valid: np.ndarray | None,
                 margin: int, counts: Counter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(usable mask, euclidean meters, camera z meters) of a depth map in the dataset's units; ``counts`` gets every
    pixel once, under the first reason (PIXEL_REASONS) that rules it out, or 'valid'."""
    height, width = depth.shape
    with np.errstate(invalid="ignore", over="ignore"):
        meters = depth.astype(np.float64) * spec.scale
        euclid = meters * norms if spec.kind == "z" else meters
        z = meters if spec.kind == "z" else meters / norms
        inner = np.zeros((height, width), dtype=bool)
        if width > 2 * margin and height > 2 * margin:
            inner[margin:height - margin, margin:width - margin] = True
        invalid_value = np.isin(depth, np.asarray(spec.invalid_values, dtype=np.float64)) if spec.invalid_values \
            else np.zeros_like(inner)
        checks = (
            ("not_finite", ~np.isfinite(meters)),
            ("invalid_value", invalid_value),
            ("nonpositive", meters <= 0),
            ("below_min_depth", meters < spec.min_depth),
            ("above_max_depth", (euclid > MAX_DEPTH) | (meters > spec.max_depth if spec.max_depth is not None
                                                         else False)),
            ("masked", ~dataset_valid if dataset_valid is not None else np.zeros_like(inner)),
        )
    bad = np.zeros((height, width), dtype=bool)
    for reason, rule in checks:
        new = rule & ~bad
        counts[reason] += int(new.sum())
        bad |= new
    measured = ~bad  # a usable depth, wherever it is (the depth map keeps these)
    usable = measured & inner
    counts["margin"] += int((measured & ~inner).sum())
    counts["valid"] += int(usable.sum())
    return usable, np.where(measured, euclid, np.nan), np.where(measured, z, np.nan)


@dataclass
class _Staging:
    """Files written under a hidden folder beside the jsonl, moved into place only at the end."""

    final_root: Path
    root: Path
    replaceable: frozenset = frozenset()  # the files of the output --overwrite replaces (its .convert.json lists them)
    files: list = field(default_factory=list)

    def path(self, rel: str) -> Path:
        dest = self.final_root / rel
        # never over another output's file (its jsonl would then describe an image it did not write); checked as each
        # file is staged, so a clash stops the run before the long part and before anything is moved
        if rel not in self.replaceable and (dest.exists() or dest.is_symlink()):
            raise ConvertError(f"{dest} already exists and is not a file of the output being replaced: write into "
                               "another --images-dir, or pass --overwrite when replacing the output that wrote it "
                               "(its .convert.json lists it)")
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(rel)
        return p

    def commit(self) -> None:
        for rel in self.files:
            dest = self.final_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.root / rel, dest)
        shutil.rmtree(self.root, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def previous_files(sidecar: Path) -> list[str]:
    """The files a previous conversion wrote, as its .convert.json lists them (relative to its folder); none when it
    has no readable list (then --overwrite replaces no existing file: the clash is refused)."""
    try:
        files = json.loads(sidecar.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and is_relative_name(f)] if isinstance(files, list) else []


def convert_frame(frame: Frame, spec: DepthSpec, *, labels: int, seed: int, margin: int,
                  crop: tuple[int, int, int, int] | None, images_dir: str, depth_maps: bool, staging: _Staging,
                  report: Report) -> dict | None:
    """Label one frame and stage its image (and depth map); the jsonl row, or None (a counted skip)."""
    width, height, rgb = read_image(frame, pixels=crop is not None)
    depth = np.asarray(frame.depth)
    if depth.ndim != 2:
        raise ConvertError(f"{frame.source}: the depth map has shape {depth.shape}, expected (height, width)")
    if depth.shape != (height, width):
        what = frame.image_path if frame.image_path is not None else "the RGB image"
        raise ConvertError(f"{frame.source}: the depth map is {depth.shape[1]}x{depth.shape[0]} but {what} is "
                           f"{width}x{height} (width x height); they must be pixel-aligned")
    if not (np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)):
        raise ConvertError(f"{frame.source}: the depth map holds {depth.dtype}, not numbers")
    dataset_valid = None if frame.valid is None else np.asarray(frame.valid, dtype=bool)
    if dataset_valid is not None and dataset_valid.shape != depth.shape:
        raise ConvertError(f"{frame.source}: the validity mask has shape {dataset_valid.shape}, the depth map "
                           f"{depth.shape}")
    fx, fy, cx, cy = (float(v) for v in frame.intrinsics)
    image_path = frame.image_path
    if crop is not None:
        x0, y0, x1, y1 = crop
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ConvertError(f"{frame.source}: crop {list(crop)} does not fit in the {width}x{height} image")
        image_path = None
        rgb, depth = rgb[y0:y1, x0:x1], depth[y0:y1, x0:x1]
        dataset_valid = None if dataset_valid is None else dataset_valid[y0:y1, x0:x1]
        cx, cy, width, height = cx - x0, cy - y0, x1 - x0, y1 - y0
    _check_intrinsics(frame.source, (fx, fy, cx, cy), width, height)

    norms = ray_norms(fx, fy, cx, cy, width, height)
    usable, euclid, z = valid_pixels(depth, spec, norms, dataset_valid, margin, report.pixels)
    candidates = np.flatnonzero(usable)
    if len(candidates) == 0:
        report.skipped["no_valid_pixel"] += 1
        if len(report.first_skipped) < 5:
            report.first_skipped.append(frame.source)
        log.debug("%s: no pixel with a valid depth %d px or more from the border; skipped", frame.source, margin)
        return None
    if len(candidates) < labels:
        report.fewer_labels += 1
    pick = seed_for(seed, frame.name).choice(candidates, size=min(labels, len(candidates)), replace=False)
    ys, xs = np.unravel_index(pick, usable.shape)

    ext = ".png" if image_path is None else image_path.suffix.lower()
    rel_image = f"{images_dir}/{frame.name}{ext}"
    if frame.image_path is not None and (staging.final_root / rel_image).resolve() == frame.image_path.resolve():
        raise ConvertError(f"{frame.source}: the output image {rel_image} would replace the source image "
                           f"{frame.image_path}; choose another --images-dir or --out folder")
    if image_path is None:
        Image.fromarray(np.ascontiguousarray(rgb)).save(staging.path(rel_image), compress_level=1)
    else:
        shutil.copyfile(image_path, staging.path(rel_image))
    row = {
        "image": rel_image,
        "intrinsics": [fx, fy, cx, cy, width, height],
        "pixel_coords": [[int(x), int(y)] for x, y in zip(xs, ys)],
        "depth": [_round(v) for v in euclid[ys, xs]],
        "axis_depth": [_round(v) for v in z[ys, xs]],
    }
    if frame.scene is not None:
        row["scene"] = frame.scene
    if depth_maps:  # what rlkit.pointcloud reads: float32 euclidean meters under 'depth', NaN = no measurement
        rel_depth = f"{images_dir}/{frame.name}.depth.npz"
        np.savez_compressed(staging.path(rel_depth), depth=euclid.astype(np.float32))
        row["depth_map"] = rel_depth
    report.labels += len(pick)
    report.images_written += 1
    return row


def convert(entries: Iterable[Entry], out: str | Path, spec: DepthSpec, *, labels: int = 100, seed: int = 0,
            margin: int = 10, crop: tuple[int, int, int, int] | None = None, images_dir: str = "rgb",
            depth_maps: bool = False, exclude: tuple[str, ...] = (), limit: int | None = None,
            overwrite: bool = False, progress: bool = True, info: dict | None = None) -> dict:
    """Write ``out`` (a DepthLMBench jsonl), its images under ``images_dir`` (relative to the jsonl's folder) and
    OUT.convert.json; returns what OUT.convert.json holds. ``exclude``: skip entries whose name contains any of
    these strings; ``limit``: only the first N entries left; ``info``: extra keys for OUT.convert.json (the adapter,
    the source, the command)."""
    out = Path(out)
    if labels < 1:
        raise ConvertError(f"--labels must be at least 1, got {labels}")
    if seed < 0:
        raise ConvertError(f"--seed must be >= 0, got {seed}")
    if margin < 0:
        raise ConvertError(f"--margin must be >= 0 pixels, got {margin}")
    if limit is not None and limit < 1:
        raise ConvertError(f"--limit must be at least 1, got {limit}")
    if crop is not None and not (len(crop) == 4 and crop[0] < crop[2] and crop[1] < crop[3] and min(crop) >= 0):
        raise ConvertError(f"--crop must be X0 Y0 X1 Y1 with 0 <= X0 < X1 and 0 <= Y0 < Y1, got {list(crop)}")
    check_name(images_dir, "--images-dir")
    if out.suffix != ".jsonl":
        raise ConvertError(f"--out {out}: the output must be a .jsonl file")
    sidecar = out.with_name(out.stem + ".convert.json")
    if max(len(f".{out.name}.partial".encode()), len(sidecar.name.encode())) > 255:
        raise ConvertError(f"--out {out}: the file name is too long (its sidecar {sidecar.name} and staging folder "
                           "must fit the file system's 255 bytes); choose a shorter name")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConvertError(f"--out {out}: {parent} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = open(_lock_file(out.parent), "w")
    except OSError as e:
        raise ConvertError(f"--out {out}: cannot write into {out.parent} ({e.strerror})") from None
    try:  # one convert at a time per output folder: a second one waits, then finds the first one's jsonl
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another convert is writing into %s: waiting for it to finish", out.parent)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _convert_locked(entries, out, sidecar, spec, labels=labels, seed=seed, margin=margin, crop=crop,
                               images_dir=images_dir, depth_maps=depth_maps, exclude=exclude, limit=limit,
                               overwrite=overwrite, progress=progress, info=info)
    finally:
        lock.close()  # releases the lock


def _lock_file(folder: Path) -> Path:
    """A lock file per output folder, kept out of it (on this machine's temp disk: converts into one folder on a
    shared file system from two machines are not serialized)."""
    locks = Path(tempfile.gettempdir()) / f"rlkit-convert-locks-{os.getuid()}"
    locks.mkdir(exist_ok=True)
    return locks / (hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24] + ".lock")


def _convert_locked(entries, out: Path, sidecar: Path, spec: DepthSpec, *, labels, seed, margin, crop, images_dir,
                    depth_maps, exclude, limit, overwrite, progress, info) -> dict:
    if out.exists() and not overwrite:
        raise ConvertError(f"--out {out} exists; pass --overwrite to replace it (and its images)")
    if out.is_dir():
        raise ConvertError(f"--out {out} is a folder")
    # --overwrite replaces the previous output whole: its files (and only those) may be replaced or deleted
    old_files = previous_files(sidecar) if overwrite else []

    entries = list(entries)
    report = Report(images_listed=len(entries))
    if exclude:
        kept = [e for e in entries if not any(s in e.name for s in exclude)]
        report.images_excluded = len(entries) - len(kept)
        entries = kept
    if limit is not None:
        entries = entries[:limit]
    if not entries:
        raise ConvertError(f"nothing to convert: {report.images_listed} images listed, "
                           f"{report.images_excluded} excluded")
    names = Counter(e.name for e in entries)
    twice = sorted(n for n, k in names.items() if k > 1)
    if twice:
        raise ConvertError(f"two images would be written as {images_dir}/{twice[0]}: names must be unique")
    for e in entries:
        check_name(e.name, "image name")

    staging = _Staging(out.parent, out.parent / f".{out.name}.partial", frozenset(old_files))
    staging.discard()  # a killed run's leftovers
    rows = []
    try:
        for entry in tqdm(entries, desc=f"convert {out.name}", unit="img", disable=not progress):
            row = convert_frame(entry.load(), spec, labels=labels, seed=seed, margin=margin, crop=crop,
                                images_dir=images_dir, depth_maps=depth_maps, staging=staging, report=report)
            if row is not None:
                rows.append(row)
        if not rows:
            raise ConvertError(f"no image of {len(entries)} had a pixel with a valid depth {margin} px or more from "
                               f"the border (pixels by reason: {dict(report.pixels)})")
        summary = {
            **(info or {}),
            "native_depth": spec.native,
            "depth_kind_read": spec.kind,
            "written": WRITTEN[spec.kind],
            "scale": spec.scale,
            "invalid_values": list(spec.invalid_values),
            "min_depth": spec.min_depth,
            "max_depth": spec.max_depth,
            "margin": margin,
            "crop": None if crop is None else list(crop),
            "labels_per_image": labels,
            "seed": seed,
            "images": {"listed": report.images_listed, "excluded": report.images_excluded,
                       "converted": len(entries), "written": report.images_written,
                       "skipped": dict(report.skipped), "first_skipped": report.first_skipped,
                       "fewer_labels": report.fewer_labels},
            "labels": report.labels,
            "pixels": {k: report.pixels[k] for k in ("valid", *PIXEL_REASONS)},
            "jsonl": str(out),
            "files": staging.files,  # what --overwrite may replace or delete
        }
        # the old jsonl goes first, so no jsonl ever describes files this run changes; then the old output's files
        # the new one does not write; then the sidecar, which lists every file this run may leave if it stops half
        # way (for --overwrite to replace); then the files; the jsonl last
        if overwrite:
            out.unlink(missing_ok=True)
        for rel in sorted(set(old_files) - set(staging.files)):
            (out.parent / rel).unlink(missing_ok=True)
        atomic_write_text(sidecar, json.dumps(summary, indent=2) + "\n")
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    atomic_write_text(out, "".join(json.dumps(row) + "\n" for row in rows))  # last, whole: a finished conversion
    return summary


def describe(summary: dict) -> str:
    """What the command prints: counts, and which depth is which."""
    im = summary["images"]
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(im["skipped"].items())) or "none"
    lines = [f"wrote {summary['jsonl']}: {im['written']} images, {summary['labels']} labels "
             f"(skipped: {skipped}; fewer than {summary['labels_per_image']} valid pixels: {im['fewer_labels']}; "
             f"excluded: {im['excluded']})",
             f"read: {summary['native_depth']}",
             f"wrote 'depth' = {summary['written']['depth']}",
             f"wrote 'axis_depth' = {summary['written']['axis_depth']}"]
    return "\n".join(lines)
