"""How much of the depth the pixel's position alone gives: a no-image baseline.

    python analysis/position_baseline.py data/synth/indoor_train.jsonl data/synth/indoor_eval.jsonl

Each eval label is answered with the geometric mean of the k training labels whose viewing rays
(camera-frame angles from the intrinsics) are nearest; no image content is used. A model that
does not beat this has not learned to read the image, only where the marker is.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from rlkit.camera import ray_directions
from rlkit.metrics import depth_metrics
from rlkit.records import load_records


def rays_and_depths(path: str) -> tuple[np.ndarray, np.ndarray]:
    records, _ = load_records(path, check_images=False)
    rays = np.concatenate([ray_directions(r.camera, r.pixels) for r in records])
    return rays, np.concatenate([r.depth for r in records])


def knn_predict(train_rays, train_depth, eval_rays, k: int, chunk: int = 512) -> np.ndarray:
    log_depth = np.log(train_depth)
    out = []
    for i in range(0, len(eval_rays), chunk):
        d = 1.0 - eval_rays[i:i + chunk] @ train_rays.T  # 1 - cos(angle between rays)
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]  # the k smallest, in any order
        out.append(np.exp(log_depth[nearest].mean(axis=1)))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", help="DepthLMBench jsonl with the training labels")
    p.add_argument("eval", help="DepthLMBench jsonl to score")
    p.add_argument("--k", type=int, default=50, help="neighbours per eval label")
    a = p.parse_args(argv)
    train_rays, train_depth = rays_and_depths(a.train)
    eval_rays, eval_depth = rays_and_depths(a.eval)
    pred = knn_predict(train_rays, train_depth, eval_rays, min(a.k, len(train_depth)))
    median = np.full_like(eval_depth, np.median(train_depth))
    print("| answer | delta1 | abs_rel |\n|---|---|---|")
    for name, values in (("nearest rays (position only)", pred), ("median of train labels", median)):
        m = depth_metrics(values, eval_depth)
        print(f"| {name} | {m['delta1']:.3f} | {m['abs_rel']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
