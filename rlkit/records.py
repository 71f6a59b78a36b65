"""DepthLMBench records: a folder of images plus a jsonl with one line per image.

    {"image": "rgb/x.png", "intrinsics": [fx, fy, cx, cy, width, height],
     "pixel_coords": [[x, y], ...], "depth": [d, ...]}

depth is euclidean distance in meters; pixel coordinates are in original-image pixels
from the top-left (see rlkit.camera for the pixel-center convention). Optional keys
that rlkit understands: "axis_depth" (distance along the principal axis, one per
label), "scene" (an id; train/eval splits of the procedural scenes never share one) and
"depth_map" (the image's whole euclidean depth map, a path like "image", loaded as an
absolute Path; rlkit.pointcloud reads it). Unknown keys are kept in Record.extras.

Repair (documented, counted, logged): the official curation code writes fx == 0 to mean
"same as fy"; such rows load with fx = fy.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rlkit.camera import Camera
from rlkit.io import atomic_write_text

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("image", "intrinsics", "pixel_coords", "depth")
PER_LABEL_KEYS = ("axis_depth",)


class RecordError(ValueError):
    """A bad jsonl line; the message names file:line and the field."""


class ImageError(RecordError):
    """A record whose image cannot be used, found when a sample is built; ``reason`` (one of
    IMAGE_REASONS) is what skip counts are keyed by."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


IMAGE_REASONS = ("image_missing", "image_unreadable", "image_truncated", "image_not_an_image", "image_too_large",
                 "image_size_mismatch")


def open_image(path: Path, *, source: str, width: int, height: int) -> Image.Image:
    """A record's image, decoded whole and checked against the intrinsics' size. Every failure is an
    ImageError naming file:line and the field ('intrinsics' for a size mismatch), never a PIL traceback."""

    def fail(reason: str, why: str, key: str = "image") -> ImageError:
        return ImageError(f"{source}: field '{key}': {why}", reason)

    try:
        img = Image.open(path)
        img.load()  # a truncated file fails here, not at open
    except FileNotFoundError:
        raise fail("image_missing", f"file not found: {path}") from None
    except Image.DecompressionBombError as e:
        raise fail("image_too_large", f"{path}: {e}") from None
    except UnidentifiedImageError:
        try:
            empty = path.stat().st_size == 0
        except OSError:
            empty = False
        raise (fail("image_truncated", f"{path} is empty (0 bytes)") if empty else
               fail("image_not_an_image", f"{path} is not an image file PIL can read")) from None
    except (PermissionError, IsADirectoryError, NotADirectoryError) as e:
        raise fail("image_unreadable", f"{path}: {e.strerror or e}") from None
    except Exception as e:  # broken data: PIL raises OSError, SyntaxError, ValueError, EOFError, zlib.error...
        truncated = isinstance(e, EOFError) or "truncated" in str(e)
        raise fail("image_truncated" if truncated else "image_unreadable",
                   f"{path} cannot be decoded ({type(e).__name__}: {e})") from None
    if img.size != (width, height):
        raise fail("image_size_mismatch", f"image {path} is {img.size[0]}x{img.size[1]} but intrinsics say "
                                          f"{width}x{height}", key="intrinsics")
    return img


@dataclass(frozen=True)
class Record:
    image: Path
    camera: Camera
    pixels: np.ndarray  # (N, 2) float (x, y)
    depth: np.ndarray  # (N,) meters, euclidean
    dataset: str
    source: str  # "file.jsonl:LINE", for error messages
    extras: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.depth)


@dataclass
class LoadReport:
    """What loading did besides returning records: skips by reason and repairs."""

    path: str
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    first_errors: list = field(default_factory=list)  # the first skipped lines' messages (data check shows them)

    def summary(self) -> dict:
        return {"path": self.path, "loaded": self.loaded,
                "skipped": dict(self.skipped), "repaired": dict(self.repaired)}


# Physical ranges (documented in the README's data format): anything outside is a broken record, not a camera.
MAX_DEPTH = 1e4  # meters
FOCAL_RANGE = (1.0, 1e6)  # pixels: below 1 px the focal resize would blow an image up to gigapixels
MAX_SIDE = 100_000  # pixels


def _is_number(v) -> bool:
    """A JSON number that fits a float (an integer of 400 digits does not)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise _DuplicateKey(twice[0])
    return dict(pairs)


class _DuplicateKey(ValueError):
    pass


def decode_line(raw: bytes, source: str, first: bool = False) -> object:
    """One jsonl line as JSON; UTF-8 only (a byte-order mark on the first line is accepted), no
    duplicated keys, bounded nesting. Errors are RecordErrors naming file:line."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{source}: field '<utf-8>': not UTF-8 (byte {e.start + 1}: {raw[e.start:e.start + 1]!r})") \
            from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise RecordError(f"{source}: field '<json>': invalid JSON ({e.msg} at column {e.colno})") from None
    except _DuplicateKey as e:
        raise RecordError(f"{source}: field '{e}': the key appears twice in the line") from None
    except RecursionError:
        raise RecordError(f"{source}: field '<json>': nested too deeply") from None


