"""The one dataset builder: records -> camera transform -> marker + prompt -> rows.

SFT, GRPO, evaluation and the preview all get their samples from ``make_sample``.

- Train: ``train_dataset`` streams rows forever. Sample i is a pure function of (seed, i):
  pick a dataset by weight, an image from the first ``images`` of a seeded permutation, one
  of its first ``points_per_image`` labels, then a fresh random crop that keeps that label's
  marker whole (label-density control, the paper's Fig. 5).
- Eval: ``select_eval`` picks N labeled pixels per dataset with a seeded permutation, no
  crop; labels whose marker cannot be drawn whole are skipped and counted, never moved.

Rows (TRL's conversational prompt-completion format with an ``images`` column):
  images, prompt, completion, and the answer columns that reward functions receive as
  keyword arguments: depth (the label in meters), task, dataset, image, pixel (x, y after
  the transform), intrinsics ([fx, fy, cx, cy, width, height] after the transform).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from rlkit import camera as cm
from rlkit import markers
from rlkit.markers import MarkerStyle
from rlkit.prompts import REFERENCES, TASKS, TEMPLATES, Query, answer, check_official, question
from rlkit.records import Record, RecordError, load_records

log = logging.getLogger(__name__)

STRATEGIES = ("unify_focal", "direct", "intrinsics_in_prompt", "predict_rays")
# exact: rlkit's resize (pixel centers kept, W*f/fx x H*f/fy); official: the official DepthLM code's (camera.OfficialTransform)
RESIZES = ("exact", "official")
SFT_COLUMNS = ("images", "prompt", "completion")
ANSWER_COLUMNS = ("depth", "task", "dataset", "image", "pixel", "intrinsics")


@dataclass(frozen=True)
class CameraOptions:
    strategy: str = "unify_focal"
    f_uni: float = 1000.0
    crop_width: tuple[int, int] | None = (1000, 1400)  # train crops; None keeps the whole image
    crop_height: tuple[int, int] | None = (700, 1200)
    multiple_of: int = 1  # crop sizes only multiples of this (28 = Qwen2.5-VL's merged patch)
    resize: str = "exact"  # how unify_focal resizes: one of RESIZES

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"camera strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.resize not in RESIZES:
            raise ValueError(f"camera resize {self.resize!r} is not one of {RESIZES}")
        if self.resize == "official" and self.strategy != "unify_focal":
            raise ValueError(f"camera resize 'official' is the official code's unify_focal; strategy is {self.strategy!r}")
        if not (0 < self.f_uni < float("inf")):
            raise ValueError(f"f_uni must be a positive, finite number of pixels, got {self.f_uni}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1 (1: any crop size), got {self.multiple_of}")
        for name in ("crop_width", "crop_height"):
            r = getattr(self, name)
            if r is not None and not (len(r) == 2 and 1 <= r[0] <= r[1]):
                raise ValueError(f"{name} must be [min, max] with 1 <= min <= max, got {r}")


@dataclass(frozen=True)
class PromptOptions:
    task: str = "depth"
    template: str = "sft"
    reference: str = "marker"
    marker: MarkerStyle = MarkerStyle()

    def __post_init__(self):
        for name, allowed in (("task", tuple(TASKS)), ("template", TEMPLATES), ("reference", REFERENCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"prompt {name} {getattr(self, name)!r} is not one of {allowed}")
        if self.template == "official":
            check_official(self.task, self.reference, None)


@dataclass(frozen=True)
class DatasetSpec:
    path: str
    name: str | None = None  # defaults to the jsonl's stem
    weight: float = 1.0
    images: int | None = None  # distinct images used for training (None: all)
    points_per_image: int | None = None  # labels used per image (None: all)
    root: str | None = None  # image folder (default: the jsonl's folder)

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass
class Source:
    """A loaded dataset: its records, restricted to the images and labels a spec allows."""

    spec: DatasetSpec
    records: list[Record]
    report: dict


def load_source(spec: DatasetSpec, *, seed: int = 0, skip_invalid: bool = False) -> Source:
    records, report = load_records(spec.path, root=spec.root, dataset=spec.label, skip_invalid=skip_invalid)
    if spec.images is not None:
        if spec.images < 1:
            raise ValueError(f"{spec.path}: images must be >= 1, got {spec.images}")
        order = np.random.default_rng([seed, 7]).permutation(len(records))
        records = [records[i] for i in sorted(order[: spec.images])]
    if spec.points_per_image is not None:
        if spec.points_per_image < 1:
            raise ValueError(f"{spec.path}: points_per_image must be >= 1, got {spec.points_per_image}")
        k = spec.points_per_image
        records = [Record(r.image, r.camera, r.pixels[:k], r.depth[:k], r.dataset, r.source,
                          {key: (v[:k] if isinstance(v, np.ndarray) else v) for key, v in r.extras.items()})
                   for r in records]
    return Source(spec, records, report.summary())


class ImageCache:
    """Decoded RGB images, least recently used dropped first (few-images x many-points runs reuse them)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[Path, Image.Image] = OrderedDict()

    def get(self, rec: Record) -> Image.Image:
        img = self._items.get(rec.image)
        if img is not None:
            self._items.move_to_end(rec.image)
            return img
        img = Image.open(rec.image)
        img = img.convert("RGB") if img.mode != "RGB" else img
        img.load()
        if img.size != (rec.camera.width, rec.camera.height):
            raise RecordError(f"{rec.source}: field 'intrinsics': image {rec.image} is {img.size[0]}x{img.size[1]} "
                              f"but intrinsics say {rec.camera.width}x{rec.camera.height}")
        if self.capacity:
            self._items[rec.image] = img
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return img


