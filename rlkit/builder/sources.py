"""Loaded datasets: a records store restricted to the images and labels a spec allows, and the image cache."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rlkit.schema import DatasetSpec
from rlkit.records import ImageError, Record, open_image
from rlkit.store import RecordStore, open_records


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
