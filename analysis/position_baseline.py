"""How much of the depth the pixel's position alone gives: a no-image baseline.

    python analysis/position_baseline.py data/synth/indoor_train.jsonl data/synth/indoor_eval.jsonl [--colour]

Each eval label is answered with the geometric mean of the k training labels whose viewing rays
(camera-frame angles from the intrinsics) are nearest; no image content is used. A model that
does not beat this has not learned to read the image, only where the marker is.
--colour adds a second row that also matches the mean colour of the 3x3 pixels at the label
(features standardized): how far a reader of the position and the local colour alone gets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from rlkit.camera import ray_directions
from rlkit.metrics import depth_metrics
from rlkit.store import open_records


def _records(path: str):
    """Every image's record, through the records store (converted once, then memory-mapped)."""
    store = open_records(path)
    return [store.record(i, Path(path).stem) for i in range(len(store))]


def rays_and_depths(path: str) -> tuple[np.ndarray, np.ndarray]:
    records = _records(path)
    rays = np.concatenate([ray_directions(r.camera, r.pixels) for r in records])
    return rays, np.concatenate([r.depth for r in records])


def local_colours(path: str) -> np.ndarray:
    """(labels, 3) mean RGB in [0, 1] of the 3x3 pixels around each label, in the original image."""
    records = _records(path)
    out = []
    for r in records:
        rgb = np.asarray(Image.open(r.image).convert("RGB"), dtype=np.float64) / 255
        for x, y in np.rint(r.pixels).astype(int):
            out.append(rgb[max(0, y - 1):y + 2, max(0, x - 1):x + 2].reshape(-1, 3).mean(axis=0))
    return np.array(out)


def knn_predict(train_x, train_depth, eval_x, k: int, chunk: int = 512) -> np.ndarray:
    """Geometric mean of the k nearest training labels (euclidean; for unit rays the same order as angle)."""
    log_depth = np.log(train_depth)
    sq_train = (train_x ** 2).sum(axis=1)
    out = []
    for i in range(0, len(eval_x), chunk):
        d = sq_train[None] - 2 * eval_x[i:i + chunk] @ train_x.T  # |a - b|^2 less |a|^2, per eval row
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]  # the k smallest, in any order
        out.append(np.exp(log_depth[nearest].mean(axis=1)))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", help="DepthLMBench jsonl with the training labels")
    p.add_argument("eval", help="DepthLMBench jsonl to score")
    p.add_argument("--k", type=int, default=50, help="neighbours per eval label")
    p.add_argument("--colour", action="store_true", help="also match the local colour at the label")
    a = p.parse_args(argv)
    train_rays, train_depth = rays_and_depths(a.train)
    eval_rays, eval_depth = rays_and_depths(a.eval)
    k = min(a.k, len(train_depth))
    rows = [("nearest rays (position only)", knn_predict(train_rays, train_depth, eval_rays, k))]
    if a.colour:
        train_x = np.hstack([train_rays, local_colours(a.train)])
        eval_x = np.hstack([eval_rays, local_colours(a.eval)])
        mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-9
        rows.append(("nearest rays and 3x3 colour", knn_predict((train_x - mean) / std, train_depth,
                                                                (eval_x - mean) / std, k)))
    rows.append(("median of train labels", np.full_like(eval_depth, np.median(train_depth))))
    table = pd.DataFrame([{"answer": name, **depth_metrics(values, eval_depth)} for name, values in rows])
    print(table[["answer", "delta1", "abs_rel"]].to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
