"""Ablation sweeps: a base experiment + named arms (field overrides) + seeds, at a scale.

    figure: camera_ambiguity          # which analysis figure the results feed
    experiment: ../sft_synthetic.yaml # the base experiment (relative to this file)
    seeds: [0, 1, 2]
    scales:                           # overrides per scale; `mini` (CPU) is the default
      mini: {}
      paper: {model.name: Qwen/Qwen2.5-VL-3B-Instruct, camera.f_uni: 1000}
    arms:
      direct: {camera.strategy: direct}
      unify_focal: {camera.strategy: unify_focal, x: 1000, series: SFT}

An arm's ``x`` (a number) and ``series`` (a label) place it on a line plot; other keys are
dotted experiment overrides (a mapping value replaces that whole section: use dotted keys to
change single fields). When the experiment starts from a ``base`` stage, the scale's overrides
other than train.* and eval.* also apply to the base, which is trained once per scale into
runs/sweeps/<sweep>/<scale>/_base. Every arm x seed runs into runs/sweeps/<sweep>/<scale>/<arm>/seed<k>;
finished runs (metrics.json) are skipped, so re-running a sweep resumes it. The tidy results
table (one row per arm x seed x eval dataset x method x metric) is results.csv beside them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rlkit.config import ConfigError, _closest, load_experiment, read_yaml

log = logging.getLogger(__name__)
SWEEP_KEYS = {"figure", "experiment", "seeds", "scales", "arms", "description"}
RESULT_COLUMNS = ["sweep", "figure", "scale", "arm", "series", "x", "seed", "dataset", "method", "metric", "value"]


@dataclass
class Sweep:
    name: str
    figure: str
    experiment: Path
    seeds: list[int]
    scales: dict[str, dict]
    arms: dict[str, dict]
    source: str
    description: str = ""
    root: Path = field(default=Path("runs/sweeps"))

    def run_dir(self, scale: str, arm: str, seed: int) -> Path:
        return self.root / self.name / scale / arm / f"seed{seed}"

    def results_path(self, scale: str) -> Path:
        return self.root / self.name / scale / "results.csv"


def is_sweep_file(path: str | Path) -> bool:
    try:
        return "arms" in read_yaml(Path(path))
    except ConfigError:
        return False


def load_sweep(path: str | Path, root: str | Path = "runs/sweeps") -> Sweep:
    path = Path(path)
    data = read_yaml(path)
    for key in data:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{path}: unknown sweep key '{key}'{_closest(key, SWEEP_KEYS)}")
    for key in ("figure", "experiment", "arms"):
        if key not in data:
            raise ConfigError(f"{path}: sweep needs '{key}'")
    arms = data["arms"]
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"{path}: arms must be a non-empty mapping of name -> overrides")
    for arm, over in arms.items():
        if not isinstance(over, dict):
            raise ConfigError(f"{path}: arm '{arm}' must be a mapping of dotted overrides")
    scales = data.get("scales") or {"mini": {}}
    sweep = Sweep(path.stem, data["figure"], (path.parent / data["experiment"]), list(data.get("seeds", [0])),
                  scales, arms, str(path), data.get("description", ""), Path(root))
    for scale in scales:  # every arm must make a valid experiment, checked before anything runs
        for arm in arms:
            arm_experiment(sweep, scale, arm, sweep.seeds[0])
    return sweep


def _overrides(d: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items() if k not in ("x", "series")]


def arm_experiment(sweep: Sweep, scale: str, arm: str, seed: int):
    if scale not in sweep.scales:
        raise ConfigError(f"{sweep.source}: unknown scale '{scale}'{_closest(scale, sweep.scales)}")
    scale_over = sweep.scales[scale] or {}
    try:
        if load_experiment(sweep.experiment).base:
            # the base stage lives in the same world (model, data, camera, prompt) at this scale,
            # keeps its own training length, and is shared by every arm and seed
            base_over = _overrides({k: v for k, v in scale_over.items() if not k.startswith(("train.", "eval."))})
            base_over.append(f"output_dir={sweep.root / sweep.name / scale / '_base'}")
            own = {k: v for k, v in scale_over.items() if not k.startswith("model.")}
            over = _overrides(own) + [f"base_overrides={json.dumps(base_over)}"]
        else:
            over = _overrides(scale_over)
        over += _overrides(sweep.arms[arm]) + [f"seed={seed}", f"output_dir={sweep.run_dir(scale, arm, seed)}"]
        return load_experiment(sweep.experiment, over)
    except ConfigError as e:
        raise ConfigError(f"{sweep.source}: arm '{arm}' (scale {scale}): {e}") from None


def result_rows(sweep: Sweep, scale: str, arm: str, seed: int, metrics: dict) -> list[dict]:
    spec = sweep.arms[arm]
    rows = []
    for method, per in metrics["metrics"].items():
        for dataset, values in per.items():
            for metric, value in values.items():
                rows.append({"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": arm,
                             "series": spec.get("series", arm), "x": spec.get("x"), "seed": seed,
                             "dataset": dataset, "method": method, "metric": metric, "value": value})
    if "train_seconds" in metrics and "train_samples" in metrics:
        rows.append({"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": arm,
                     "series": spec.get("series", arm), "x": spec.get("x"), "seed": seed, "dataset": "all",
                     "method": "model", "metric": "seconds_per_sample",
                     "value": metrics["train_seconds"] / max(1, metrics["train_samples"])})
    return rows


def collect(sweep: Sweep, scale: str) -> pd.DataFrame:
    """The results table of every finished run of the sweep at a scale (unfinished ones are absent)."""
    rows = []
    for arm in sweep.arms:
        for seed in sweep.seeds:
            m = sweep.run_dir(scale, arm, seed) / "metrics.json"
            if m.exists():
                rows += result_rows(sweep, scale, arm, seed, json.loads(m.read_text()))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def write_results(sweep: Sweep, scale: str) -> Path:
    table = collect(sweep, scale)
    path = sweep.results_path(scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def run_sweep(sweep: Sweep, scale: str = "mini", runner=None) -> Path:
    """Run every arm x seed without a finished result, then write the results table."""
    from tqdm import tqdm

    if runner is None:
        from rlkit.run import run_experiment as runner
    jobs = [(arm, seed) for seed in sweep.seeds for arm in sweep.arms]
    for arm, seed in tqdm(jobs, desc=f"sweep {sweep.name} ({scale})"):
        if (sweep.run_dir(scale, arm, seed) / "metrics.json").exists():
            continue
        log.info("sweep %s: arm %s seed %d", sweep.name, arm, seed)
        runner(arm_experiment(sweep, scale, arm, seed))
        write_results(sweep, scale)  # after each run, so a killed sweep still has its table
    path = write_results(sweep, scale)
    log.info("results: %s", path)
    return path
