"""One sample: a record's image through the camera transform, the marker drawn, the question and answer;
and the row TRL gets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rlkit import camera as cm
from rlkit import markers
from rlkit.builder.sources import ImageCache
from rlkit.labels import MIN_LABEL, label_value
from rlkit.prompts import TASKS, Query, answer, question
from rlkit.schema import CameraOptions, PromptOptions
from rlkit.records import Record, RecordError


SFT_COLUMNS = ("images", "prompt", "completion")
ANSWER_COLUMNS = ("label", "unit", "task", "depth", "dataset", "image", "pixels", "pixel", "intrinsics")


@dataclass
class Sample:
    images: list[Image.Image]  # the image, and the pair view for camera_motion
    question: str
    answer: str
    query: Query
    record: Record
    label: int  # which of the record's labels: its original pixel is record.pixels[label]
    second: int | None = None  # two_point: the other label

    @property
    def image(self) -> Image.Image:
        return self.images[0]


def reads_image(task: str) -> bool:
    """True when the task's labels are read from the image at the pixel, not from the record."""
    return TASKS[task].reads_image


def label_values(rec: Record, task: str) -> np.ndarray:
    """The record's per-pixel labels of a depth task (depth, axis_depth)."""
    key = TASKS[task].label_key
    if key is None:
        raise ValueError(f"task '{task}' has no per-pixel labels in the records")
    if key == "depth":
        return rec.depth
    if key not in rec.extras:
        raise RecordError(f"{rec.source}: field '{key}': missing, and task '{task}' needs it")
    return rec.extras[key]


def brightness(img: Image.Image, x: int, y: int) -> float:
    """Mean of R, G and B over the 3x3 pixels at (x, y) (clipped at the border), from 0 to 1."""
    a = np.asarray(img.crop((max(x - 1, 0), max(y - 1, 0), x + 2, y + 2)), dtype=np.float64)
    return float(a.mean() / 255.0)


def camera_transform(rec: Record, cam_opts: CameraOptions):
    """The record's camera transform under the experiment's convention (camera.resize)."""
    return cm.transform(rec.camera, cam_opts.f_uni, cam_opts.resize, unify=cam_opts.strategy == "unify_focal")


def pair_view(rec: Record) -> Record:
    """The record's pair view as a record of its own (the same camera; rlkit.records' "pair" key)."""
    pair = rec.extras.get("pair")
    if pair is None:
        raise RecordError(f"{rec.source}: field 'pair': missing, and task 'camera_motion' needs it")
    return dataclasses.replace(rec, image=Path(pair["image"]), source=f"{rec.source} (the pair's image)")


def _crop_offset(rng, lo: int, hi: int) -> int | None:
    return None if lo > hi else int(rng.integers(lo, hi + 1))


def _train_crop(rng: np.random.Generator, resize: cm.Resize, points: list[tuple[int, int]], styles, feet,
                uses_marker: bool, cam_opts: CameraOptions) -> cm.Crop | str:
    """A train crop of random size (camera.crop_width/height) that keeps every marker whole (``feet``: each
    marker's footprint): at a random place, or centered (camera.crop: center, the official rule, which skips a
    label outside it); a skip reason otherwise."""
    wr, hr = cam_opts.crop_width, cam_opts.crop_height
    if len(points) > 1:  # crops no smaller than the markers' span: fewer skips, so fewer wide pairs lost
        wr = (max(wr[0], min(wr[1], max(x + f[2] for (x, _), f in zip(points, feet))
                             - min(x - f[0] for (x, _), f in zip(points, feet)) + 1)), wr[1])
        hr = (max(hr[0], min(hr[1], max(y + f[3] for (_, y), f in zip(points, feet))
                             - min(y - f[1] for (_, y), f in zip(points, feet)) + 1)), hr[1])
    if cam_opts.crop == "center":
        crop = cm.center_crop(rng, resize.width, resize.height, wr, hr, cam_opts.multiple_of)
        shifted = [(x - crop.x0, y - crop.y0) for x, y in points]
        if not all(markers.fits(st, x, y, crop.width, crop.height) if uses_marker
                   else 0 <= x < crop.width and 0 <= y < crop.height for st, (x, y) in zip(styles, shifted)):
            return "marker_outside_crop"
        return crop
    cw, ch = cm.sample_crop_size(rng, resize.width, resize.height, wr, hr, cam_opts.multiple_of)
    # offsets that keep every marker whole inside the crop
    x0 = _crop_offset(rng, max([0] + [x + f[2] - cw + 1 for (x, _), f in zip(points, feet)]),
                      min([resize.width - cw] + [x - f[0] for (x, _), f in zip(points, feet)]))
    y0 = _crop_offset(rng, max([0] + [y + f[3] - ch + 1 for (_, y), f in zip(points, feet)]),
                      min([resize.height - ch] + [y - f[1] for (_, y), f in zip(points, feet)]))
    if x0 is None or y0 is None:
        return "marker_outside_crop"
    return cm.Crop(x0, y0, cw, ch)


