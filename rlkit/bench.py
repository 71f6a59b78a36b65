"""Benchmarks (``./run.sh bench NAME``): each prints a markdown table and appends it to benchmarks/NAME.md."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def machine() -> str:
    import os

    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.machine()}, {os.cpu_count()} cores, {dev}, torch {torch.__version__}"


def record(name: str, table: str, note: str = "") -> None:
    cmd = "./run.sh bench " + " ".join(shlex.quote(a) for a in [name, *sys.argv[sys.argv.index(name) + 1:]]) \
        if name in sys.argv else f"./run.sh bench {name}"
    text = (f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — {machine()}\n\n`{cmd}`\n\n{table}\n"
            + (f"\n{note}\n" if note else ""))
    print(text)
    BENCH_DIR.mkdir(exist_ok=True)
    with (BENCH_DIR / f"{name}.md").open("a") as f:
        f.write(text)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- data


def _reference_sample(rec, rng, f_uni, crop_w, crop_h):
    """A straightforward pipeline: decode, resize the whole image, crop, per-pixel marker writes."""
    from PIL import Image

    img = Image.open(rec.image).convert("RGB")
    w, h = round(rec.camera.width * f_uni / rec.camera.fx), round(rec.camera.height * f_uni / rec.camera.fy)
    img = img.resize((w, h), Image.BILINEAR)
    cw, ch = min(int(rng.integers(*crop_w)), w), min(int(rng.integers(*crop_h)), h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    arr = np.array(img.crop((x0, y0, x0 + cw, y0 + ch)))
    x, y = int(rng.integers(0, cw - 5)), int(rng.integers(0, ch - 5))
    for i in range(5):
        for j in range(5):
            if i == j or i == 0 or j == 0:
                arr[y + i, x + j] = (255, 0, 0)
    return Image.fromarray(arr)


def bench_data(argv: list[str]) -> None:
    import torch
    from torch.utils.data import DataLoader

    from rlkit.builder import CameraOptions, DatasetSpec, PromptOptions, TrainStream, load_source, train_dataset
    from rlkit.synth import CameraRange, generate_split

    p = argparse.ArgumentParser(prog="bench data")
    p.add_argument("--samples", type=int, default=400, help="samples per measurement")
    p.add_argument("--images", type=int, default=200, help="distinct 640x480 source images")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the parallel row")
    p.add_argument("--data", default=".cache/bench_data", help="where the 640x480 sources are rendered")
    a = p.parse_args(argv)

    path = Path(a.data) / "indoor_train.jsonl"
    if not path.exists():
        generate_split(a.data, "indoor", "train", a.images, points_per_image=8,
                       camera=CameraRange(width=(640, 640), aspect=(0.75, 0.75), hfov_deg=(50, 90)))
    src = load_source(DatasetSpec(str(path)))
    cam = CameraOptions(f_uni=1000.0, crop_width=(1000, 1400), crop_height=(700, 1200))
    # cache off: every sample decodes its PNG, as with a large dataset
    stream = TrainStream([src], cam, PromptOptions(), seed=0, cache_images=0)

    rows = []
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for i in range(a.samples // 4):
        _reference_sample(src.records[i % len(src.records)], rng, 1000.0, (1000, 1401), (700, 1201))
    ref = a.samples // 4 / (time.perf_counter() - t)
    rows.append(["reference (full resize, per-pixel marker)", 1, f"{ref:.1f}", "1.00x"])

    t = time.perf_counter()
    for i in range(a.samples):
        stream.sample(i)
    single = a.samples / (time.perf_counter() - t)
    rows.append(["rlkit builder, single process", 1, f"{single:.1f}", f"{single / ref:.2f}x"])

    ds = train_dataset(stream, num_shards=max(1, a.workers))
    loader = DataLoader(ds, batch_size=None, num_workers=a.workers)
    it = iter(loader)
    next(it)  # workers started
    t = time.perf_counter()
    for _ in range(a.samples):
        next(it)
    par = a.samples / (time.perf_counter() - t)
    rows.append([f"rlkit builder, DataLoader ({a.workers} workers)", a.workers, f"{par:.1f}",
                 f"{par / ref:.2f}x"])
    del it, loader
    torch.set_num_threads(torch.get_num_threads())
    table = _table(["pipeline (640x480 PNG, f_uni 1000, crops 1000-1400 x 700-1200, 5-px arrow)",
                    "processes", "samples/s", "vs reference"], rows)
    record("data", table, "Excludes the model's image processor. Sources: procedural indoor scenes, PNG.")


BENCHES = {"data": bench_data}


def main(name: str, argv: list[str]) -> None:
    if name not in BENCHES:
        raise SystemExit(f"unknown benchmark {name!r}; choose from {sorted(BENCHES)}")
    BENCHES[name](argv)
