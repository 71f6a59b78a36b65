"""Evaluation: batched greedy generation on the eval selection, the shared answer parser, metrics.

Writes predictions.csv (task, dataset, image, x, y = the marked pixel in the original image, gt, pred, text) and
metrics.json into the run dir and prints markdown tables in the layout of the paper's Table 1 (datasets as
columns, average last) and, with several tasks, of its Table 3 (a column per task and dataset). Baselines
need no model: a constant answer (in each task's unit) and the median training label of each task.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from rlkit.api import is_api_model
from rlkit.builder import EvalSet, Source, label_values, reads_image, to_row
from rlkit.errors import ConfigError
from rlkit.labels import PER_PIXEL, store_values, train_label_sample
from rlkit.io import atomic_write_text
from rlkit.metrics import METRICS, depth_metrics
from rlkit.models import load_model, load_processor, process_state
from rlkit.prompts import TASKS, parse_answer

if TYPE_CHECKING:
    from rlkit.config import Experiment

# Method names in metrics.json, results.csv and every table; tables and plots find baselines by these
MODEL = "model"
MEDIAN = "median (train labels)"


def constant_name(value: float) -> str:
    """The constant-answer baseline's method name: ``constant 2 m`` for eval.constant 2.0."""
    return f"constant {value:g} m"


def is_constant(method: str) -> bool:
    """Whether a method name is a constant-answer baseline's, whatever its constant."""
    m = re.fullmatch(r"constant (\S+) m", method)
    try:
        return m is not None and method == constant_name(float(m.group(1)))
    except ValueError:
        return False


def selection_frame(evalset: EvalSet) -> pd.DataFrame:
    """The eval samples and labels, read from the stores a dataset and task at a time (rendered only for a
    task that reads its labels from the image; an image that cannot be used leaves gt NaN, its reason in
    evalset.bad). x, y: the (first) marked pixel in the original image (-1 without a marker); x2, y2: two_point's
    second (only with two_point); param: the speed or time task's stated time or speed (only with those)."""
    items = evalset.items
    if not items:
        return pd.DataFrame([])
    d, r, lab = (np.array([getattr(it, f) for it in items]) for f in ("dataset", "record", "label"))
    task = np.array([it.task for it in items], dtype=object)
    second = np.array([-1 if it.second is None else it.second for it in items])
    param = np.array([np.nan if it.param is None else it.param for it in items])
    cols = {"task": task, "dataset": np.empty(len(items), dtype=object), "image": np.empty(len(items), dtype=object),
            "x": np.full(len(items), -1.0), "y": np.full(len(items), -1.0),
            "x2": np.full(len(items), -1.0), "y2": np.full(len(items), -1.0), "param": param,
            "gt": np.full(len(items), np.nan)}
    for di, src in enumerate(evalset.sources):
        sel = np.flatnonzero(d == di)
        if not len(sel):
            continue
        cols["dataset"][sel] = src.spec.label
        img = np.asarray(src.image_index(r[sel]))
        paths = {j: str(src.store.image_path(int(j))) for j in np.unique(img)}
        cols["image"][sel] = [paths[j] for j in img]
        for t in np.unique(task[sel]):
            ts = sel[task[sel] == t]
            pos = src.label_positions(r[ts], lab[ts])
            if TASKS[t].markers:
                cols["x"][ts], cols["y"][ts] = src.store.labels("x")[pos], src.store.labels("y")[pos]
            if TASKS[t].markers == 2:
                pos2 = src.label_positions(r[ts], second[ts])
                cols["x2"][ts], cols["y2"][ts] = src.store.labels("x")[pos2], src.store.labels("y")[pos2]
            if t in PER_PIXEL:
                cols["gt"][ts] = _labels_in_use(src, t, r[ts], pos)
            elif not reads_image(t):
                cols["gt"][ts] = store_values(src, t, r[ts], lab[ts], second[ts], param[ts])
    renders = np.flatnonzero([reads_image(t) for t in task])
    for k in renders:
        s = evalset.try_sample(int(k))
        cols["gt"][k] = np.nan if s is None else s.query.value
    frame = pd.DataFrame(cols)
    if not np.isfinite(param).any():
        frame = frame.drop(columns="param")
    if not (second >= 0).any():
        frame = frame.drop(columns=["x2", "y2"])
    return frame


def _labels_in_use(src: Source, task: str, images: np.ndarray | None = None, pos: np.ndarray | None = None):
    """The task's labels at store positions ``pos`` of images in use ``images``; with neither, every label in
    use, image by image. An image without them is the loader's error for its line (label_values)."""
    key = TASKS[task].label_key
    col = src.store.labels(key) if pos is not None else src.label_column(key)
    vals = None if col is None else (col[pos] if pos is not None else col)
    if key != "depth" and (vals is None or np.isnan(vals).any()):  # depth is never missing (validated)
        images = np.arange(len(src)) if images is None else images
        has = src.store.col.get(f"image.has.{key}")
        lacking = np.ones(len(images), bool) if has is None else ~has[np.asarray(src.image_index(images))]
        label_values(src.record(int(images[np.argmax(lacking)])), task)  # raises, naming file:line
    return vals


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
        samples = {k: evalset.try_sample(k) for k in range(start, min(start + batch_size, len(evalset)))}
        ks = [k for k, s in samples.items() if s is not None]  # None: an unusable image, skipped (skip_invalid)
        if not ks:
            continue
        rows = [to_row(samples[k]) for k in ks]
        texts.update(zip(ks, generate_answers(model, processor, [r["prompt"] for r in rows],
                                              [r["images"] for r in rows], max_new_tokens)))
    model.train(was_training)
    return texts


