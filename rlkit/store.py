"""The records store: each DepthLMBench jsonl converted once into memory-mapped columns.

Loading a jsonl into one Python ``Record`` per image (rlkit.records.load_records) took 210 s and 5.3 GB
for ``eval --model none`` on 1M images x 20 labels, in every process, every time; from the store the same
command takes 3.5 s and 1.6 GB (0.9 GB of it torch and transformers), with the same predictions.csv and
metrics.json (benchmarks/records.md). The store validates each line once, with the same checks and
messages (records.read_records), and writes:

- per image: the image path as written (UTF-8 bytes + offsets; the resolved root is in the
  manifest), fx, fy, cx, cy (float64), width, height, the jsonl line number (error messages name
  ``file:line``), the label offsets, and other keys as JSON (only when some line has one);
- per image with a "pair" view: the length of its translation (image.pair_motion, NaN without one;
  the column exists only when some line has a pair);
- per label, flat across images: x, y, depth and per-label keys such as axis_depth (float64, the
  values the loader parses), with a per-image flag for images that lack the key.

Format: plain numpy arrays in raw files, opened with ``np.memmap`` (a manifest.json holds dtypes and
lengths). Opening is instant and reads nothing; every process that opens the same store shares one copy
in the page cache; samplers and selections are numpy index arithmetic on whole contiguous columns.
Arrow (HF datasets, pyarrow) was the other candidate: its streaming writer leaves each column in many
record batches, and numpy sees a chunked column only after a copy (1.5 GB for the labels of 16M x 4,
beyond the 1 GB a process may use), and a one-batch file would need whole columns in memory to write.

Cache: ``$RLKIT_RECORDS_CACHE`` (default ``.cache/records``)/<key>/, the key a hash of the jsonl's
resolved path, size, mtime_ns, inode and ctime_ns (a copy that keeps size and mtime still differs), the image root and the validation options, so a changed jsonl is
converted again. A conversion is built in a temporary folder and renamed into place, under a file lock:
one process converts while the others (ranks, parallel runs) wait and then open its result. Delete
the folder to reclaim the space of stores whose jsonl is gone.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from rlkit.camera import Camera
from rlkit.records import ImageError, LoadReport, Record, RecordError, log_repairs, open_image, read_records

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: image.pair_motion
DEFAULT_CACHE = ".cache/records"
BATCH = 65536  # images per write: conversion memory stays bounded (about 100 MB at 20 labels per image)
MAX_ERRORS_KEPT = 5  # bad lines' messages kept in the manifest, for ``data check``
PART_BYTES = 256 << 20  # a file larger than this is converted by several processes, a range of lines each


_OPEN: dict[tuple[Path, str], RecordStore] = {}  # (folder, path as named) -> the store this process mapped


def cache_dir() -> Path:
    return Path(os.environ.get("RLKIT_RECORDS_CACHE") or DEFAULT_CACHE)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def store_key(path: Path, root: Path, *, skip_invalid: bool, allow_outside_root: bool) -> str:
    st = path.stat()
    # inode and ctime too: a copy can keep size and mtime (touch -r, cp -p, rsync -t) but not these, so a rewritten
    # jsonl is converted again instead of scored with the old labels
    ident = {"version": FORMAT_VERSION, "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "inode": st.st_ino, "ctime_ns": st.st_ctime_ns,
             "root": str(root.resolve()), "root_as_written": os.path.abspath(root), "skip_invalid": skip_invalid,
             "allow_outside_root": allow_outside_root}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def open_records(path: str | Path, *, root: str | Path | None = None, skip_invalid: bool = False,
                 allow_outside_root: bool = False, cache: str | Path | None = None) -> RecordStore:
    """The store of a jsonl, converted first if the cache has none for this file and these options. A cache
    entry that cannot be read (cut short, a column truncated) is converted again, with one log line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    root = Path(root) if root is not None else path.parent
    cache = Path(cache) if cache is not None else cache_dir()
    key = store_key(path, root, skip_invalid=skip_invalid, allow_outside_root=allow_outside_root)
    folder = cache / key
    opened = _OPEN.get((folder, str(path)))
    if opened is not None:  # this process has it mapped already (a file both trained and evaluated on)
        return opened
    converted = False
    if not (folder / "manifest.json").exists():
        converted = _build_once(path, root, cache, key, skip_invalid, allow_outside_root)
    store = _readable(folder, path)
    if store is None:  # cut short or damaged: converted again, under the same lock as a first conversion
        converted = _build_once(path, root, cache, key, skip_invalid, allow_outside_root, damaged=True)
        store = _readable(folder, path)
        if store is None:
            raise RecordError(f"{path}: its records cache {folder} cannot be read after converting it again; "
                              f"delete {folder}")
    _OPEN[(folder, str(path))] = store
    if converted:  # the conversion logged each bad line and the repairs
        return store
    if store.report["skipped"]:
        log.warning("%s: %d bad lines skipped (by field: %s), e.g. %s", path, sum(store.report["skipped"].values()),
                    store.report["skipped"], store.errors[0] if store.errors else "")
    if store.report["repaired"]:
        log.info("%s: repaired %s (fx == 0 means fx = fy, as in the official DepthLMBench code)",
                 path, store.report["repaired"])
    return store


