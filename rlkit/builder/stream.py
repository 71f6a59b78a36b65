"""The endless training stream: sample i is a pure function of (seed, i)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from functools import partial

import numpy as np

from rlkit.builder.samples import SFT_COLUMNS, Sample, label_values, make_sample, to_row
from rlkit.builder.sources import ImageCache, Source
from rlkit.errors import ConfigError
from rlkit.labels import MIN_LABEL, draw_param, eligible_images, other_label
from rlkit.prompts import TASKS, answer
from rlkit.schema import CameraOptions, PromptOptions
from rlkit.records import IMAGE_REASONS, ImageError

log = logging.getLogger(__name__)


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
        # per dataset: its samples' camera options (built once: the stream asks for every sample)
        self.cameras = {id(s): self._camera(s) for s in sources}
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
                out = make_sample(src.record(r), label, self.cameras[id(src)], self.prompt_opts, self.images, rng,
                                  task=task, second=second, param=param, aspect=src.spec.aspect_jitter)
            except ImageError as e:
                if not self.skip_invalid:
                    raise
                if not self.skips[e.reason]:
                    log.warning("skipped %s (more '%s' skips are counted in builder_skips, not logged)", e, e.reason)
                out = e.reason
            if isinstance(out, Sample):
                out = self._relabeled(out, src, rng)
            if isinstance(out, Sample):
                return out
            self.skips[out] += 1
        hint = ("./run.sh data check FILE.jsonl lists the bad images" if set(self.skips) & set(IMAGE_REASONS)
                else "is the marker larger than the crops?")
        raise ConfigError(f"no drawable label in {self.max_tries} tries (skips: {dict(self.skips)}); {hint}")

    def _camera(self, src: Source) -> CameraOptions:
        """The camera options of a dataset's samples: a dataset with train_crop false is never cropped, except to
        whole multiples of camera.multiple_of (a centered crop of the whole image; with 1, the whole image)."""
        if src.spec.train_crop:
            return self.cam_opts
        whole = (2**31, 2**31)  # drawn as int(min(side, uniform(lo, hi))): the side itself
        return dataclasses.replace(self.cam_opts, crop="center", crop_width=whole, crop_height=whole)

    def _relabeled(self, s: Sample, src: Source, rng: np.random.Generator) -> Sample | str:
        """The sample with shuffled or scaled labels (data.shuffle_labels, data.label_scale), or a skip reason."""
        if not self.shuffle_labels and self.label_scale == 1.0:
            return s
        value = s.query.value
        if self.shuffle_labels:
            values = label_values(src.record(int(rng.integers(len(src)))), s.query.task)
            value = float(values[int(rng.integers(len(values)))])
        if value * self.label_scale < MIN_LABEL:  # the answer would read 0.00
            return "label_rounds_to_zero"
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
