"""Depth metrics. A failed parse counts as wrong: it misses every delta threshold, and for the
error metrics (AbsRel, RMSE, log10) it is scored as if the constant baseline had answered."""

from __future__ import annotations

import numpy as np

METRICS = ("delta1", "delta2", "delta3", "abs_rel", "rmse", "log10", "parse_fail")
LOWER_IS_BETTER = {"abs_rel", "rmse", "log10", "parse_fail"}


def delta_hits(pred, gt, k: int = 1) -> np.ndarray:
    """Per sample, whether max(pred/gt, gt/pred) < 1.25**k; a failed parse (NaN, or not positive) misses."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    ok = np.isfinite(pred) & (pred > 0)
    p = np.where(ok, pred, 1.0)
    return ok & (np.maximum(p / gt, gt / p) < 1.25 ** k)


def depth_metrics(pred, gt, fallback: float = 2.0) -> dict[str, float]:
    """pred may hold NaN for failed parses. Returns the metrics over all samples."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or gt.ndim != 1:
        raise ValueError(f"pred and gt must be 1-D of equal length, got {pred.shape} and {gt.shape}")
    if len(gt) == 0:
        return {m: float("nan") for m in METRICS}
    failed = ~(np.isfinite(pred) & (pred > 0))
    p = np.where(failed, fallback, pred)
    out = {f"delta{k}": float(np.mean(delta_hits(pred, gt, k))) for k in (1, 2, 3)}
    out["abs_rel"] = float(np.mean(np.abs(p - gt) / gt))
    out["rmse"] = float(np.sqrt(np.mean((p - gt) ** 2)))
    out["log10"] = float(np.mean(np.abs(np.log10(p) - np.log10(gt))))
    out["parse_fail"] = float(np.mean(failed))
    return out