@dataclass
class Sample:
    image: Image.Image
    question: str
    answer: str
    query: Query
    record: Record


def reads_image(task: str) -> bool:
    """True when the task's labels are read from the image at the pixel, not from the record."""
    return TASKS[task].label_key is None


def label_values(rec: Record, task: str) -> np.ndarray:
    key = TASKS[task].label_key
    if key is None:
        raise ValueError(f"task '{task}' reads its labels from the image; records hold none")
    if key == "depth":
        return rec.depth
    if key not in rec.extras:
        raise RecordError(f"{rec.source}: field '{key}': missing, and task '{task}' needs it")
    return rec.extras[key]


def brightness(img: Image.Image, x: int, y: int) -> float:
    """Mean of R, G and B over the 3x3 pixels at (x, y) (clipped at the border), from 0 to 1."""
    a = np.asarray(img.crop((max(x - 1, 0), max(y - 1, 0), x + 2, y + 2)), dtype=np.float64)
    return float(a.mean() / 255.0)


def marked_pixel(rec: Record, label: int, cam_opts: CameraOptions) -> tuple[cm.Resize, int, int]:
    """The image resize of the camera strategy and the label's nearest pixel after it (with
    ``resize: official``, the official code's size and its int()-truncated pixel)."""
    cam = rec.camera
    if cam_opts.resize == "official":
        t = cm.official_transform(cam, cam_opts.f_uni)
        return (t.resize(), *t.point(*rec.pixels[label]))
    resize = cm.unify_focal(cam, cam_opts.f_uni) if cam_opts.strategy == "unify_focal" else cm.identity_resize(cam)
    point = cm.resize_points(rec.pixels[label:label + 1], resize)[0]
    return resize, int(np.rint(point[0])), int(np.rint(point[1]))


def _crop_offset(rng, lo: int, hi: int) -> int | None:
    return None if lo > hi else int(rng.integers(lo, hi + 1))


