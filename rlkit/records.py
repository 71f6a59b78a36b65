"""DepthLMBench records: a folder of images plus a jsonl with one line per image.

    {"image": "rgb/x.png", "intrinsics": [fx, fy, cx, cy, width, height],
     "pixel_coords": [[x, y], ...], "depth": [d, ...]}

depth is euclidean distance in meters; pixel coordinates are in original-image pixels
from the top-left (see rlkit.camera for the pixel-center convention). Optional keys
that rlkit understands: "axis_depth" (distance along the principal axis, one per
label) and "scene" (an id; train/eval splits of the procedural scenes never share one).
Unknown keys are kept in Record.extras.

Repair (documented, counted, logged): the official curation code writes fx == 0 to mean
"same as fy"; such rows load with fx = fy.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlkit.camera import Camera
from rlkit.io import atomic_write_text

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("image", "intrinsics", "pixel_coords", "depth")
PER_LABEL_KEYS = ("axis_depth",)


class RecordError(ValueError):
    """A bad jsonl line; the message names file:line and the field."""


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

    def summary(self) -> dict:
        return {"path": self.path, "loaded": self.loaded,
                "skipped": dict(self.skipped), "repaired": dict(self.repaired)}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_record(obj, *, root: Path, dataset: str, source: str, check_image: bool = True) -> tuple[Record, list[str]]:
    """Validate one decoded jsonl object. Returns the record and the repairs applied."""

    def fail(key: str, why: str) -> RecordError:
        return RecordError(f"{source}: field '{key}': {why}")

    if not isinstance(obj, dict):
        raise fail("<line>", f"expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED_KEYS:
        if key not in obj:
            raise fail(key, "missing")
    repairs = []

    image = obj["image"]
    if not isinstance(image, str) or not image:
        raise fail("image", "must be a non-empty path string")
    image_path = (root / image).resolve()
    if check_image and not image_path.is_file():
        raise fail("image", f"file not found: {image_path}")

    intr = obj["intrinsics"]
    if not isinstance(intr, list) or len(intr) != 6 or not all(_is_number(v) for v in intr):
        raise fail("intrinsics", "must be [fx, fy, cx, cy, width, height] numbers")
    if not all(math.isfinite(v) for v in intr):
        raise fail("intrinsics", f"non-finite value in {intr}")
    fx, fy, cx, cy, width, height = intr
    if fx == 0 and fy > 0:
        fx = fy
        repairs.append("fx0_as_fy")
    if fx <= 0 or fy <= 0:
        raise fail("intrinsics", f"focal lengths must be positive, got fx={intr[0]}, fy={intr[1]}")
    if width != int(width) or height != int(height) or width < 1 or height < 1:
        raise fail("intrinsics", f"width/height must be positive integers, got {width}, {height}")
    camera = Camera(float(fx), float(fy), float(cx), float(cy), int(width), int(height))

    coords, depth = obj["pixel_coords"], obj["depth"]
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
    bad = ~np.isfinite(depth_arr) | (depth_arr <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise fail("depth", f"label {i} is {depth[i]!r}; depths must be finite and positive")
    outside = ~(np.isfinite(pixels).all(1) & (pixels[:, 0] >= 0) & (pixels[:, 0] <= width - 1)
                & (pixels[:, 1] >= 0) & (pixels[:, 1] <= height - 1))
    if outside.any():
        i = int(np.argmax(outside))
        raise fail("pixel_coords", f"label {i} {coords[i]} is outside the {width}x{height} image")

    extras = {k: v for k, v in obj.items() if k not in REQUIRED_KEYS}
    for key in PER_LABEL_KEYS:
        if key in extras:
            vals = extras[key]
            if not isinstance(vals, list) or len(vals) != len(depth) or not all(_is_number(v) for v in vals):
                raise fail(key, f"must be a list of {len(depth)} numbers, one per label")
            arr = np.asarray(vals, dtype=np.float64)
            if not (np.isfinite(arr) & (arr > 0)).all():
                raise fail(key, "values must be finite and positive")
            extras[key] = arr
    return Record(image_path, camera, pixels, depth_arr, dataset, source, extras), repairs


def load_records(path: str | Path, *, root: str | Path | None = None, dataset: str | None = None,
                 skip_invalid: bool = False, check_images: bool = True) -> tuple[list[Record], LoadReport]:
    """Load and validate a DepthLMBench jsonl.

    Image paths are relative to ``root`` (default: the jsonl's folder). A bad line raises
    RecordError naming file:line and the field; with ``skip_invalid`` it is counted in the
    report (by field) and logged instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    root = Path(root) if root is not None else path.parent
    dataset = dataset or path.stem
    report = LoadReport(str(path))
    records = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"{source}: field '<json>': invalid JSON ({e.msg} at column {e.colno})") from None
                rec, repairs = parse_record(obj, root=root, dataset=dataset, source=source, check_image=check_images)
            except RecordError as e:
                if not skip_invalid:
                    raise
                field_name = str(e).split("field '", 1)[-1].split("'", 1)[0]
                report.skipped[field_name] += 1
                log.warning("skipped %s", e)
                continue
            for r in repairs:
                report.repaired[r] += 1
            records.append(rec)
    if report.repaired:
        log.info("%s: repaired %s (fx == 0 means fx = fy, as in the official DepthLMBench code)",
                 path, dict(report.repaired))
    if not records:
        raise RecordError(f"{path}: no valid records")
    report.loaded = len(records)
    return records, report


def write_records(path: str | Path, rows: list[dict]) -> None:
    """Write jsonl rows atomically (a half-written file never appears under the final name)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