def make_sample(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions,
                images: ImageCache, rng: np.random.Generator | None = None, *, task: str | None = None,
                second: int | None = None, param: float | None = None,
                aspect: tuple[float, float] | None = None) -> Sample | str:
    """Build one sample; ``rng`` given means train mode (random crop). Returns a skip reason
    string instead of a sample when a marker cannot be drawn whole. ``task`` defaults to prompt.task;
    ``second`` is two_point's other label, ``param`` the speed or time task's stated time or speed.
    ``aspect`` (train mode; a dataset's aspect_jitter): after the camera resize the height alone is resized to
    int(width / r) rows, r drawn uniformly from the range, as the official code does for Taskonomy."""
    task = task or prompt_opts.task
    spec = TASKS[task]
    marks = [label, second][:spec.markers]
    styles = prompt_opts.marker_styles[:spec.markers]
    uses_marker = prompt_opts.reference == "marker"
    t = camera_transform(rec, cam_opts)
    if rng is not None and aspect is not None:
        t = t.stretch(max(1, int(t.size.width / rng.uniform(*aspect))))
    resize, points = t.size, []
    for m in marks:
        x, y = t.point(*rec.pixels[m])
        if not (0 <= x < resize.width and 0 <= y < resize.height):
            return "outside_image"
        points.append((x, y))
    feet = [markers.footprint(st) if uses_marker else (0, 0, 0, 0) for st in styles]

    crop = cm.Crop(0, 0, resize.width, resize.height)
    if rng is not None and cam_opts.crop_width is not None and cam_opts.crop_height is not None:
        crop = _train_crop(rng, resize, points, styles, feet, uses_marker, cam_opts)
        if isinstance(crop, str):
            return crop
    points = [(x - crop.x0, y - crop.y0) for x, y in points]
    if uses_marker and not all(markers.fits(st, x, y, crop.width, crop.height) for st, (x, y) in zip(styles, points)):
        return "marker_outside_image"
    if uses_marker and len(points) == 2 and markers_overlap(*points[0], *points[1], *feet):
        return "markers_overlap"  # one marker would hide the other
    value = None if reads_image(task) else label_value(rec, task, label, second, param)
    if rng is not None and value is not None and value < MIN_LABEL:
        return "label_rounds_to_zero"

    views = [rec, pair_view(rec)] if spec.images == 2 else [rec]
    imgs = [t.image(images.get(v), crop) for v in views]  # new images, never the cache's
    x, y = points[0] if points else (-1, -1)
    if value is None:  # read before the marker covers the pixel
        value = brightness(imgs[0], x, y)
    if uses_marker:
        for st, (px, py) in zip(styles, points):
            left, top, right, bottom = markers.footprint(st)
            patch_box = (px - left, py - top, px + right + 1, py + bottom + 1)
            patch = np.array(imgs[0].crop(patch_box))
            markers.draw(patch, left, top, st)
            imgs[0].paste(Image.fromarray(patch), patch_box[:2])

    new_cam = cm.crop_camera(t.camera, crop)
    q = Query(task, new_cam, x, y, value, second=points[1] if len(points) > 1 else None, param=param,
              colors=prompt_opts.marker_colors)
    strategy, template = cam_opts.strategy, prompt_opts.template
    return Sample(imgs, question(q, reference=prompt_opts.reference, strategy=strategy, template=template),
                  answer(q, strategy=strategy, template=template), q, rec, label, second)


def markers_overlap(x1, y1, x2, y2, f, g):
    """Whether markers with footprints f and g (left, top, right, bottom) at (x1, y1) and (x2, y2) share a pixel;
    numbers or arrays (elementwise)."""
    return (x1 - f[0] <= x2 + g[2]) & (x2 - g[0] <= x1 + f[2]) & (y1 - f[1] <= y2 + g[3]) & (y2 - g[1] <= y1 + f[3])


def to_row(s: Sample) -> dict:
    q = s.query
    marked = [[q.x, q.y]] + ([list(q.second)] if q.second is not None else []) if q.x >= 0 else []
    content = [{"type": "image"} for _ in s.images] + [{"type": "text", "text": s.question}]
    return {
        "images": list(s.images),
        "prompt": [{"role": "user", "content": content}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": s.answer}]}],
        "label": q.value,
        "unit": TASKS[q.task].unit,
        "task": q.task,
        "depth": float(s.record.depth[s.label]) if q.x >= 0 else float("nan"),
        "dataset": s.record.dataset,
        "image": str(s.record.image),
        "pixels": marked,
        "pixel": [q.x, q.y],
        "intrinsics": q.camera.as_list(),
    }