def make_sample(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions,
                images: ImageCache, rng: np.random.Generator | None = None) -> Sample | str:
    """Build one sample; ``rng`` given means train mode (random crop). Returns a skip reason
    string instead of a sample when the label's marker cannot be drawn whole."""
    resize, x, y = marked_pixel(rec, label, cam_opts)
    uses_marker = prompt_opts.reference == "marker"
    left, top, right, bottom = markers.footprint(prompt_opts.marker) if uses_marker else (0, 0, 0, 0)
    if not (0 <= x < resize.width and 0 <= y < resize.height):
        return "outside_image"

    crop = cm.Crop(0, 0, resize.width, resize.height)
    if rng is not None and cam_opts.crop_width is not None and cam_opts.crop_height is not None:
        cw, ch = cm.sample_crop_size(rng, resize.width, resize.height, cam_opts.crop_width, cam_opts.crop_height,
                                     cam_opts.multiple_of)
        # offsets that keep the whole marker inside the crop
        x0 = _crop_offset(rng, max(0, x + right - cw + 1), min(x - left, resize.width - cw))
        y0 = _crop_offset(rng, max(0, y + bottom - ch + 1), min(y - top, resize.height - ch))
        if x0 is None or y0 is None:
            return "marker_outside_crop"
        crop = cm.Crop(x0, y0, cw, ch)
    x, y = x - crop.x0, y - crop.y0
    if uses_marker and not markers.fits(prompt_opts.marker, x, y, crop.width, crop.height):
        return "marker_outside_image"

    src = images.get(rec)
    official = cm.official_transform(rec.camera, cam_opts.f_uni) if cam_opts.resize == "official" else None
    if official is not None:  # as the official code: the whole image, then the crop
        img = official.image(src).crop((crop.x0, crop.y0, crop.x0 + crop.width, crop.y0 + crop.height))
    elif resize.sx == 1.0 and resize.sy == 1.0:
        img = src.crop((crop.x0, crop.y0, crop.x0 + crop.width, crop.y0 + crop.height))
    else:  # resize only the cropped region: PIL maps output pixel centers through the box exactly
        box = (crop.x0 / resize.sx, crop.y0 / resize.sy,
               (crop.x0 + crop.width) / resize.sx, (crop.y0 + crop.height) / resize.sy)
        img = src.resize((crop.width, crop.height), Image.BILINEAR, box=box)
    # read before the marker covers the pixel
    value = brightness(img, x, y) if reads_image(prompt_opts.task) else float(
        label_values(rec, prompt_opts.task)[label])
    if uses_marker:  # img is a new image (crop/resize never return the cached source)
        patch_box = (x - left, y - top, x + right + 1, y + bottom + 1)
        patch = np.array(img.crop(patch_box))
        markers.draw(patch, left, top, prompt_opts.marker)
        img.paste(Image.fromarray(patch), patch_box[:2])

    new_cam = cm.crop_camera(official.camera if official is not None else cm.resize_camera(rec.camera, resize), crop)
    q = Query(prompt_opts.task, new_cam, x, y, value)
    strategy, template = cam_opts.strategy, prompt_opts.template
    return Sample(img, question(q, reference=prompt_opts.reference, strategy=strategy, template=template),
                  answer(q, strategy=strategy, template=template), q, rec)


def to_row(s: Sample) -> dict:
    q = s.query
    return {
        "images": [s.image],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": s.answer}]}],
        "depth": q.value,
        "task": q.task,
        "dataset": s.record.dataset,
        "image": str(s.record.image),
        "pixel": [q.x, q.y],
        "intrinsics": q.camera.as_list(),
    }


# ---------------------------------------------------------------- train stream


