"""The records store: each DepthLMBench jsonl converted once into memory-mapped columns.

Loading a jsonl into one Python ``Record`` per image (rlkit.records.load_records) costs about 4 KB of
memory and 100 us per image: 1M images x 20 labels took 187 s and 5.0 GB for ``eval --model none``,
and every rank and DataLoader worker paid it again. The store validates each line once, with the same
checks and messages (records.read_records), and writes:

- per image: the image path as written (UTF-8 bytes + offsets; the resolved root is in the
  manifest), fx, fy, cx, cy (float64), width, height, the jsonl line number (error messages name
  ``file:line``), the label offsets, and other keys as JSON (only when some line has one);
- per label, flat across images: x, y, depth and per-label keys such as axis_depth (float64, the
  values the loader parses), with a per-image flag for images that lack the key.

Format: plain numpy arrays in raw files, opened with ``np.memmap`` (a manifest.json holds dtypes and
lengths). Opening is instant and reads nothing; every process that opens the same store shares one copy
in the page cache; samplers and selections are numpy index arithmetic on whole contiguous columns.
Arrow (HF datasets, pyarrow) was the other candidate: its streaming writer leaves each column in many
record batches, and numpy sees a chunked column only after a copy (1.5 GB for the labels of 16M x 4,
beyond the 1 GB a process may use), and a one-batch file would need whole columns in memory to write.

Cache: ``$RLKIT_RECORDS_CACHE`` (default ``.cache/records``)/<key>/, the key a hash of the jsonl's
resolved path, size and mtime_ns, the image root and the validation options, so a changed jsonl is
converted again. A conversion is built in a temporary folder and renamed into place, under a file lock:
one process converts while the others (ranks, parallel runs) wait and then open its result. Delete
the folder to reclaim the space of stores whose jsonl is gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from rlkit.camera import Camera
from rlkit.records import ImageError, LoadReport, Record, RecordError, open_image, read_records

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CACHE = ".cache/records"
BATCH = 65536  # images per write: conversion memory stays bounded (about 100 MB at 20 labels per image)
MAX_ERRORS_KEPT = 5  # bad lines' messages kept in the manifest, for ``data check``


def cache_dir() -> Path:
    return Path(os.environ.get("RLKIT_RECORDS_CACHE") or DEFAULT_CACHE)


def store_key(path: Path, root: Path, *, skip_invalid: bool, allow_outside_root: bool) -> str:
    st = path.stat()
    ident = {"version": FORMAT_VERSION, "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "root": str(root.resolve()), "root_as_written": os.path.abspath(root), "skip_invalid": skip_invalid,
             "allow_outside_root": allow_outside_root}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def open_records(path: str | Path, *, root: str | Path | None = None, skip_invalid: bool = False,
                 allow_outside_root: bool = False, cache: str | Path | None = None) -> RecordStore:
    """The store of a jsonl, converted first if the cache has none for this file and these options."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    root = Path(root) if root is not None else path.parent
    cache = Path(cache) if cache is not None else cache_dir()
    key = store_key(path, root, skip_invalid=skip_invalid, allow_outside_root=allow_outside_root)
    folder = cache / key
    converted = False
    if not (folder / "manifest.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting this file: wait for it
            if not (folder / "manifest.json").exists():
                for stale in cache.glob(f"{key}.tmp-*"):  # left by a killed conversion
                    shutil.rmtree(stale, ignore_errors=True)
                tmp = cache / f"{key}.tmp-{os.getpid()}"
                try:
                    convert(path, tmp, root, skip_invalid=skip_invalid, allow_outside_root=allow_outside_root)
                    if store_key(path, root, skip_invalid=skip_invalid, allow_outside_root=allow_outside_root) != key:
                        raise RecordError(f"{path}: the file changed while it was being converted; run again")
                    tmp.rename(folder)
                    converted = True
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
    store = RecordStore(folder, str(path))
    if converted:  # the conversion logged each bad line and the repairs
        return store
    if store.report["skipped"]:
        log.warning("%s: %d bad lines skipped (by field: %s), e.g. %s", path, sum(store.report["skipped"].values()),
                    store.report["skipped"], store.errors[0] if store.errors else "")
    if store.report["repaired"]:
        log.info("%s: repaired %s (fx == 0 means fx = fy, as in the official DepthLMBench code)",
                 path, store.report["repaired"])
    return store


class _Columns:
    """Raw column files appended batch by batch; a column first seen late is filled for earlier rows."""

    def __init__(self, folder: Path):
        self.folder, self.files, self.meta = folder, {}, {}

    def append(self, name: str, values, dtype, fill_before: int = 0, fill=0) -> None:
        arr = np.ascontiguousarray(np.asarray(values, dtype=dtype))
        if name not in self.files:
            self.files[name] = open(self.folder / name, "wb")
            self.meta[name] = {"dtype": arr.dtype.str, "length": 0}
            for start in range(0, fill_before, BATCH * 16):
                self._write(name, np.full(min(BATCH * 16, fill_before - start), fill, dtype=arr.dtype))
        self._write(name, arr)

    def _write(self, name: str, arr: np.ndarray) -> None:
        self.files[name].write(memoryview(arr).cast("B"))
        self.meta[name]["length"] += len(arr)

    def close(self) -> dict:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        return self.meta


def _encode_extras(extras: dict) -> bytes:
    """Keys that are not per-label arrays, as JSON; a resolved path (depth_map) is kept apart so it reads
    back as a Path."""
    plain = {k: v for k, v in extras.items() if not isinstance(v, (np.ndarray, Path))}
    paths = {k: str(v) for k, v in extras.items() if isinstance(v, Path)}
    if not plain and not paths:
        return b""
    return json.dumps({"json": plain, "paths": paths}).encode()


def convert(path: Path, out: Path, root: Path, *, skip_invalid: bool, allow_outside_root: bool) -> dict:
    """Validate every line of ``path`` (records.read_records: the loader's checks and messages, images
    not opened) and write its store into ``out``; returns the manifest. BATCH images are held at a time."""
    from tqdm import tqdm

    out.mkdir(parents=True)
    cols = _Columns(out)
    report = LoadReport(str(path))
    n = {"images": 0, "labels": 0, "path_bytes": 0, "extras_bytes": 0}
    label_keys: set[str] = set()
    big = path.stat().st_size > 64 << 20
    bar = tqdm(unit=" lines", unit_scale=True, desc=f"converting {path.name}", disable=not big)

    def flush(batch: list) -> None:
        if not batch:
            return
        counts = np.array([len(rec.depth) for _, _, rec in batch], dtype=np.int64)
        cols.append("image.label_end", n["labels"] + np.cumsum(counts), np.int64)
        paths = [image.encode() for _, image, _ in batch]
        cols.append("image.path_end", n["path_bytes"] + np.cumsum([len(p) for p in paths], dtype=np.int64), np.int64)
        cols.append("image.path", np.frombuffer(b"".join(paths), dtype=np.uint8), np.uint8)
        n["path_bytes"] += sum(len(p) for p in paths)
        for name in ("fx", "fy", "cx", "cy", "width", "height"):
            cols.append(f"image.{name}", [getattr(rec.camera, name) for _, _, rec in batch],
                        np.int64 if name in ("width", "height") else np.float64)
        cols.append("image.line", [lineno for lineno, _, _ in batch], np.int64)
        pixels = np.concatenate([rec.pixels for _, _, rec in batch])
        cols.append("label.x", pixels[:, 0], np.float64)
        cols.append("label.y", pixels[:, 1], np.float64)
        cols.append("label.depth", np.concatenate([rec.depth for _, _, rec in batch]), np.float64)
        label_keys.update(k for _, _, rec in batch for k, v in rec.extras.items() if isinstance(v, np.ndarray))
        for k in sorted(label_keys):  # a key first seen now is filled for the images before
            vals = [rec.extras.get(k) for _, _, rec in batch]
            cols.append(f"label.{k}", np.concatenate([np.full(c, np.nan) if v is None else v
                                                       for v, c in zip(vals, counts)]),
                        np.float64, fill_before=n["labels"], fill=np.nan)
            cols.append(f"image.has.{k}", [v is not None for v in vals], np.bool_, fill_before=n["images"])
        extras = [_encode_extras(rec.extras) for _, _, rec in batch]
        if "image.extras" in cols.files or any(extras):
            cols.append("image.extras_end", n["extras_bytes"] + np.cumsum([len(e) for e in extras], dtype=np.int64),
                        np.int64, fill_before=n["images"])
            cols.append("image.extras", np.frombuffer(b"".join(extras), dtype=np.uint8), np.uint8)
            n["extras_bytes"] += sum(len(e) for e in extras)
        n["images"] += len(batch)
        n["labels"] += int(counts.sum())
        bar.update(batch[-1][0] - bar.n)

    batch: list = []
    with bar:
        for item in read_records(path, root=root, dataset=path.stem, skip_invalid=skip_invalid, check_images=False,
                                 allow_outside_root=allow_outside_root, report=report):
            lineno, obj, rec = item
            batch.append((lineno, obj["image"], rec))  # not the decoded line: its objects would slow the GC
            if len(batch) == BATCH:
                flush(batch)
                batch = []
        flush(batch)
    meta = cols.close()
    report.loaded = n["images"]
    manifest = {"version": FORMAT_VERSION, "jsonl": str(path.resolve()), "root": str(root.resolve()),
                "images": n["images"], "labels": n["labels"], "label_keys": sorted(label_keys), "columns": meta,
                "report": {k: v for k, v in report.summary().items() if k != "path"},
                "errors": report.first_errors}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


class RecordStore:
    """One converted jsonl, memory-mapped. ``record(i)`` builds the Record of image i on demand."""

    def __init__(self, folder: str | Path, path: str):
        self.folder, self.path = Path(folder), path
        m = json.loads((self.folder / "manifest.json").read_text())
        self.root = Path(m["root"])
        self.report = {"path": path, **m["report"]}
        self.errors = m["errors"]
        self.label_keys = tuple(m["label_keys"])
        self.n = m["images"]
        self.col = {name: _map(self.folder / name, c["dtype"], c["length"]) for name, c in m["columns"].items()}

    def __reduce__(self):  # pickled as its folder (DataLoader workers, datasets' fingerprint), never its data
        return RecordStore, (str(self.folder), self.path)

    def __len__(self) -> int:
        return self.n

    def label_range(self, i: int) -> tuple[int, int]:
        end = self.col["image.label_end"]
        return (int(end[i - 1]) if i else 0), int(end[i])

    def label_starts(self, index: np.ndarray | None = None) -> np.ndarray:
        """First label position of each image (of ``index``, else of all)."""
        end = self.col["image.label_end"]
        if index is None:
            return np.concatenate([[0], end[:-1]])
        index = np.asarray(index, dtype=np.int64)
        return np.where(index > 0, end[np.maximum(index - 1, 0)], 0)

    def counts(self, index: np.ndarray | None = None) -> np.ndarray:
        end = self.col["image.label_end"]
        return (np.diff(end, prepend=0) if index is None else end[index] - self.label_starts(index)).astype(np.int64)

    def image(self, i: int) -> str:
        end = self.col["image.path_end"]
        return bytes(self.col["image.path"][(int(end[i - 1]) if i else 0):int(end[i])]).decode()

    def image_path(self, i: int) -> Path:
        return (self.root / self.image(i)).resolve()

    def source(self, i: int) -> str:
        return f"{self.path}:{int(self.col['image.line'][i])}"

    def camera(self, i: int) -> Camera:
        c = self.col
        return Camera(float(c["image.fx"][i]), float(c["image.fy"][i]), float(c["image.cx"][i]),
                      float(c["image.cy"][i]), int(c["image.width"][i]), int(c["image.height"][i]))

    def labels(self, key: str) -> np.ndarray | None:
        """A flat per-label column: 'x', 'y', 'depth' or a per-label key (NaN where an image lacks it)."""
        return self.col.get(f"label.{key}")

    def extras(self, i: int, a: int, b: int) -> dict:
        out = {}
        if "image.extras" in self.col:
            end = self.col["image.extras_end"]
            raw = bytes(self.col["image.extras"][(int(end[i - 1]) if i else 0):int(end[i])])
            if raw:
                d = json.loads(raw)
                out.update(d["json"])
                out.update({k: Path(v) for k, v in d["paths"].items()})
        for k in self.label_keys:
            if self.col[f"image.has.{k}"][i]:
                out[k] = self.col[f"label.{k}"][a:b]
        return out

    def record(self, i: int, dataset: str, k: int | None = None) -> Record:
        """Image i as a Record, with its first ``k`` labels (None: all)."""
        a, b = self.label_range(i)
        if k is not None:
            b = min(b, a + k)
        pixels = np.stack([self.col["label.x"][a:b], self.col["label.y"][a:b]], axis=1)
        return Record(self.image_path(i), self.camera(i), pixels, self.col["label.depth"][a:b], dataset,
                      self.source(i), self.extras(i, a, b))

    def open_image(self, i: int):
        c = self.col
        return open_image(self.image_path(i), source=self.source(i), width=int(c["image.width"][i]),
                          height=int(c["image.height"][i]))


def _map(file: Path, dtype: str, length: int) -> np.ndarray:
    if length == 0:
        return np.empty(0, dtype=dtype)
    # a plain ndarray view of the map: indexing it skips np.memmap's per-call overhead
    return np.asarray(np.memmap(file, dtype=dtype, mode="r", shape=(length,)))


# ---------------------------------------------------------------- data check


def _check_range(store: RecordStore, start: int, stop: int) -> tuple[Counter, list[str]]:
    reasons, examples = Counter(), []
    for i in range(start, stop):
        try:
            store.open_image(i)
        except ImageError as e:
            reasons[e.reason] += 1
            if len(examples) < MAX_ERRORS_KEPT:
                examples.append(str(e))
    return reasons, examples


def check_images(store: RecordStore, workers: int = 1, progress: bool = True) -> tuple[Counter, list[str]]:
    """Open every image of the store (decoded whole) and check its size against the intrinsics.
    Returns the bad images counted by reason and the first few messages (in file order)."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    chunk = 256
    ranges = [(a, min(a + chunk, len(store))) for a in range(0, len(store), chunk)]
    reasons, examples = Counter(), []
    with tqdm(total=len(store), unit="img", desc=f"checking {Path(store.path).name}", disable=not progress) as bar:
        if workers <= 1:
            results = (_check_range(store, a, b) for a, b in ranges)
        else:
            pool = ProcessPoolExecutor(workers)
            results = pool.map(_check_range, [store] * len(ranges), *zip(*ranges))
        try:
            for (a, b), (r, ex) in zip(ranges, results):
                reasons.update(r)
                examples.extend(ex[:MAX_ERRORS_KEPT - len(examples)])
                bar.update(b - a)
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    return reasons, examples