def parse_record(obj, *, root: Path, dataset: str, source: str, check_image: bool = True,
                 allow_outside_root: bool = False, resolve_image: bool = True) -> tuple[Record, list[str]]:
    """Validate one decoded jsonl object. Returns the record and the repairs applied.

    The image path must stay inside ``root`` (compared as written, so a symlinked folder inside the
    root is fine) unless ``allow_outside_root``: a ``../`` or absolute path in a downloaded jsonl would
    otherwise read any file the user can.
    """

    def fail(key: str, why: str) -> RecordError:
        return RecordError(f"{source}: field '{key}': {why}")

    if not isinstance(obj, dict):
        raise fail("<line>", f"expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED_KEYS:
        if key not in obj:
            raise fail(key, "missing")
    repairs = []
    image = _confined_path(obj, "image", root, allow_outside_root, fail)
    # resolve_image=False: Record.image is root / image as written (the store resolves it when a sample needs it;
    # resolving every path made up a third of converting a jsonl)
    image_path = (root / image).resolve() if resolve_image or check_image else root / image
    if check_image and not image_path.is_file():
        raise fail("image", f"file not found: {image_path}")
    camera = _parse_camera(obj["intrinsics"], repairs, fail)
    pixels, depth = _parse_labels(obj["pixel_coords"], obj["depth"], camera, fail)
    extras = _parse_extras({k: v for k, v in obj.items() if k not in REQUIRED_KEYS}, len(depth), root,
                           allow_outside_root, check_image, fail)
    return Record(image_path, camera, pixels, depth, dataset, source, extras), repairs


def _confined_path(obj: dict, key: str, root: Path, allow_outside_root: bool, fail) -> str:
    """obj[key]: a non-empty path string inside ``root`` (unless allowed outside)."""
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise fail(key, "must be a non-empty path string")
    if "\x00" in value:
        raise fail(key, "the path holds a NUL byte")
    if not _inside_root(value, root, allow_outside_root):
        raise fail(key, f"{value!r} is outside the dataset root {os.path.abspath(root)}; set "
                        "allow_outside_root: true on this dataset to allow it")
    return value


def _parse_camera(intr, repairs: list[str], fail) -> Camera:
    if not isinstance(intr, list) or len(intr) != 6 or not all(_is_number(v) for v in intr):
        raise fail("intrinsics", "must be [fx, fy, cx, cy, width, height] numbers")
    if not all(math.isfinite(v) for v in intr):
        raise fail("intrinsics", f"non-finite value in {intr}")
    fx, fy, cx, cy, width, height = intr
    if fx == 0 and fy > 0:
        fx = fy
        repairs.append("fx0_as_fy")
    lo, hi = FOCAL_RANGE
    if not (lo <= fx <= hi and lo <= fy <= hi):
        raise fail("intrinsics", f"focal lengths must be {lo:g} to {hi:g} pixels, got fx={intr[0]}, fy={intr[1]}")
    if width != int(width) or height != int(height) or not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise fail("intrinsics", f"width/height must be whole numbers of pixels from 1 to {MAX_SIDE}, got {width}, "
                                 f"{height}")
    return Camera(float(fx), float(fy), float(cx), float(cy), int(width), int(height))


def _parse_labels(coords, depth, camera: Camera, fail) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (N, 2), depths (N,)): pixels inside the image, depths in (0, MAX_DEPTH] meters."""
    if not isinstance(coords, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in coords):
        raise fail("pixel_coords", "must be a list of [x, y] number pairs")
    if not isinstance(depth, list) or not all(_is_number(v) for v in depth):
        raise fail("depth", "must be a list of numbers")
    if len(coords) != len(depth):
        raise fail("depth", f"has {len(depth)} values but pixel_coords has {len(coords)}")
    if not depth:
        raise fail("depth", "no labels")
    pixels = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    depth_arr = np.asarray(depth, dtype=np.float64)
    bad = ~np.isfinite(depth_arr) | (depth_arr <= 0) | (depth_arr > MAX_DEPTH)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail("depth", f"label {i} is {depth[i]!r}; depths must be in (0, {MAX_DEPTH:g}] meters")
    width, height = camera.width, camera.height
    outside = ~(np.isfinite(pixels).all(1) & (pixels[:, 0] >= 0) & (pixels[:, 0] <= width - 1)
                & (pixels[:, 1] >= 0) & (pixels[:, 1] <= height - 1))
    if outside.any():
        i = int(np.argmax(outside))
        raise fail("pixel_coords", f"label {i} {coords[i]} is outside the {width}x{height} image")
    return pixels, depth_arr


def _parse_extras(extras: dict, n: int, root: Path, allow_outside_root: bool, check_image: bool, fail) -> dict:
    """The optional keys: per-label values (one number per label), the pair view, the depth map's path."""
    for key in PER_LABEL_KEYS:
        if key in extras:
            vals = extras[key]
            if not isinstance(vals, list) or len(vals) != n or not all(_is_number(v) for v in vals):
                raise fail(key, f"must be a list of {n} numbers, one per label")
            arr = np.asarray(vals, dtype=np.float64)
            if not (np.isfinite(arr) & (arr > 0) & (arr <= MAX_DEPTH)).all():
                raise fail(key, f"values must be in (0, {MAX_DEPTH:g}] meters")
            extras[key] = arr
    if "pair" in extras:
        extras["pair"] = _parse_pair(extras["pair"], root, allow_outside_root, fail)
        if check_image and not os.path.isfile(extras["pair"]["image"]):
            raise fail("pair", f"file not found: {extras['pair']['image']}")
    if "depth_map" in extras:
        path = _confined_path(extras, "depth_map", root, allow_outside_root, fail)
        extras["depth_map"] = (root / path).resolve()  # checked when read: it is optional
    return extras