class TrainStream:
    """Sample i of the stream is a pure function of (seed, i), so workers and resumes agree."""

    def __init__(self, sources: list[Source], cam_opts: CameraOptions, prompt_opts: PromptOptions,
                 seed: int = 0, cache_images: int = 64, max_tries: int = 100, shuffle_labels: bool = False):
        if not sources:
            raise ValueError("no training datasets")
        self.sources, self.cam_opts, self.prompt_opts, self.seed = sources, cam_opts, prompt_opts, seed
        if prompt_opts.template == "official":
            check_official(prompt_opts.task, prompt_opts.reference, cam_opts.strategy)
        weights = np.array([s.spec.weight for s in sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"dataset weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.p = weights / weights.sum()
        self.images = ImageCache(cache_images)
        self.skips = Counter()  # reason -> samples skipped
        self.max_tries = max_tries
        # shuffle_labels: every answer carries a label from a random other image of the same dataset,
        # so a model learns the answer format and the label distribution but no depth (a GRPO base stage)
        self.shuffle_labels = shuffle_labels
        if reads_image(prompt_opts.task):
            if shuffle_labels:
                raise ValueError(f"shuffle_labels needs labels in the records; task '{prompt_opts.task}' reads the image")
        else:
            for s in sources:
                label_values(s.records[0], prompt_opts.task)  # fail early if the task's labels are missing

    def sample(self, i: int) -> Sample:
        rng = np.random.default_rng([self.seed, i])
        for _ in range(self.max_tries):
            src = self.sources[int(rng.choice(len(self.sources), p=self.p))]
            rec = src.records[int(rng.integers(len(src.records)))]
            out = make_sample(rec, int(rng.integers(rec.num_labels)), self.cam_opts, self.prompt_opts,
                              self.images, rng)
            if isinstance(out, Sample):
                return self._shuffled(out, src, rng) if self.shuffle_labels else out
            self.skips[out] += 1
        raise RuntimeError(f"no drawable label in {self.max_tries} tries (skips: {dict(self.skips)}); "
                           "is the marker larger than the crops?")

    def _shuffled(self, s: Sample, src: Source, rng: np.random.Generator) -> Sample:
        other = src.records[int(rng.integers(len(src.records)))]
        values = label_values(other, self.prompt_opts.task)
        q = dataclasses.replace(s.query, value=float(values[int(rng.integers(len(values)))]))
        return Sample(s.image, s.question, answer(q, strategy=self.cam_opts.strategy,
                                                  template=self.prompt_opts.template), q, s.record)

    def rows(self, shard: int = 0, num_shards: int = 1, start: int = 0):
        i = start + shard
        while True:
            yield to_row(self.sample(i))
            i += num_shards


def _stream_rows(shards, stream: TrainStream, num_shards: int, columns: tuple[str, ...]):
    for shard in shards:
        for row in stream.rows(shard, num_shards):
            yield {k: row[k] for k in columns}


def train_dataset(stream: TrainStream, columns: tuple[str, ...] = SFT_COLUMNS, num_shards: int = 1):
    """An endless Hugging Face IterableDataset of train rows (shards let DataLoader workers split it)."""
    from datasets import IterableDataset

    return IterableDataset.from_generator(
        partial(_stream_rows, stream=stream, num_shards=num_shards, columns=columns),
        gen_kwargs={"shards": list(range(num_shards))})


# ---------------------------------------------------------------- eval selection


@dataclass(frozen=True)
class EvalItem:
    dataset: int  # index into sources
    record: int
    label: int


def select_eval(sources: list[Source], cam_opts: CameraOptions, prompt_opts: PromptOptions,
                num_per_dataset: int = 8192, seed: int = 0) -> tuple[list[EvalItem], dict]:
    """A deterministic choice of up to N drawable labeled pixels per dataset (no crop).

    Returns the items and, per dataset, how many labels were skipped and why.
    """
    if prompt_opts.template == "official":
        check_official(prompt_opts.task, prompt_opts.reference, cam_opts.strategy)
    items, skipped = [], {}
    for d, src in enumerate(sources):
        counts = np.array([r.num_labels for r in src.records])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        order = np.random.default_rng([seed, d, 11]).permutation(int(offsets[-1]))
        skips, chosen = Counter(), 0
        for flat in order:
            if chosen == num_per_dataset:
                break
            r = int(np.searchsorted(offsets, flat, side="right") - 1)
            label = int(flat - offsets[r])
            if not _label_drawable(src.records[r], label, cam_opts, prompt_opts):
                skips["marker_outside_image"] += 1
                continue
            items.append(EvalItem(d, r, label))
            chosen += 1
        skipped[src.spec.label] = dict(skips)
        if skips:
            log.info("eval %s: skipped %s", src.spec.label, dict(skips))
    return items, skipped


def _label_drawable(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions) -> bool:
    if prompt_opts.reference != "marker":
        return True
    resize, x, y = marked_pixel(rec, label, cam_opts)
    return markers.fits(prompt_opts.marker, x, y, resize.width, resize.height)


class EvalSet:
    """The selected eval pixels; ``sample(k)`` renders item k on demand (never all images at once)."""

    def __init__(self, sources, cam_opts, prompt_opts, num_per_dataset=8192, seed=0, cache_images=16):
        self.sources, self.cam_opts, self.prompt_opts = sources, cam_opts, prompt_opts
        self.items, self.skipped = select_eval(sources, cam_opts, prompt_opts, num_per_dataset, seed)
        self.images = ImageCache(cache_images)

    def __len__(self):
        return len(self.items)

    def sample(self, k: int) -> Sample:
        it = self.items[k]
        out = make_sample(self.sources[it.dataset].records[it.record], it.label, self.cam_opts,
                          self.prompt_opts, self.images)
        assert isinstance(out, Sample), out  # select_eval kept only drawable labels
        return out