def generate_selection(model, processor, evalset: EvalSet, batch_size: int, max_new_tokens: int, process,
                       progress: bool = True) -> dict[int, str]:
    """Generated text per item of the whole selection, on every rank: each of ``process``'s ranks generates whole
    batches (batch b on rank b mod world size), then the texts are gathered."""
    from accelerate.utils import gather_object

    batches = list(range(0, len(evalset), batch_size))[process.process_index::process.num_processes]
    mine = predict(model, processor, evalset, batches, batch_size, max_new_tokens, progress=progress)
    return dict(gather_object(list(mine.items()))) if process.num_processes > 1 else mine


def scored_frame(frame: pd.DataFrame, evalset: EvalSet, texts: dict[int, str] | None, process) -> pd.DataFrame:
    """A copy of the selection's frame with the parsed answers (none for baselines only), less the items whose
    image could not be used on any rank (data.skip_invalid: counted in evalset.skipped)."""
    from accelerate.utils import gather_object

    frame = frame.copy()
    if texts is not None:
        add_predictions(frame, [texts.get(k, "") for k in range(len(evalset))])
    bad = dict(gather_object(list(evalset.bad.items()))) if process.num_processes > 1 else evalset.bad
    return drop_skipped(frame, evalset, bad)


def add_predictions(frame: pd.DataFrame, texts: list[str]) -> None:
    """The parsed answers (NaN: a failed parse; each row by its task's unit) and the raw texts, in the
    frame's row order."""
    frame["pred"] = np.array([parse_answer(t, task) for t, task in zip(texts, frame["task"])], dtype=float)
    frame["text"] = texts


def drop_skipped(frame: pd.DataFrame, evalset: EvalSet, bad: dict[int, str]) -> pd.DataFrame:
    """The frame without the items whose image could not be used (``bad``: item -> reason, skip_invalid),
    each counted in evalset.skipped under its dataset (metrics.json eval_skipped)."""
    for k, reason in sorted(bad.items()):
        counts = evalset.skipped.setdefault(evalset.sources[evalset.items[k].dataset].spec.label, {})
        counts[reason] = counts.get(reason, 0) + 1
    return frame.drop(index=sorted(bad)).reset_index(drop=True) if bad else frame


def train_medians(sources: list[Source], tasks) -> dict[str, dict[str, float]]:
    """Per task (but brightness, whose labels the records do not hold): the median training label per dataset
    name, plus '*' for all training data pooled. Depth tasks read the stores' label columns; the derived
    tasks (speed, time, two_point) their labels as the train stream draws them (rlkit.labels)."""
    out = {}
    for task in tasks:
        if reads_image(task):
            continue
        per, pooled = {}, []
        for s in sources:
            vals = _labels_in_use(s, task) if task in PER_PIXEL else train_label_sample(s, task)
            if len(vals):
                per[s.spec.label] = float(np.median(vals))
                pooled.append(vals)
        if len(pooled) == 1:  # the same median; no second copy of every label
            per["*"] = next(iter(per.values()))
        else:
            per["*"] = float(np.median(np.concatenate(pooled), overwrite_input=True)) if pooled else float("nan")
        out[task] = per
    return out


def summarize(frame: pd.DataFrame, constant: float, medians: dict[str, dict[str, float]] | None = None) -> dict:
    """{method: {dataset: {metric: value}}} for the model (if it has predictions) and the baselines, over
    all the frame's rows: one task's frame, or several, whose ratio metrics (delta, AbsRel) pool."""
    methods = {}
    if "pred" in frame:
        methods[MODEL] = frame["pred"].to_numpy(dtype=float)
    methods[constant_name(constant)] = np.full(len(frame), constant)
    tasks = frame["task"].to_numpy() if "task" in frame else np.full(len(frame), "depth")  # a frame of one task
    if medians and all(t in medians for t in set(tasks)):
        methods[MEDIAN] = np.array([medians[t].get(d, medians[t]["*"]) for t, d in zip(tasks, frame["dataset"])],
                                   dtype=float)
    result = {}
    for name, pred in methods.items():
        per = {}
        for ds, idx in frame.groupby("dataset", sort=False).indices.items():
            per[ds] = depth_metrics(pred[idx], frame["gt"].to_numpy()[idx], fallback=constant)
        per["avg"] = {m: float(np.mean([per[d][m] for d in per])) for m in METRICS}
        result[name] = per
    return result


def summarize_tasks(frame: pd.DataFrame, constant: float, medians: dict | None = None) -> dict:
    """{task: summarize(that task's rows)}: the per-task results of a multi-task evaluation."""
    return {t: summarize(frame[frame["task"] == t].reset_index(drop=True), constant, medians)
            for t in dict.fromkeys(frame["task"])}