def _inside_root(image: str, root: Path, allow_outside_root: bool) -> bool:
    if allow_outside_root or not (os.path.isabs(image) or ".." in image):  # else it cannot leave the root
        return True
    base = os.path.abspath(root)
    return os.path.commonpath([base, os.path.normpath(os.path.join(base, image))]) == base


def _parse_pair(pair, root: Path, allow_outside_root: bool, fail) -> dict:
    """The "pair" key with its image as an absolute path (not resolved: no file system call per line)."""
    if not isinstance(pair, dict) or set(pair) - {"image", "translation"} or not {"image", "translation"} <= set(pair):
        raise fail("pair", 'must be {"image": path, "translation": [tx, ty, tz]} (meters, first camera frame)')
    image, t = pair["image"], pair["translation"]
    if not isinstance(image, str) or not image or "\x00" in image:
        raise fail("pair", "image must be a non-empty path string")
    if not _inside_root(image, root, allow_outside_root):
        raise fail("pair", f"image {image!r} is outside the dataset root {os.path.abspath(root)}; set "
                           "allow_outside_root: true on this dataset to allow it")
    if not (isinstance(t, list) and len(t) == 3 and all(_is_number(v) and math.isfinite(v) for v in t)):
        raise fail("pair", f"translation must be 3 finite numbers [tx, ty, tz] in meters, got {t!r}")
    motion = math.hypot(*t)
    if not 0 < motion <= MAX_DEPTH:
        raise fail("pair", f"translation {t} has length {motion:g}; it must be in (0, {MAX_DEPTH:g}] meters")
    return {"image": os.path.abspath(root / image), "translation": [float(v) for v in t]}


def load_records(path: str | Path, *, root: str | Path | None = None, dataset: str | None = None,
                 skip_invalid: bool = False, check_images: bool = True,
                 allow_outside_root: bool = False) -> tuple[list[Record], LoadReport]:
    """Load and validate a DepthLMBench jsonl into a list of Records (training reads the same lines
    through rlkit.store instead, which keeps them memory-mapped).

    Image paths are relative to ``root`` (default: the jsonl's folder). A bad line raises
    RecordError naming file:line and the field; with ``skip_invalid`` it is counted in the
    report (by field) and logged instead.
    """
    path = Path(path)
    report = LoadReport(str(path))
    records = [rec for _, _, rec in read_records(path, root=root, dataset=dataset, skip_invalid=skip_invalid,
                                                 check_images=check_images, allow_outside_root=allow_outside_root,
                                                 report=report)]
    log_repairs(report)
    if not records:
        raise RecordError(f"{path}: no valid records")
    report.loaded = len(records)
    return records, report


def log_repairs(report: LoadReport) -> None:
    if report.repaired:
        log.info("%s: repaired %s (fx == 0 means fx = fy, as in the official DepthLMBench code)",
                 report.path, dict(report.repaired))


def read_records(path: Path, *, root: str | Path | None, dataset: str | None, skip_invalid: bool,
                 check_images: bool, allow_outside_root: bool, report: LoadReport, start: int = 0,
                 stop: int | None = None, first_line: int = 1, resolve_images: bool = True):
    """Yield (line number, decoded object, Record) for each valid line, one at a time; bad lines raise
    or (``skip_invalid``) are counted in ``report``, as are repairs. ``start``/``stop``: a byte range
    that starts a line (``first_line``), for readers that split a file."""
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    root = Path(root) if root is not None else path.parent
    dataset = dataset or path.stem
    pos = start
    with path.open("rb") as f:
        f.seek(start)
        for lineno, raw in enumerate(f, start=first_line):
            if stop is not None and pos >= stop:
                break
            pos += len(raw)
            if not raw.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                obj = decode_line(raw, source, first=lineno == 1)
                rec, repairs = parse_record(obj, root=root, dataset=dataset, source=source, check_image=check_images,
                                            allow_outside_root=allow_outside_root, resolve_image=resolve_images)
            except RecordError as e:
                if not skip_invalid:
                    raise
                field_name = str(e).split("field '", 1)[-1].split("'", 1)[0]
                report.skipped[field_name] += 1
                if len(report.first_errors) < 5:
                    report.first_errors.append(str(e))
                log.warning("skipped %s", e)
                continue
            for r in repairs:
                report.repaired[r] += 1
            yield lineno, obj, rec


def write_records(path: str | Path, rows: list[dict]) -> None:
    """Write jsonl rows atomically (a half-written file never appears under the final name)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
