"""The one dataset builder: records -> camera transform -> marker + prompt -> rows.

SFT, GRPO, evaluation and the preview all get their samples from ``make_sample``.

- Train: ``train_dataset`` streams rows forever. Sample i is a pure function of (seed, i):
  pick a dataset by weight, an image from the first ``images`` of a seeded permutation, one
  of its first ``points_per_image`` labels, then a fresh random crop that keeps that label's
  marker whole (label-density control, the paper's Fig. 5).
- Eval: ``select_eval`` picks N labeled pixels per dataset with a seeded permutation, no
  crop; labels whose marker cannot be drawn whole are skipped and counted, never moved.

Tasks (rlkit.prompts.TASKS; labels: rlkit.labels): ``prompt.tasks`` mixes several by weight. A sample
first draws its task, then a dataset and an image that can serve it; two_point marks a second label of
the image with a second marker, camera_motion shows the image and its pair view (the same resize and
crop for both, no marker).

Rows (TRL's conversational prompt-completion format with an ``images`` column):
  images, prompt, completion, and the answer columns that reward functions receive as
  keyword arguments: label (the true answer, in unit), unit ("m", "m/s", "s"), task, depth
  (the first marked point's euclidean distance in meters; NaN without a marker; the label of
  the depth task), dataset, image, pixels (the marked pixels [[x, y], ...] after the transform),
  pixel (the first of them; [-1, -1] without a marker), intrinsics ([fx, fy, cx, cy, width, height]
  after the transform).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import zlib
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
from rlkit.labels import MIN_LABEL, draw_param, eligible_images, label_value, other_label, store_values
from rlkit.markers import MarkerStyle
from rlkit.prompts import TASKS, Query, answer, question
from rlkit.schema import CameraOptions, DatasetSpec, PromptOptions
from rlkit.records import IMAGE_REASONS, ImageError, Record, RecordError, open_image
from rlkit.store import RecordStore, open_records

log = logging.getLogger(__name__)

SFT_COLUMNS = ("images", "prompt", "completion")
ANSWER_COLUMNS = ("label", "unit", "task", "depth", "dataset", "image", "pixels", "pixel", "intrinsics")


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


def image_resize(rec: Record, cam_opts: CameraOptions) -> cm.Resize:
    """The image resize of the camera strategy."""
    cam = rec.camera
    if cam_opts.resize == "official":
        return cm.official_transform(cam, cam_opts.f_uni).resize()
    return cm.unify_focal(cam, cam_opts.f_uni) if cam_opts.strategy == "unify_focal" else cm.identity_resize(cam)


def marked_pixel(rec: Record, label: int, cam_opts: CameraOptions) -> tuple[cm.Resize, int, int]:
    """The image resize of the camera strategy and the label's nearest pixel after it (with
    ``resize: official``, the official code's size and its int()-truncated pixel)."""
    cam = rec.camera
    if cam_opts.resize == "official":
        t = cm.official_transform(cam, cam_opts.f_uni)
        return (t.resize(), *t.point(*rec.pixels[label]))
    resize = image_resize(rec, cam_opts)
    point = cm.resize_points(rec.pixels[label:label + 1], resize)[0]
    return resize, int(np.rint(point[0])), int(np.rint(point[1]))


def pair_view(rec: Record) -> Record:
    """The record's pair view as a record of its own (the same camera; rlkit.records' "pair" key)."""
    pair = rec.extras.get("pair")
    if pair is None:
        raise RecordError(f"{rec.source}: field 'pair': missing, and task 'camera_motion' needs it")
    return dataclasses.replace(rec, image=Path(pair["image"]), source=f"{rec.source} (the pair's image)")


def _crop_offset(rng, lo: int, hi: int) -> int | None:
    return None if lo > hi else int(rng.integers(lo, hi + 1))


def _transform(src: Image.Image, rec: Record, resize: cm.Resize, crop: cm.Crop, cam_opts: CameraOptions):
    official = cm.official_transform(rec.camera, cam_opts.f_uni) if cam_opts.resize == "official" else None
    if official is not None:  # as the official code: the whole image, then the crop
        return official.image(src).crop((crop.x0, crop.y0, crop.x0 + crop.width, crop.y0 + crop.height))
    if resize.sx == 1.0 and resize.sy == 1.0:
        return src.crop((crop.x0, crop.y0, crop.x0 + crop.width, crop.y0 + crop.height))
    # resize only the cropped region: PIL maps output pixel centers through the box exactly
    box = (crop.x0 / resize.sx, crop.y0 / resize.sy,
           (crop.x0 + crop.width) / resize.sx, (crop.y0 + crop.height) / resize.sy)
    return src.resize((crop.width, crop.height), Image.BILINEAR, box=box)