def _writable(cache: Path, action):
    """Run a write into the records cache; a cache folder that cannot be written is one error line naming it."""
    try:
        return action()
    except OSError as e:
        inside = e.filename is None or Path(os.path.abspath(e.filename)).is_relative_to(os.path.abspath(cache))
        if not inside or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                                         errno.ENOTDIR, errno.EEXIST):
            raise
        raise RecordError(f"the records cache {cache} cannot be written ({e.strerror}); free it, fix its "
                          f"permissions, or point RLKIT_RECORDS_CACHE at a writable folder") from None


def _readable(folder: Path, path: Path, quiet: bool = False) -> RecordStore | None:
    """The store of a cache entry, or None (one log line) when the entry cannot be read: a manifest cut short, a
    column shorter than the manifest says (json and mmap raise ValueError), a column file missing."""
    try:
        return RecordStore(folder, str(path))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        if not quiet:
            log.warning("%s: records cache entry %s cannot be read (%s): converting the file again", path, folder, e)
        return None


def _build_once(path: Path, root: Path, cache: Path, key: str, skip_invalid: bool, allow_outside_root: bool,
                damaged: bool = False) -> bool:
    """Build the jsonl's columns into cache/key unless another process did it meanwhile; True if this one did.
    ``damaged``: the entry exists but cannot be read; it is replaced unless another process replaced it first."""
    folder = cache / key
    _writable(cache, lambda: cache.mkdir(parents=True, exist_ok=True))
    with _writable(cache, lambda: open(cache / f"{key}.lock", "w")) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting this file: wait for it
        if (folder / "manifest.json").exists() and not (damaged and _readable(folder, path, quiet=True) is None):
            return False
        for stale in cache.glob(f"{key}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cache / f"{key}.tmp-{os.getpid()}"
        try:
            _writable(cache, lambda: build_columns(path, tmp, root, skip_invalid=skip_invalid,
                                             allow_outside_root=allow_outside_root, workers=min(8, _cpus())))
            if store_key(path, root, skip_invalid=skip_invalid, allow_outside_root=allow_outside_root) != key:
                raise RecordError(f"{path}: the file changed while it was being converted; run again")
            if folder.exists():  # an entry without its manifest: cut short
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


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


def build_columns(path: Path, out: Path, root: Path, *, skip_invalid: bool, allow_outside_root: bool,
                  workers: int = 1, part_bytes: int = PART_BYTES) -> dict:
    """Validate every line of ``path`` (records.read_records: the loader's checks and messages, images
    not opened) and write its store into ``out``; returns the manifest. A large file is cut into byte
    ranges converted by ``workers`` processes side by side, then joined in file order."""
    from tqdm import tqdm

    size = path.stat().st_size
    ranges = _split(path, size, -(-size // part_bytes) if workers > 1 else 1)
    opts = {"root": root, "skip_invalid": skip_invalid, "allow_outside_root": allow_outside_root}
    out.mkdir(parents=True)
    if len(ranges) == 1:
        info = _columns_of_range(path, out, 0, None, 1, progress=size > 64 << 20, **opts)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork where there is one (as DataLoader workers): spawn would import the caller's main script again,
        # which breaks a script without an ``if __name__ == "__main__"`` guard; the workers use no threads.
        # An executor, not multiprocessing.Pool: Pool.terminate() after an error could hang for good (its task
        # thread blocked on the queue lock, seen in a test on a fresh machine); the executor cancels the ranges
        # not started and waits for the running ones, each bounded by part_bytes.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"converting {path.name} ({workers} processes)",
                   disable=size < 64 << 20)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            try:
                pending = [pool.submit(_columns_of_range, path, out / f"part{i}", a, b, line, **opts)
                           for i, (a, b, line) in enumerate(ranges)]
                parts = []
                for (a, b, _), job in zip(ranges, pending):  # in file order: the first bad line is the one raised
                    parts.append(job.result())
                    bar.update((size if b is None else b) - a)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            finally:
                bar.close()
        info = _join(out, [(out / f"part{i}", part) for i, part in enumerate(parts)])
    report = info["report"]
    log_repairs(report)
    if not info["images"]:
        raise RecordError(f"{path}: no valid records")
    report.loaded = info["images"]
    manifest = {"version": FORMAT_VERSION, "jsonl": str(path.resolve()), "root": str(root.resolve()),
                "images": info["images"], "labels": info["labels"], "label_keys": info["label_keys"],
                "columns": info["columns"], "report": {k: v for k, v in report.summary().items() if k != "path"},
                "errors": report.first_errors}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _split(path: Path, size: int, n: int) -> list[tuple[int, int | None, int]]:
    """(start, stop, first line number) of ``n`` byte ranges that start lines."""
    if n <= 1:
        return [(0, None, 1)]
    starts = [0]
    with path.open("rb") as f:
        for i in range(1, n):
            f.seek(max(size * i // n - 1, starts[-1]))
            f.readline()  # to the start of the next line
            if f.tell() < size and f.tell() > starts[-1]:
                starts.append(f.tell())
        lines, pos = [1], 0
        f.seek(0)
        for s in starts[1:]:  # line numbers: newlines before each start
            count = 0
            while pos < s:
                chunk = f.read(min(16 << 20, s - pos))
                count += chunk.count(b"\n")
                pos += len(chunk)
            lines.append(lines[-1] + count)
    return [(a, b, line) for a, b, line in zip(starts, [*starts[1:], None], lines)]


def _columns_of_range(path: Path, out: Path, start: int, stop: int | None, first_line: int, *, root: Path,
                      skip_invalid: bool, allow_outside_root: bool, progress: bool = False) -> dict:
    """The lines of one byte range as column files in ``out``."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    cols = _Columns(out)
    report = LoadReport(str(path))
    n = {"images": 0, "labels": 0, "path_bytes": 0, "extras_bytes": 0}
    label_keys: set[str] = set()
    bar = tqdm(unit=" lines", unit_scale=True, desc=f"converting {path.name}", disable=not progress)

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
        motion = [math.hypot(*rec.extras["pair"]["translation"]) if "pair" in rec.extras else np.nan
                  for _, _, rec in batch]
        if "image.pair_motion" in cols.files or not np.isnan(motion).all():  # camera_motion labels, when any
            cols.append("image.pair_motion", motion, np.float64, fill_before=n["images"], fill=np.nan)
        extras = [_encode_extras(rec.extras) for _, _, rec in batch]
        if "image.extras" in cols.files or any(extras):
            cols.append("image.extras_end", n["extras_bytes"] + np.cumsum([len(e) for e in extras], dtype=np.int64),
                        np.int64, fill_before=n["images"])
            cols.append("image.extras", np.frombuffer(b"".join(extras), dtype=np.uint8), np.uint8)
            n["extras_bytes"] += sum(len(e) for e in extras)
        n["images"] += len(batch)
        n["labels"] += int(counts.sum())
        bar.update(batch[-1][0] - first_line + 1 - bar.n)

    batch: list = []
    with bar:
        for lineno, obj, rec in read_records(path, root=root, dataset=path.stem, skip_invalid=skip_invalid,
                                             check_images=False, allow_outside_root=allow_outside_root,
                                             report=report, start=start, stop=stop, first_line=first_line,
                                             resolve_images=False):
            batch.append((lineno, obj["image"], rec))  # not the decoded line: its objects would slow the GC
            if len(batch) == BATCH:
                flush(batch)
                batch = []
        flush(batch)
    return {"columns": cols.close(), "images": n["images"], "labels": n["labels"], "path_bytes": n["path_bytes"],
            "extras_bytes": n["extras_bytes"], "label_keys": sorted(label_keys), "report": report}


# cumulative end offsets: a part's values continue from the parts before it
_ENDS = {"image.label_end": "labels", "image.path_end": "path_bytes", "image.extras_end": "extras_bytes"}


def _join(out: Path, parts: list[tuple[Path, dict]]) -> dict:
    """Append the parts' column files into ``out`` in order (offsets shifted, a column a part lacks filled)."""
    label_keys = sorted({k for _, p in parts for k in p["label_keys"]})
    names = sorted({name for _, p in parts for name in p["columns"]})
    meta = {}
    for name in names:
        dtype = next(p["columns"][name]["dtype"] for _, p in parts if name in p["columns"])
        base = {"images": 0, "labels": 0, "path_bytes": 0, "extras_bytes": 0}
        with open(out / name, "wb") as f:
            for folder, p in parts:
                if name in p["columns"]:
                    src = _map(folder / name, dtype, p["columns"][name]["length"])
                    for a in range(0, len(src), BATCH * 16):
                        chunk = src[a:a + BATCH * 16]
                        f.write(memoryview(np.ascontiguousarray(chunk + base[_ENDS[name]] if name in _ENDS else chunk))
                                .cast("B"))
                elif name.startswith("label."):  # a per-label key this part never had
                    f.write(memoryview(np.full(p["labels"], np.nan)).cast("B"))
                elif name == "image.pair_motion":
                    f.write(memoryview(np.full(p["images"], np.nan)).cast("B"))
                elif name.startswith("image.has."):
                    f.write(memoryview(np.zeros(p["images"], dtype=np.bool_)).cast("B"))
                elif name == "image.extras_end":  # no extras in this part: every image's end is where it began
                    f.write(memoryview(np.full(p["images"], base["extras_bytes"], dtype=np.int64)).cast("B"))
                for k in base:
                    base[k] += p[k]
            f.flush()
            os.fsync(f.fileno())
        meta[name] = {"dtype": dtype, "length": (out / name).stat().st_size // np.dtype(dtype).itemsize}
    report = parts[0][1]["report"]
    for _, p in parts[1:]:
        report.skipped.update(p["report"].skipped)
        report.repaired.update(p["report"].repaired)
        report.first_errors.extend(p["report"].first_errors[:MAX_ERRORS_KEPT - len(report.first_errors)])
    for folder, _ in parts:
        shutil.rmtree(folder)
    total = {k: sum(p[k] for _, p in parts) for k in ("images", "labels")}
    return {"columns": meta, **total, "label_keys": label_keys, "report": report}


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
        return np.diff(end, prepend=0) if index is None else end[index] - self.label_starts(index)

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

    def open_pair_image(self, i: int):
        """Image i's pair view (the "pair" key), checked like its image; None when it has none."""
        motion = self.col.get("image.pair_motion")
        if motion is None or not np.isfinite(motion[i]):
            return None
        a, b = self.label_range(i)
        c = self.col
        return open_image(Path(self.extras(i, a, b)["pair"]["image"]), source=f"{self.source(i)} (the pair's image)",
                          width=int(c["image.width"][i]), height=int(c["image.height"][i]))


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
            store.open_pair_image(i)
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
