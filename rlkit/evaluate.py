"""Evaluation: batched greedy generation on the eval selection, the shared answer parser, metrics.

Writes predictions.csv (dataset, image, x, y = the pixel in the original image, gt, pred, text) and metrics.json into the run
dir and prints markdown tables in the layout of the paper's Table 1 (datasets as columns,
average last). Baselines need no model: a constant answer and the median training label.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from rlkit.builder import EvalSet, Source, label_values, reads_image, to_row
from rlkit.io import atomic_write_text
from rlkit.metrics import METRICS, depth_metrics
from rlkit.prompts import parse_answer

log = logging.getLogger(__name__)


def selection_frame(evalset: EvalSet) -> pd.DataFrame:
    """The eval pixels and labels (rendered only for a task that reads its labels from the image)."""
    rows, task = [], evalset.prompt_opts.task
    for k, it in enumerate(evalset.items):
        src = evalset.sources[it.dataset]
        rec = src.records[it.record]
        x, y = rec.pixels[it.label]
        gt = evalset.sample(k).query.value if reads_image(task) else label_values(rec, task)[it.label]
        rows.append({"dataset": src.spec.label, "image": str(rec.image), "x": float(x), "y": float(y),
                     "gt": float(gt)})
    return pd.DataFrame(rows)


def generate_answers(model, processor, prompts: list, images: list, max_new_tokens: int) -> list[str]:
    import torch

    texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def predict(model, processor, evalset: EvalSet, batch_starts, batch_size: int = 32, max_new_tokens: int = 32,
            progress: bool = True) -> dict[int, str]:
    """Generated text per eval item for the batches starting at ``batch_starts``.

    Batches are cut from the whole selection the same way for any number of processes, so every
    item is generated in the same padded batch (and so gives the same text) on 1 or N processes.
    """
    was_training = model.training
    model.eval()
    texts = {}
    for start in tqdm(batch_starts, desc="eval", disable=not progress):
        ks = range(start, min(start + batch_size, len(evalset)))
        rows = [to_row(evalset.sample(k)) for k in ks]
        texts.update(zip(ks, generate_answers(model, processor, [r["prompt"] for r in rows],
                                              [r["images"][0] for r in rows], max_new_tokens)))
    model.train(was_training)
    return texts


def add_predictions(frame: pd.DataFrame, texts: list[str], task: str) -> None:
    """The parsed answers (NaN: a failed parse) and the raw texts, in the frame's row order."""
    frame["pred"] = np.array([parse_answer(t, task) for t in texts], dtype=float)
    frame["text"] = texts


def train_medians(sources: list[Source], task: str) -> dict[str, float] | None:
    """Median training label per dataset name, plus '*' for all training data pooled (None for a
    task whose labels are read from the images: the records hold none)."""
    if reads_image(task):
        return None
    out, pooled = {}, []
    for s in sources:
        vals = np.concatenate([label_values(r, task) for r in s.records])
        out[s.spec.label] = float(np.median(vals))
        pooled.append(vals)
    out["*"] = float(np.median(np.concatenate(pooled))) if pooled else float("nan")
    return out


def summarize(frame: pd.DataFrame, constant: float, medians: dict[str, float] | None = None) -> dict:
    """{method: {dataset: {metric: value}}} for the model (if it has predictions) and the baselines."""
    methods = {}
    if "pred" in frame:
        methods["model"] = frame["pred"].to_numpy(dtype=float)
    methods[f"constant {constant:g} m"] = np.full(len(frame), constant)
    if medians:
        methods["median (train labels)"] = frame["dataset"].map(lambda d: medians.get(d, medians["*"])).to_numpy(float)
    result = {}
    for name, pred in methods.items():
        per = {}
        for ds, idx in frame.groupby("dataset", sort=False).indices.items():
            per[ds] = depth_metrics(pred[idx], frame["gt"].to_numpy()[idx], fallback=constant)
        per["avg"] = {m: float(np.mean([per[d][m] for d in per])) for m in METRICS}
        result[name] = per
    return result


def markdown_table(result: dict, metric: str = "delta1") -> str:
    methods = list(result)
    datasets = list(result[methods[0]])
    lines = [f"| {metric} | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{result[m][d][metric]:.3f}" for d in datasets) + " |")
    return "\n".join(lines)


def strict_json(obj):
    """The object with every NaN or infinite float as None: metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_results(out_dir: str | Path, frame: pd.DataFrame, result: dict, extra: dict | None = None) -> str:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "predictions.csv", index=False)
    payload = strict_json({"metrics": result, **(extra or {})})
    if "null" in json.dumps(payload["metrics"]):
        payload["null_metrics"] = "undefined: computed over no samples or from a non-finite value"
    # metrics.json marks a finished run: written last, whole
    atomic_write_text(out_dir / "metrics.json", json.dumps(payload, indent=1, allow_nan=False))
    tables = "\n\n".join(markdown_table(result, m) for m in ("delta1", "abs_rel", "parse_fail"))
    print(tables)
    return tables