def make_sample(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions,
                images: ImageCache, rng: np.random.Generator | None = None, *, task: str | None = None,
                second: int | None = None, param: float | None = None) -> Sample | str:
    """Build one sample; ``rng`` given means train mode (random crop). Returns a skip reason
    string instead of a sample when a marker cannot be drawn whole. ``task`` defaults to prompt.task;
    ``second`` is two_point's other label, ``param`` the speed or time task's stated time or speed."""
    task = task or prompt_opts.task
    spec = TASKS[task]
    marks = [label, second][:spec.markers]
    styles = prompt_opts.marker_styles[:spec.markers]
    uses_marker = prompt_opts.reference == "marker"
    resize, points = None if marks else image_resize(rec, cam_opts), []  # with marks: marked_pixel's resize
    for m in marks:
        resize, x, y = marked_pixel(rec, m, cam_opts)
        if not (0 <= x < resize.width and 0 <= y < resize.height):
            return "outside_image"
        points.append((x, y))
    feet = [markers.footprint(st) if uses_marker else (0, 0, 0, 0) for st in styles]

    crop = cm.Crop(0, 0, resize.width, resize.height)
    if rng is not None and cam_opts.crop_width is not None and cam_opts.crop_height is not None:
        wr, hr = cam_opts.crop_width, cam_opts.crop_height
        if len(points) > 1:  # crops no smaller than the markers' span: fewer skips, so fewer wide pairs lost
            wr = (max(wr[0], min(wr[1], max(x + f[2] for (x, _), f in zip(points, feet))
                                 - min(x - f[0] for (x, _), f in zip(points, feet)) + 1)), wr[1])
            hr = (max(hr[0], min(hr[1], max(y + f[3] for (_, y), f in zip(points, feet))
                                 - min(y - f[1] for (_, y), f in zip(points, feet)) + 1)), hr[1])
        if cam_opts.crop == "center":  # a label outside the crop is skipped (the official code drops it)
            crop = cm.center_crop(rng, resize.width, resize.height, wr, hr, cam_opts.multiple_of)
            shifted = [(x - crop.x0, y - crop.y0) for x, y in points]
            if not all(markers.fits(st, x, y, crop.width, crop.height) if uses_marker
                       else 0 <= x < crop.width and 0 <= y < crop.height for st, (x, y) in zip(styles, shifted)):
                return "marker_outside_crop"
        else:
            cw, ch = cm.sample_crop_size(rng, resize.width, resize.height, wr, hr, cam_opts.multiple_of)
            # offsets that keep every marker whole inside the crop
            x0 = _crop_offset(rng, max([0] + [x + f[2] - cw + 1 for (x, _), f in zip(points, feet)]),
                              min([resize.width - cw] + [x - f[0] for (x, _), f in zip(points, feet)]))
            y0 = _crop_offset(rng, max([0] + [y + f[3] - ch + 1 for (_, y), f in zip(points, feet)]),
                              min([resize.height - ch] + [y - f[1] for (_, y), f in zip(points, feet)]))
            if x0 is None or y0 is None:
                return "marker_outside_crop"
            crop = cm.Crop(x0, y0, cw, ch)
    points = [(x - crop.x0, y - crop.y0) for x, y in points]
    if uses_marker and not all(markers.fits(st, x, y, crop.width, crop.height) for st, (x, y) in zip(styles, points)):
        return "marker_outside_image"
    if uses_marker and len(points) == 2 and _overlap(*points[0], *points[1], *feet):
        return "markers_overlap"  # one marker would hide the other
    value = None if reads_image(task) else label_value(rec, task, label, second, param)
    if rng is not None and value is not None and value < MIN_LABEL:
        return "label_rounds_to_zero"

    views = [rec, pair_view(rec)] if spec.images == 2 else [rec]
    imgs = [_transform(images.get(v), v, resize, crop, cam_opts) for v in views]  # new images, never the cache's
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

    official = cm.official_transform(rec.camera, cam_opts.f_uni) if cam_opts.resize == "official" else None
    new_cam = cm.crop_camera(official.camera if official is not None else cm.resize_camera(rec.camera, resize), crop)
    q = Query(task, new_cam, x, y, value, second=points[1] if len(points) > 1 else None, param=param,
              colors=prompt_opts.marker_colors)
    strategy, template = cam_opts.strategy, prompt_opts.template
    return Sample(imgs, question(q, reference=prompt_opts.reference, strategy=strategy, template=template),
                  answer(q, strategy=strategy, template=template), q, rec, label, second)


