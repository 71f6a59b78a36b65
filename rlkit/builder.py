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
import functools
import logging
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from rlkit import camera as cm
from rlkit import markers
from rlkit.errors import ConfigError
from rlkit.markers import MarkerStyle
from rlkit.prompts import REFERENCES, TASKS, TEMPLATES, Query, answer, check_official, question
from rlkit.records import IMAGE_REASONS, ImageError, Record, RecordError, open_image
from rlkit.store import RecordStore, open_records

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
    allow_outside_root: bool = False  # image paths may leave root (../, absolute): only for a jsonl you trust

    def __post_init__(self):
        for key in ("images", "points_per_image"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or left out: all), got {getattr(self, key)}")
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass
class Source:
    """A loaded dataset: its records store (rlkit.store), restricted to the images and labels a spec
    allows. Image i (of those in use) becomes a Record only when asked for: ``record(i)``."""

    spec: DatasetSpec
    store: RecordStore
    index: np.ndarray | None  # the store's images in use, ascending (None: all of them)
    report: dict

    def __len__(self) -> int:
        return len(self.store) if self.index is None else len(self.index)

    def image_index(self, i):
        """The store's image number of image(s) ``i`` in use."""
        return i if self.index is None else self.index[i]

    def record(self, i: int) -> Record:
        return self.store.record(int(self.image_index(i)), self.spec.label, self.spec.points_per_image)

    def num_labels(self, i: int) -> int:
        a, b = self.store.label_range(int(self.image_index(i)))
        k = self.spec.points_per_image
        return b - a if k is None else min(b - a, k)

    @functools.cached_property
    def counts(self) -> np.ndarray:
        """Labels in use per image in use."""
        c = self.store.counts(self.index)
        return c if self.spec.points_per_image is None else np.minimum(c, self.spec.points_per_image)

    def label_positions(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Positions in the store's flat label columns of (image in use, label) pairs."""
        return self.store.label_starts(np.asarray(self.image_index(images))) + labels

    def label_column(self, key: str) -> np.ndarray | None:
        """Every label in use of a flat column ('x', 'y', 'depth', 'axis_depth'), image by image; a view of
        the memory map when all are in use, None when no image has the key."""
        col = self.store.labels(key)
        if col is None or (self.index is None and self.spec.points_per_image is None):
            return col
        counts = self.counts
        first = np.cumsum(counts) - counts
        return col[np.repeat(self.store.label_starts(self.index) - first, counts) + np.arange(int(counts.sum()))]

    def __getstate__(self):  # pickled small (the store as its folder): a derived array is computed again
        return {k: v for k, v in self.__dict__.items() if k != "counts"}

    @property
    def records(self) -> Sequence[Record]:
        """The images in use as a sequence of Records, each built when indexed."""
        return _Records(self)


class _Records(Sequence):
    def __init__(self, src: Source):
        self.src = src

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.src.record(j) for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.src.record(i % len(self))


def load_source(spec: DatasetSpec, *, seed: int = 0, skip_invalid: bool = False) -> Source:
    store = open_records(spec.path, root=spec.root, skip_invalid=skip_invalid,
                         allow_outside_root=spec.allow_outside_root)
    index = None
    if spec.images is not None:
        index = np.sort(np.random.default_rng([seed, 7]).permutation(len(store))[: spec.images])
    return Source(spec, store, index, dict(store.report))


class ImageCache:
    """Decoded RGB images, least recently used dropped first (few-images x many-points runs reuse them)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[Path, Image.Image] = OrderedDict()

    def get(self, rec: Record) -> Image.Image:
        img = self._items.get(rec.image)
        if img is not None:
            self._items.move_to_end(rec.image)
            if img.size != (rec.camera.width, rec.camera.height):  # two lines may name one file
                raise ImageError(f"{rec.source}: field 'intrinsics': image {rec.image} is {img.size[0]}x{img.size[1]} "
                                 f"but intrinsics say {rec.camera.width}x{rec.camera.height}", "image_size_mismatch")
            return img
        img = open_image(rec.image, source=rec.source, width=rec.camera.width, height=rec.camera.height)
        img = img.convert("RGB") if img.mode != "RGB" else img
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
    label: int  # which of the record's labels: its original pixel is record.pixels[label]


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
                  answer(q, strategy=strategy, template=template), q, rec, label)


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
                 seed: int = 0, cache_images: int = 64, max_tries: int = 100, shuffle_labels: bool = False,
                 skip_invalid: bool = False):
        if not sources:
            raise ConfigError("no training datasets")
        self.sources, self.cam_opts, self.prompt_opts, self.seed = sources, cam_opts, prompt_opts, seed
        if prompt_opts.template == "official":
            check_official(prompt_opts.task, prompt_opts.reference, cam_opts.strategy)
        weights = np.array([s.spec.weight for s in sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"dataset weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.p = weights / weights.sum()
        self.images = ImageCache(cache_images)
        self.skips = Counter()  # reason -> samples skipped
        self.max_tries = max_tries
        self.skip_invalid = skip_invalid  # a bad image: counted in skips and another sample drawn, else an error
        # shuffle_labels: every answer carries a label from a random other image of the same dataset,
        # so a model learns the answer format and the label distribution but no depth (a GRPO base stage)
        self.shuffle_labels = shuffle_labels
        if reads_image(prompt_opts.task):
            if shuffle_labels:
                raise ConfigError(f"shuffle_labels needs labels in the records; task '{prompt_opts.task}' reads the image")
        else:
            for s in sources:
                label_values(s.record(0), prompt_opts.task)  # fail early if the task's labels are missing

    def pick(self, rng: np.random.Generator) -> tuple[Source, int, int]:
        """A dataset by weight, one of its images in use and one of that image's labels in use (no image read)."""
        src = self.sources[int(rng.choice(len(self.sources), p=self.p))]
        i = int(rng.integers(len(src)))
        return src, i, int(rng.integers(src.num_labels(i)))

    def sample(self, i: int) -> Sample:
        rng = np.random.default_rng([self.seed, i])
        for _ in range(self.max_tries):
            src, r, label = self.pick(rng)
            try:
                out = make_sample(src.record(r), label, self.cam_opts, self.prompt_opts, self.images, rng)
            except ImageError as e:
                if not self.skip_invalid:
                    raise
                if not self.skips[e.reason]:
                    log.warning("skipped %s (more '%s' skips are counted in builder_skips, not logged)", e, e.reason)
                out = e.reason
            if isinstance(out, Sample):
                return self._shuffled(out, src, rng) if self.shuffle_labels else out
            self.skips[out] += 1
        hint = ("./run.sh data check FILE.jsonl lists the bad images" if set(self.skips) & set(IMAGE_REASONS)
                else "is the marker larger than the crops?")
        raise ConfigError(f"no drawable label in {self.max_tries} tries (skips: {dict(self.skips)}); {hint}")

    def _shuffled(self, s: Sample, src: Source, rng: np.random.Generator) -> Sample:
        other = src.record(int(rng.integers(len(src))))
        values = label_values(other, self.prompt_opts.task)
        q = dataclasses.replace(s.query, value=float(values[int(rng.integers(len(values)))]))
        return dataclasses.replace(s, answer=answer(q, strategy=self.cam_opts.strategy,
                                                    template=self.prompt_opts.template), query=q)

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
        offsets = np.concatenate([[0], np.cumsum(src.counts)])
        order = np.random.default_rng([seed, d, 11]).permutation(int(offsets[-1]))
        # the permutation's labels in order, the undrawable ones skipped, until N are chosen: checked a
        # block at a time, vectorized (the same choice as one label at a time)
        skips, start, need = Counter(), 0, num_per_dataset
        while need > 0 and start < len(order):
            flat = order[start:start + max(2 * need, 1024)]
            r = np.searchsorted(offsets, flat, side="right") - 1
            label = flat - offsets[r]
            ok = _drawable(src, r, label, cam_opts, prompt_opts)
            chosen = np.cumsum(ok)
            if chosen[-1] >= need:  # stop at the N-th drawable label: later ones are never looked at
                stop = int(np.searchsorted(chosen, need)) + 1
                r, label, ok = r[:stop], label[:stop], ok[:stop]
            items.extend(EvalItem(d, int(a), int(b)) for a, b in zip(r[ok], label[ok]))
            if not ok.all():
                skips["marker_outside_image"] += int((~ok).sum())
            need -= int(ok.sum())
            start += len(r)
        skipped[src.spec.label] = dict(skips)
        if skips:
            log.info("eval %s: skipped %s", src.spec.label, dict(skips))
    return items, skipped


def resized_sizes(src: Source, images: np.ndarray | None, cam_opts: CameraOptions) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) after rlkit's camera resize (unify_focal, else none) of images in use (None: all),
    vectorized: the same rounding as camera.unify_focal."""
    c, img = src.store.col, (src.index if images is None else np.asarray(src.image_index(images)))
    w, h = (c["image.width"], c["image.height"]) if img is None else (c["image.width"][img], c["image.height"][img])
    if cam_opts.strategy != "unify_focal":
        return w, h
    fx, fy = (c["image.fx"], c["image.fy"]) if img is None else (c["image.fx"][img], c["image.fy"][img])
    return (np.maximum(1, np.rint(w * cam_opts.f_uni / fx)).astype(np.int64),
            np.maximum(1, np.rint(h * cam_opts.f_uni / fy)).astype(np.int64))


def _drawable(src: Source, images: np.ndarray, labels: np.ndarray, cam_opts: CameraOptions,
              prompt_opts: PromptOptions) -> np.ndarray:
    """_label_drawable for many (image in use, label) pairs at once."""
    if prompt_opts.reference != "marker":
        return np.ones(len(images), dtype=bool)
    if cam_opts.resize == "official":  # the official transform is per camera (OpenCV): one label at a time
        return np.array([_label_drawable(src.record(int(i)), int(k), cam_opts, prompt_opts)
                         for i, k in zip(images, labels)], dtype=bool)
    c = src.store.col
    img = np.asarray(src.image_index(images))
    pos = src.label_positions(images, labels)
    w, h = resized_sizes(src, images, cam_opts)
    sx, sy = w / c["image.width"][img], h / c["image.height"][img]
    x = np.rint((c["label.x"][pos] + 0.5) * sx - 0.5).astype(np.int64)  # as camera.resize_points, marked_pixel
    y = np.rint((c["label.y"][pos] + 0.5) * sy - 0.5).astype(np.int64)
    left, top, right, bottom = markers.footprint(prompt_opts.marker)
    return (x - left >= 0) & (y - top >= 0) & (x + right <= w - 1) & (y + bottom <= h - 1)


def _label_drawable(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions) -> bool:
    if prompt_opts.reference != "marker":
        return True
    resize, x, y = marked_pixel(rec, label, cam_opts)
    return markers.fits(prompt_opts.marker, x, y, resize.width, resize.height)


class EvalSet:
    """The selected eval pixels; ``sample(k)`` renders item k on demand (never all images at once)."""

    def __init__(self, sources, cam_opts, prompt_opts, num_per_dataset=8192, seed=0, cache_images=16,
                 skip_invalid=False):
        self.sources, self.cam_opts, self.prompt_opts = sources, cam_opts, prompt_opts
        self.items, self.skipped = select_eval(sources, cam_opts, prompt_opts, num_per_dataset, seed)
        self.images = ImageCache(cache_images)
        self.skip_invalid = skip_invalid
        self.bad: dict[int, str] = {}  # item -> why its image could not be used (skip_invalid)

    def __len__(self):
        return len(self.items)

    def sample(self, k: int) -> Sample:
        it = self.items[k]
        out = make_sample(self.sources[it.dataset].record(it.record), it.label, self.cam_opts,
                          self.prompt_opts, self.images)
        assert isinstance(out, Sample), out  # select_eval kept only drawable labels
        return out

    def try_sample(self, k: int) -> Sample | None:
        """Item k, or None when its image cannot be used and skip_invalid is set (the reason kept in ``bad``)."""
        if k in self.bad:
            return None
        try:
            return self.sample(k)
        except ImageError as e:
            if not self.skip_invalid:
                raise
            log.warning("eval: skipped %s", e)
            self.bad[k] = e.reason
            return None