def markdown_table(result: dict, metric: str = "delta1") -> str:
    """One metric in the layout of the paper's Table 1: a row per method, the datasets as columns
    (average last, as summarize orders them), 3 decimals."""
    table = pd.DataFrame({m: {d: cells[metric] for d, cells in per.items()} for m, per in result.items()}).T
    return table.rename_axis(metric).to_markdown(floatfmt=".3f")


def tasks_table(by_task: dict, metric: str = "delta1", per_dataset: bool = False) -> str:
    """One metric in the layout of the paper's Table 3: a row per method, a column per task (its average over
    the datasets); ``per_dataset``: a column per task and dataset ("task: dataset") instead."""
    cells = {}
    for task, result in by_task.items():
        for method, per in result.items():
            for ds, m in per.items():
                if per_dataset or ds == "avg":
                    cells.setdefault(method, {})[f"{task}: {ds}" if per_dataset else task] = m[metric]
    return pd.DataFrame(cells).T.rename_axis(metric).to_markdown(floatfmt=".3f")


def strict_json(obj):
    """The object with every NaN or infinite float as None: metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_results(out_dir: str | Path, frame: pd.DataFrame, result: dict, extra: dict | None = None,
                  by_task: dict | None = None) -> str:
    """predictions.csv, metrics.json ("metrics": all rows per dataset; with several tasks also "tasks": per
    task) and the tables (returned and printed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "predictions.csv", index=False)
    payload = strict_json({"metrics": result, **({"tasks": by_task} if by_task else {}), **(extra or {})})
    if "null" in json.dumps(payload["metrics"]):
        payload["null_metrics"] = "undefined: computed over no samples or from a non-finite value"
    # metrics.json marks a finished run: written last, whole
    atomic_write_text(out_dir / "metrics.json", json.dumps(payload, indent=1, allow_nan=False))
    tables = "\n\n".join(markdown_table(result, m) for m in ("delta1", "abs_rel", "parse_fail"))
    if by_task:
        tables = "\n\n".join(["Per task, averaged over the datasets (the paper's Table 3 layout):"] +
                               [tasks_table(by_task, m) for m in ("delta1", "abs_rel", "parse_fail")] +
                               ["Per task and dataset:", tasks_table(by_task, "delta1", per_dataset=True),
                                "All tasks pooled, per dataset:", tables])
    print(tables)
    return tables


def load_reports(sources) -> dict:
    """Per dataset: lines loaded, skipped (by field) and repaired, for metrics.json."""
    return {s.spec.label: {k: v for k, v in s.report.items() if k != "path"} for s in sources}


def evaluate_run(exp: Experiment, model_path, sources, evalset: EvalSet, model=None, processor=None, extra=None,
                 state=None, api: dict | None = None) -> dict:
    """Evaluate on the experiment's eval selection. Under several processes each generates whole
    batches of the selection (batch b on rank b mod world size) and the main process writes the results.
    A model_path ``openai:MODEL`` is a model behind an OpenAI-compatible server (rlkit.api; ``api``:
    predict_api's options)."""
    import gc

    import torch

    state = state or process_state()
    texts = None
    if is_api_model(model_path):
        from rlkit.api import predict_api

        if state.num_processes > 1:
            raise ConfigError("an API model is evaluated by one process: run it without torchrun / accelerate launch")
        texts, stats = predict_api(model_path, evalset, exp.eval.max_new_tokens, **(api or {}))
        extra = {**(extra or {}), "api": stats}
    elif model_path is not None:
        gc.collect()  # what training left (optimizer state, a sharded model) before the eval model comes
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if model is None:
            from transformers.integrations import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

            if is_deepspeed_zero3_enabled():  # ZeRO-3's config outlives training: it would shard the eval model
                unset_hf_deepspeed_config()
            processor = load_processor(str(model_path), exp.model)
            model = load_model(str(model_path), exp.model, device=state.device)
        if getattr(model, "peft_config", None):
            model = model.merge_and_unload()
        texts = generate_selection(model, processor, evalset, exp.eval.batch_size, exp.eval.max_new_tokens, state,
                                   progress=state.is_main_process)
    frame = scored_frame(selection_frame(evalset), evalset, texts, state)
    tasks = list(exp.prompt.task_weights())
    medians = train_medians(sources.train, tasks) if sources.train else None
    result = summarize(frame, exp.eval.constant, medians)
    by_task = summarize_tasks(frame, exp.eval.constant, medians) if len(tasks) > 1 else None
    payload = {"eval_skipped": evalset.skipped, "eval_samples": len(frame), "eval_data": load_reports(sources.eval),
               "train_data": load_reports(sources.train),
               "world_size": state.num_processes,
               **({} if sources.train else {"median_baseline": "unavailable: no training labels were read"}),
               **(extra or {})}
    if state.is_main_process:
        write_results(exp.output_dir, frame, result, payload, by_task)
    state.wait_for_everyone()
    return {"metrics": result, **({"tasks": by_task} if by_task else {}), **payload}
