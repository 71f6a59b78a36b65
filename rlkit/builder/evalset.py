"""The eval selection: N drawable labels per dataset with a seeded permutation, no crop."""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from rlkit import camera as cm
from rlkit import markers
from rlkit.builder.samples import Sample, make_sample, markers_overlap
from rlkit.builder.sources import ImageCache, Source
from rlkit.errors import ConfigError
from rlkit.labels import MIN_LABEL, draw_param, eligible_images, other_label, store_values
from rlkit.markers import MarkerStyle
from rlkit.prompts import TASKS
from rlkit.schema import CameraOptions, PromptOptions
from rlkit.records import ImageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalItem:
    dataset: int  # index into sources
    record: int
    label: int
    task: str = "depth"
    second: int | None = None  # two_point: the other label
    param: float | None = None  # speed, time: the stated time or speed


def select_eval(sources: list[Source], cam_opts: CameraOptions, prompt_opts: PromptOptions,
                num_per_dataset: int = 8192, seed: int = 0, shared_with=()) -> tuple[list[EvalItem], dict]:
    """A deterministic choice of up to N drawable samples per task and dataset (no crop).

    ``shared_with``: (camera, prompt) options of the other arms of a comparison; a label is chosen only when each
    of them can draw its (first) marker too, so that every arm is scored on the same pixels (the permutation is
    the same for all: it depends on the seed and the data only).

    Returns the items and, per dataset, how many labels were skipped and why (a reason is prefixed
    with its task when the experiment has several).
    """
    tasks = list(prompt_opts.task_weights())
    items, skipped = [], {src.spec.label: {} for src in sources}
    for task in tasks:
        for d, src in enumerate(sources):
            chosen, skips = _select_task(src, d, task, cam_opts, prompt_opts, num_per_dataset, seed, shared_with)
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
                 seed: int, shared_with=()) -> tuple[list[EvalItem], Counter]:
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
        for other_cam, other_prompt in shared_with:
            elsewhere = ~_drawable(src, r, label, other_cam, other_prompt, other_prompt.marker)
            reason = np.where((reason == "") & elsewhere, "unusable_in_another_arm", reason)
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
        x1, y1, _, _ = _marked(src, r, label, cam_opts)
        x2, y2, _, _ = _marked(src, r, second, cam_opts)
        overlap = markers_overlap(x1, y1, x2, y2, markers.footprint(first_style), markers.footprint(second_style))
        reason = np.where((reason == "") & overlap, "markers_overlap", reason)
    close = store_values(src, "two_point", r, label, second, None) < MIN_LABEL
    reason = np.where((reason == "") & close, "label_rounds_to_zero", reason)
    return np.where(n < 2, "one_label", reason)


def cameras_of(src: Source, images: np.ndarray | None) -> cm.Cameras:
    """The cameras of images in use (None: all), from the store's columns."""
    c, img = src.store.col, (src.index if images is None else np.asarray(src.image_index(images)))
    cols = [c[f"image.{k}"] if img is None else c[f"image.{k}"][img] for k in ("fx", "fy", "cx", "cy", "width", "height")]
    return cm.Cameras(*cols)


def resized_sizes(src: Source, images: np.ndarray | None, cam_opts: CameraOptions) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) after the camera transform of images in use (None: all), vectorized."""
    cams = cameras_of(src, images)
    zeros = np.zeros(len(cams))
    _, _, w, h = cm.CONVENTIONS[cam_opts.resize].batch(cams, cam_opts.f_uni, cam_opts.strategy == "unify_focal",
                                                        zeros, zeros)
    return w, h


def _marked(src: Source, images: np.ndarray, labels: np.ndarray, cam_opts: CameraOptions):
    """(x, y, width, height): the marked pixels after the camera transform of many (image in use, label) pairs, and
    their images' sizes (the transform's vectorized form)."""
    pos = src.label_positions(images, labels)
    return cm.CONVENTIONS[cam_opts.resize].batch(cameras_of(src, images), cam_opts.f_uni,
                                                  cam_opts.strategy == "unify_focal", src.store.col["label.x"][pos],
                                                  src.store.col["label.y"][pos])


def _drawable(src: Source, images: np.ndarray, labels: np.ndarray, cam_opts: CameraOptions,
              prompt_opts: PromptOptions, style: MarkerStyle) -> np.ndarray:
    """Whether the marker ``style`` fits whole at each (image in use, label) pair's pixel (markers.fits,
    vectorized)."""
    if prompt_opts.reference != "marker":
        return np.ones(len(images), dtype=bool)
    x, y, w, h = _marked(src, images, labels, cam_opts)
    left, top, right, bottom = markers.footprint(style)
    return (x - left >= 0) & (y - top >= 0) & (x + right <= w - 1) & (y + bottom <= h - 1)


class EvalSet:
    """The selected eval pixels; ``sample(k)`` renders item k on demand (never all images at once)."""

    def __init__(self, sources, cam_opts, prompt_opts, num_per_dataset=8192, seed=0, cache_images=16,
                 skip_invalid=False, shared_with=()):
        self.sources, self.cam_opts, self.prompt_opts = sources, cam_opts, prompt_opts
        self.items, self.skipped = select_eval(sources, cam_opts, prompt_opts, num_per_dataset, seed, shared_with)
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