def _overlap(x1, y1, x2, y2, f, g):
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


# ---------------------------------------------------------------- train stream


class TrainStream:
    """Sample i of the stream is a pure function of (seed, i), so workers and resumes agree."""

    def __init__(self, sources: list[Source], cam_opts: CameraOptions, prompt_opts: PromptOptions,
                 seed: int = 0, cache_images: int = 64, max_tries: int = 100, shuffle_labels: bool = False,
                 label_scale: float = 1.0, skip_invalid: bool = False):
        if not sources:
            raise ConfigError("no training datasets")
        self.sources, self.cam_opts, self.prompt_opts, self.seed = sources, cam_opts, prompt_opts, seed
        weights = np.array([s.spec.weight for s in sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"dataset weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.p = weights / weights.sum()
        task_weights = {t: w for t, w in prompt_opts.task_weights().items() if w > 0}  # weight 0: evaluated only
        self.tasks = list(task_weights)
        self.task_p = np.array(list(task_weights.values())) / sum(task_weights.values())
        self.images = ImageCache(cache_images)
        self.skips = Counter()  # reason -> samples skipped
        self.max_tries = max_tries
        self.skip_invalid = skip_invalid  # a bad image: counted in skips and another sample drawn, else an error
        # shuffle_labels: every answer carries a label from a random other image of the same dataset,
        # so a model learns the answer format and the label distribution but no depth (a GRPO base stage)
        # label_scale: every answer carries its label times this, so a model reads depth at the wrong scale
        # (a GRPO start that knows relative depth but not this camera's metric scale). Both need per-pixel
        # labels: config.validate checks that.
        self.shuffle_labels, self.label_scale = shuffle_labels, float(label_scale)
        # per task: the datasets that can serve it, their images that can, and the datasets' weights among them
        self.choices = {t: self._choices(t) for t in self.tasks}

    def _choices(self, task: str) -> tuple[list[int], list[np.ndarray | None], np.ndarray]:
        usable, images = [], []
        for d, s in enumerate(self.sources):
            if TASKS[task].label_key is not None:
                label_values(s.record(0), task)  # fail early if the task's labels are missing
            elig = eligible_images(s, task)
            if elig is None or len(elig):
                usable.append(d)
                images.append(elig)
        p = self.p[usable]
        if not usable or p.sum() <= 0:
            need = {"two_point": "images with 2 or more labels", "camera_motion": "images with a 'pair' view"}
            raise ConfigError(f"task {task} needs {need.get(task, 'labels')}; no training dataset with weight > 0 has "
                              f"one ({', '.join(s.spec.path for s in self.sources)})")
        return usable, images, p / p.sum()

    def pick(self, rng: np.random.Generator, task: str | None = None) -> tuple[Source, int, int]:
        """A dataset by weight, one of its images in use and one of that image's labels in use (no image read);
        only datasets and images that can serve ``task``."""
        usable, images, p = self.choices[task or self.tasks[0]]
        d = int(rng.choice(len(usable), p=p))
        src, elig = self.sources[usable[d]], images[d]
        i = int(rng.integers(len(src))) if elig is None else int(elig[rng.integers(len(elig))])
        return src, i, int(rng.integers(src.num_labels(i)))

    def sample(self, i: int) -> Sample:
        rng = np.random.default_rng([self.seed, i])
        # the task first, kept through the tries: a task whose samples are skipped more often keeps its weight
        task = self.tasks[0] if len(self.tasks) == 1 else self.tasks[int(rng.choice(len(self.tasks), p=self.task_p))]
        for _ in range(self.max_tries):
            src, r, label = self.pick(rng, task)
            second = None
            if TASKS[task].markers == 2:  # another label of the image, uniform
                second = int(other_label(label, src.num_labels(r), rng.integers(src.num_labels(r) - 1)))
            param = draw_param(task, rng)
            try:
                out = make_sample(src.record(r), label, self.cam_opts, self.prompt_opts, self.images, rng,
                                  task=task, second=second, param=param)
            except ImageError as e:
                if not self.skip_invalid:
                    raise
                if not self.skips[e.reason]:
                    log.warning("skipped %s (more '%s' skips are counted in builder_skips, not logged)", e, e.reason)
                out = e.reason
            if isinstance(out, Sample):
                return self._relabeled(out, src, rng)
            self.skips[out] += 1
        hint = ("./run.sh data check FILE.jsonl lists the bad images" if set(self.skips) & set(IMAGE_REASONS)
                else "is the marker larger than the crops?")
        raise ConfigError(f"no drawable label in {self.max_tries} tries (skips: {dict(self.skips)}); {hint}")

    def _relabeled(self, s: Sample, src: Source, rng: np.random.Generator) -> Sample:
        if not self.shuffle_labels and self.label_scale == 1.0:
            return s
        value = s.query.value
        if self.shuffle_labels:
            values = label_values(src.record(int(rng.integers(len(src)))), s.query.task)
            value = float(values[int(rng.integers(len(values)))])
        q = dataclasses.replace(s.query, value=value * self.label_scale)
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
    task: str = "depth"
    second: int | None = None  # two_point: the other label
    param: float | None = None  # speed, time: the stated time or speed


def select_eval(sources: list[Source], cam_opts: CameraOptions, prompt_opts: PromptOptions,
                num_per_dataset: int = 8192, seed: int = 0) -> tuple[list[EvalItem], dict]:
    """A deterministic choice of up to N drawable samples per task and dataset (no crop).

    Returns the items and, per dataset, how many labels were skipped and why (a reason is prefixed
    with its task when the experiment has several).
    """
    tasks = list(prompt_opts.task_weights())
    items, skipped = [], {src.spec.label: {} for src in sources}
    for task in tasks:
        for d, src in enumerate(sources):
            chosen, skips = _select_task(src, d, task, cam_opts, prompt_opts, num_per_dataset, seed)
            items.extend(chosen)
            for reason, n in skips.items():
                skipped[src.spec.label][reason if len(tasks) == 1 else f"{task}: {reason}"] = n
            if skips:
                log.info("eval %s %s: skipped %s", task, src.spec.label, dict(skips))
    have = {it.task for it in items}
    for task in tasks:
        if task not in have and items:  # (no item at all: the plan says so, with every skip)
            raise ConfigError(f"eval: task {task} has no eval sample in any dataset (skips: {skipped}); give its "
                              f"eval data what it needs or drop it from prompt.tasks")
    return items, skipped


def _select_task(src: Source, d: int, task: str, cam_opts: CameraOptions, prompt_opts: PromptOptions, need: int,
                 seed: int) -> tuple[list[EvalItem], Counter]:
    spec, skips = TASKS[task], Counter()
    # depth-like tasks keep the pixels of a depth run; the others draw their own (salted by the task's name)
    salt = [] if spec.markers == 1 and spec.param is None else [zlib.crc32(task.encode())]
    if spec.markers == 0:  # camera_motion: every image with a pair, in a seeded order
        elig = eligible_images(src, task)
        if len(src) > len(elig):
            skips["no_pair"] = len(src) - len(elig)
        order = elig[np.random.default_rng([seed, d, 11, *salt]).permutation(len(elig))[:need]]
        return [EvalItem(d, int(r), 0, task) for r in order], +skips
    offsets = np.concatenate([[0], np.cumsum(src.counts)])
    order = np.random.default_rng([seed, d, 11, *salt]).permutation(int(offsets[-1]))
    # two_point: each position of the permutation pairs its label with another of the image (one draw per position,
    # so a smaller N picks a prefix of a larger N's pairs)
    pairing = np.random.default_rng([seed, d, 12]).random(len(order)) if spec.markers == 2 else None
    # the permutation's labels in order, the unusable ones skipped, until N are chosen: checked a
    # block at a time, vectorized (the same choice as one label at a time)
    chosen, start = [], 0
    while need > 0 and start < len(order):
        flat = order[start:start + max(2 * need, 1024)]
        r = np.searchsorted(offsets, flat, side="right") - 1
        label = flat - offsets[r]
        reason = np.where(_drawable(src, r, label, cam_opts, prompt_opts, prompt_opts.marker), "", "marker_outside_image")
        second = None
        if spec.markers == 2:
            n = src.counts[r]
            second = other_label(label, n, np.floor(pairing[start:start + len(r)] * np.maximum(n - 1, 0)).astype(np.int64))
            reason = _pair_reasons(src, r, label, second, n, reason, cam_opts, prompt_opts)
        ok = reason == ""
        picked = np.cumsum(ok)
        if picked[-1] >= need:  # stop at the N-th usable label: later ones are never looked at
            stop = int(np.searchsorted(picked, need)) + 1
            r, label, ok, reason = r[:stop], label[:stop], ok[:stop], reason[:stop]
            second = None if second is None else second[:stop]
        skips.update(reason[~ok].tolist())
        chosen.extend(zip(r[ok], label[ok], [None] * int(ok.sum()) if second is None else second[ok]))
        need -= int(ok.sum())
        start += len(r)
    params = draw_param(task, np.random.default_rng([seed, d, 13, *salt]), size=len(chosen))
    items = [EvalItem(d, int(a), int(b), task, None if c is None else int(c),
                      None if params is None else float(params[k])) for k, (a, b, c) in enumerate(chosen)]
    return items, +skips


def _pair_reasons(src, r, label, second, n, reason, cam_opts, prompt_opts) -> np.ndarray:
    """two_point's skip reasons, first that applies: an image with one label, a marker that does not fit, two
    markers on each other, two labels at one point (a label that reads 0.00)."""
    first_style, second_style = prompt_opts.marker_styles
    fits2 = _drawable(src, r, second, cam_opts, prompt_opts, second_style)
    reason = np.where(reason != "", reason, np.where(fits2, "", "marker_outside_image"))
    if prompt_opts.reference == "marker":
        x1, y1 = _marked_xy(src, r, label, cam_opts)
        x2, y2 = _marked_xy(src, r, second, cam_opts)
        overlap = _overlap(x1, y1, x2, y2, markers.footprint(first_style), markers.footprint(second_style))
        reason = np.where((reason == "") & overlap, "markers_overlap", reason)
    close = store_values(src, "two_point", r, label, second, None) < MIN_LABEL
    reason = np.where((reason == "") & close, "label_rounds_to_zero", reason)
    return np.where(n < 2, "one_label", reason)


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


def _marked_xy(src: Source, images: np.ndarray, labels: np.ndarray, cam_opts: CameraOptions):
    """The marked pixels (x, y) after the camera resize of many (image in use, label) pairs: marked_pixel, vectorized
    (the official transform is per camera, OpenCV: one label at a time)."""
    if cam_opts.resize == "official":
        xy = np.array([marked_pixel(src.record(int(i)), int(k), cam_opts)[1:] for i, k in zip(images, labels)],
                      dtype=np.int64).reshape(-1, 2)
        return xy[:, 0], xy[:, 1]
    c = src.store.col
    img = np.asarray(src.image_index(images))
    pos = src.label_positions(images, labels)
    w, h = resized_sizes(src, images, cam_opts)
    sx, sy = w / c["image.width"][img], h / c["image.height"][img]
    return (np.rint((c["label.x"][pos] + 0.5) * sx - 0.5).astype(np.int64),  # as camera.resize_points
            np.rint((c["label.y"][pos] + 0.5) * sy - 0.5).astype(np.int64))


def _drawable(src: Source, images: np.ndarray, labels: np.ndarray, cam_opts: CameraOptions,
              prompt_opts: PromptOptions, style: MarkerStyle) -> np.ndarray:
    """_label_drawable for many (image in use, label) pairs at once, with marker ``style``."""
    if prompt_opts.reference != "marker":
        return np.ones(len(images), dtype=bool)
    if cam_opts.resize == "official":
        return np.array([_label_drawable(src.record(int(i)), int(k), cam_opts, prompt_opts, style)
                         for i, k in zip(images, labels)], dtype=bool)
    x, y = _marked_xy(src, images, labels, cam_opts)
    w, h = resized_sizes(src, images, cam_opts)
    left, top, right, bottom = markers.footprint(style)
    return (x - left >= 0) & (y - top >= 0) & (x + right <= w - 1) & (y + bottom <= h - 1)


def _label_drawable(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions,
                    style: MarkerStyle) -> bool:
    if prompt_opts.reference != "marker":
        return True
    resize, x, y = marked_pixel(rec, label, cam_opts)
    return markers.fits(style, x, y, resize.width, resize.height)


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
                          self.prompt_opts, self.images, task=it.task, second=it.second, param=it.param)
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
