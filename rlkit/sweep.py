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

An arm's ``x`` (a number, or ``train_samples``: the samples the run actually trained on, counted
over batch, accumulation, processes and GRPO groups) and ``series`` (a label; default: the sweep's
name, so arms without one form a single line) place it on a line plot; other keys are
dotted experiment overrides (a mapping value replaces that whole section: use dotted keys to
change single fields). When the experiment starts from a ``base`` stage, the scale's overrides
other than train.* and eval.* also apply to the base, which is trained once per scale into
runs/sweeps/<sweep>/<scale>/_base. Every arm x seed runs into runs/sweeps/<sweep>/<scale>/<arm>/seed<k>;
finished runs (metrics.json) are skipped, so re-running a sweep resumes it. The tidy results
table (one row per arm x seed x eval dataset x method x metric; a base stage's own eval appears as
method ``base stage``) is results.csv beside them; runs with a learning curve (eval.during_training) add
curves.csv (one row per arm x seed x curve point x eval dataset x metric).
``--arms``/``--seeds`` run a subset (e.g. one arm per cluster node); ``--jobs N`` runs N arm x seed
runs side by side on one machine (on a small CPU, two 1-thread runs train ~1.4x faster in total
than one 2-thread run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlkit.config import ConfigError, _closest, load_experiment, read_yaml
from rlkit.evaluate import MODEL
from rlkit.io import atomic_write_text
from rlkit.rundir import check_run_dir

log = logging.getLogger(__name__)
SWEEP_KEYS = {"figure", "experiment", "seeds", "scales", "arms"}
BASE_STAGE = "base stage"  # the method name of a base stage's own eval in results.csv
EVAL_SELECTION = "eval selection"  # results.csv rows counting the scored pixels and the labels left out
SWEEP_TIME = "sweep wall time"  # results.csv rows: the minutes the whole sweep took, when it ran from scratch
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # arm and scale names: each names a folder under the sweeps dir
RESULT_COLUMNS = ["sweep", "figure", "scale", "arm", "series", "x", "seed", "dataset", "method", "metric", "value",
                  "commit", "command"]


class SweepFailed(RuntimeError):
    """Some runs of a sweep exited with an error (the others finished and are in the table)."""


@dataclass
class Sweep:
    name: str
    figure: str
    experiment: Path
    seeds: list[int]
    scales: dict[str, dict]
    arms: dict[str, dict]
    source: str
    root: Path = field(default=Path("runs/sweeps"))
    shared_eval: dict[str, list[str]] = field(default_factory=dict, repr=False)  # per scale: the override, once

    def run_dir(self, scale: str, arm: str, seed: int) -> Path:
        return self.root / self.name / scale / arm / f"seed{seed}"

    def results_path(self, scale: str) -> Path:
        return self.root / self.name / scale / "results.csv"

    def time_path(self, scale: str) -> Path:
        return self.root / self.name / scale / "sweep_time.json"


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
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or \
            not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of whole numbers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):  # each seed is a run folder and a row set: twice would count it twice
        raise ConfigError(f"{path}: seeds lists {sorted({k for k in seeds if seeds.count(k) > 1})} more than once")
    for arm, over in arms.items():
        if not isinstance(arm, str) or not re.fullmatch(NAME, arm):
            raise ConfigError(f"{path}: arm name {arm!r} must be letters, digits, '_', '-' or '.' (it names a folder "
                              "under the sweeps dir)")
        if not isinstance(over, dict):
            raise ConfigError(f"{path}: arm '{arm}' must be a mapping of dotted overrides")
        x = over.get("x")
        if not (x is None or x == "train_samples" or (isinstance(x, (int, float)) and not isinstance(x, bool))):
            raise ConfigError(f"{path}: arm '{arm}': x must be a number or 'train_samples', got {x!r}")
    scales = data.get("scales") or {"mini": {}}
    if not isinstance(scales, dict):
        raise ConfigError(f"{path}: scales must be a mapping of scale name -> overrides, got {scales!r}")
    for name, over in scales.items():
        if not isinstance(name, str) or not re.fullmatch(NAME, name):
            raise ConfigError(f"{path}: scale name {name!r} must be letters, digits, '_', '-' or '.' (it names a "
                              "folder under the sweeps dir)")
        if over is not None and not isinstance(over, dict):
            raise ConfigError(f"{path}: scale '{name}' must be a mapping of dotted overrides")
    sweep = Sweep(path.stem, data["figure"], (path.parent / data["experiment"]), list(seeds),
                  scales, arms, str(path), Path(root))
    for scale in scales:  # every arm must make a valid experiment, checked before anything runs
        for arm in arms:
            arm_experiment(sweep, scale, arm, sweep.seeds[0], shared=False)
        arm_experiment(sweep, scale, next(iter(arms)), sweep.seeds[0])  # and with the shared eval selection
    return sweep


def _overrides(d: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items() if k not in ("x", "series")]


def _sections_varied(sweep: Sweep) -> list[str]:
    """The camera and prompt sections some arm changes: where the arms could draw different eval pixels. None when
    an arm changes the eval data (then the arms do not share pixels at all)."""
    keys = [k for over in sweep.arms.values() for k in over]
    if any(k in ("data", "data.eval", "data.synth") or k.startswith(("data.eval.", "data.synth.")) for k in keys):
        return []
    return [section for section in ("camera", "prompt") if any(k.split(".")[0] == section for k in keys)]


def shared_eval_override(sweep: Sweep, scale: str) -> list[str]:
    """``eval.shared_with``: every arm's camera and prompt sections where the arms differ, the same list for every
    arm, so that all arms are scored on one eval selection (the pixels every arm can draw)."""
    if scale not in sweep.shared_eval:
        sections, arms = _sections_varied(sweep), []
        for arm in sweep.arms if sections else ():
            exp = arm_experiment(sweep, scale, arm, sweep.seeds[0], shared=False)
            arms.append({s: dataclasses.asdict(getattr(exp, s)) for s in sections})
        sweep.shared_eval[scale] = [f"eval.shared_with={json.dumps(arms)}"] if arms else []
    return sweep.shared_eval[scale]


def arm_experiment(sweep: Sweep, scale: str, arm: str, seed: int, shared: bool = True):
    """The experiment of one arm and seed at a scale (``shared``: with the sweep's one eval selection)."""
    if scale not in sweep.scales:
        raise ConfigError(f"{sweep.source}: unknown scale '{scale}'{_closest(scale, sweep.scales)}")
    scale_over = sweep.scales[scale] or {}
    try:
        if load_experiment(sweep.experiment, _overrides(scale_over)).base:  # a scale may drop it (base: null)
            # the base stage lives in the same world (model, data, camera, prompt) at this scale,
            # keeps its own training length, and is shared by every arm and seed
            base_over = _overrides({k: v for k, v in scale_over.items() if not k.startswith(("train.", "eval."))})
            base_over.append(f"output_dir={sweep.root / sweep.name / scale / '_base'}")
            over = _overrides(scale_over) + [f"base_overrides={json.dumps(base_over)}"]
        else:
            over = _overrides(scale_over)
        over += _overrides(sweep.arms[arm]) + [f"seed={seed}", f"output_dir={sweep.run_dir(scale, arm, seed)}"]
        return load_experiment(sweep.experiment, over + (shared_eval_override(sweep, scale) if shared else []))
    except ConfigError as e:
        raise ConfigError(f"{sweep.source}: arm '{arm}' (scale {scale}): {e}") from None


def sweep_command(sweep: Sweep, scale: str) -> str:
    """The command that (re)makes a sweep's table: finished runs are kept, missing ones trained."""
    shipped = Path(sweep.source).resolve().parent == (Path(__file__).resolve().parent.parent / "experiments" / "ablations")
    words = ["./run.sh", "sweeps", "--only", sweep.name] if shipped else ["./run.sh", str(sweep.source)]
    if scale != "mini":
        words += ["--scale", scale]
    if Path(sweep.root) != Path("runs/sweeps"):
        words += ["--sweeps-dir", str(sweep.root)]
    return " ".join(words)


def run_commit(metrics: dict) -> str | None:
    """The kit's commit a run trained with (metrics.json ``code``), '+dirty' when its tracked files differed."""
    code = metrics.get("code") or {}
    if not code.get("commit"):
        return None
    return code["commit"] + ("+dirty" if code.get("dirty") else "")


def result_rows(sweep: Sweep, scale: str, arm: str, seed: int, metrics: dict) -> list[dict]:
    spec = sweep.arms[arm]
    x = metrics.get("train_samples") if spec.get("x") == "train_samples" else spec.get("x")
    series = spec.get("series", sweep.name)  # arms without one form a single line
    code = {"commit": run_commit(metrics), "command": sweep_command(sweep, scale)}
    rows = []
    for method, per in metrics["metrics"].items():
        for dataset, values in per.items():
            for metric, value in values.items():
                rows.append({"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": arm,
                             "series": series, "x": x, "seed": seed,
                             "dataset": dataset, "method": method, "metric": metric, "value": value, **code})
    if "train_seconds" in metrics and "train_samples" in metrics:
        rows.append({"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": arm,
                     "series": series, "x": x, "seed": seed, "dataset": "all",
                     "method": MODEL, "metric": "seconds_per_sample",
                     "value": metrics["train_seconds"] / max(1, metrics["train_samples"]), **code})
    # the eval selection: how many pixels were scored, and per dataset the labels left out and why (with a shared
    # selection, 'unusable_in_another_arm' counts those only another arm could not draw)
    selection = [("all", "pixels", metrics["eval_samples"])] if "eval_samples" in metrics else []
    selection += [(dataset, f"skipped: {reason}", n) for dataset, reasons in (metrics.get("eval_skipped") or {}).items()
                  for reason, n in reasons.items()]
    for dataset, metric, value in selection:
        rows.append({"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": arm, "series": series,
                     "x": x, "seed": seed, "dataset": dataset, "method": EVAL_SELECTION, "metric": metric,
                     "value": value, **code})
    return rows


def base_rows(sweep: Sweep, scale: str) -> list[dict]:
    """The shared base stage's own eval as method BASE_STAGE (arm '_base'): where training started."""
    path = sweep.root / sweep.name / scale / "_base" / "metrics.json"
    if not path.exists():
        return []
    metrics = json.loads(path.read_text())
    code = {"commit": run_commit(metrics), "command": sweep_command(sweep, scale)}
    return [{"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": "_base", "series": "_base",
             "x": 0, "seed": None, "dataset": dataset, "method": BASE_STAGE, "metric": metric, "value": value, **code}
            for dataset, values in metrics["metrics"][MODEL].items() for metric, value in values.items()]


CURVE_COLUMNS = ["sweep", "figure", "scale", "arm", "series", "seed", "step", "samples", "train_seconds", "dataset",
                 "metric", "value"]


def curve_rows(sweep: Sweep, scale: str, arm: str, seed: int, metrics: dict) -> list[dict]:
    """The run's learning curve (eval.during_training), one row per point x eval dataset x metric."""
    series = sweep.arms[arm].get("series", sweep.name)
    return [{"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": arm, "series": series, "seed": seed,
             "step": p["step"], "samples": p["samples"], "train_seconds": p["train_seconds"],
             "dataset": key.split("/", 1)[1], "metric": key.split("/", 1)[0], "value": value}
            for p in metrics.get("curve") or [] for key, value in p.items() if "/" in key]


def finished_runs(sweep: Sweep, scale: str):
    """(arm, seed, metrics.json) of every finished run of the sweep at a scale (unfinished ones are absent)."""
    for arm in sweep.arms:
        for seed in sweep.seeds:
            m = sweep.run_dir(scale, arm, seed) / "metrics.json"
            if m.exists():
                yield arm, seed, json.loads(m.read_text())


PIXEL_COLUMNS = ["figure", "scale", "arm", "seed", "task", "dataset", "image", "x", "y", "gt", "pred"]


def pixel_rows(sweep: Sweep, scale: str, arm: str, seed: int) -> pd.DataFrame:
    """The run's final evaluation pixel by pixel (its predictions.csv: truth and parsed answer), for paired
    comparisons over the pixels that every arm scored."""
    path = sweep.run_dir(scale, arm, seed) / "predictions.csv"
    if not path.exists():
        return pd.DataFrame(columns=PIXEL_COLUMNS)
    t = pd.read_csv(path, usecols=lambda c: c in PIXEL_COLUMNS)
    if "pred" not in t:  # an evaluation of the baselines only
        return pd.DataFrame(columns=PIXEL_COLUMNS)
    if "task" not in t:
        t["task"] = "depth"
    # images named relative to the working folder where they lie under it (links kept as they are named): the
    # committed rows hold no machine's paths
    here = os.path.abspath(os.getcwd())
    images = [os.path.abspath(i) for i in t["image"].astype(str)]
    t["image"] = [Path(os.path.relpath(i, here)).as_posix() if i.startswith(here + os.sep) else i for i in images]
    t = t.assign(figure=sweep.figure, scale=scale, arm=arm, seed=seed)
    return t[PIXEL_COLUMNS]


def collect_pixels(sweep: Sweep, scale: str) -> pd.DataFrame:
    frames = [pixel_rows(sweep, scale, arm, seed) for arm, seed, _ in finished_runs(sweep, scale)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PIXEL_COLUMNS)


def collect_curves(sweep: Sweep, scale: str) -> pd.DataFrame:
    rows = [r for arm, seed, m in finished_runs(sweep, scale) for r in curve_rows(sweep, scale, arm, seed, m)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def collect(sweep: Sweep, scale: str) -> pd.DataFrame:
    """The results table of every finished run of the sweep at a scale, plus the base stage's eval when the
    sweep has one."""
    rows = base_rows(sweep, scale) + time_rows(sweep, scale)
    rows += [r for arm, seed, m in finished_runs(sweep, scale) for r in result_rows(sweep, scale, arm, seed, m)]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def time_rows(sweep: Sweep, scale: str) -> list[dict]:
    """The sweep's wall time from scratch (sweep_time.json, written by run_sweep) as method SWEEP_TIME rows."""
    path = sweep.time_path(scale)
    if not path.exists():
        return []
    t = json.loads(path.read_text())
    return [{"sweep": sweep.name, "figure": sweep.figure, "scale": scale, "arm": "_sweep", "series": "_sweep",
             "x": None, "seed": None, "dataset": "all", "method": SWEEP_TIME, "metric": key, "value": t[key],
             "commit": t.get("commit"), "command": sweep_command(sweep, scale)}
            for key in ("minutes", "jobs", "cpus", "scenes_rendered") if key in t]


def write_results(sweep: Sweep, scale: str) -> Path:
    """results.csv; beside it pixels.csv (every run's eval pixel by pixel) and curves.csv when runs have
    learning curves (eval.during_training)."""
    table = collect(sweep, scale)
    path = sweep.results_path(scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv(index=False))
    for name, extra in (("pixels.csv", collect_pixels(sweep, scale)), ("curves.csv", collect_curves(sweep, scale))):
        if len(extra):
            atomic_write_text(path.with_name(name), extra.to_csv(index=False))
        else:  # none of the runs has them now: an older file would describe other runs
            path.with_name(name).unlink(missing_ok=True)
    return path


def pending_jobs(sweep: Sweep, scale: str, arms=None, seeds=None) -> list[tuple[str, int]]:
    """The (arm, seed) pairs without a finished result, optionally restricted to some arms/seeds."""
    for arm in arms or ():
        if arm not in sweep.arms:
            raise ConfigError(f"{sweep.source}: unknown arm '{arm}'{_closest(arm, sweep.arms)}")
    jobs = [(arm, seed) for seed in (seeds if seeds is not None else sweep.seeds)
            for arm in (arms or sweep.arms)]
    check_not_stale(sweep, scale)
    return [(arm, seed) for arm, seed in jobs if not (sweep.run_dir(scale, arm, seed) / "metrics.json").exists()
            or _reevaluate(sweep, scale, arm, seed)]


def _reevaluate(sweep: Sweep, scale: str, arm: str, seed: int) -> bool:
    """Whether a finished run needs only its evaluation again; an error if it was trained with other settings."""
    run = sweep.run_dir(scale, arm, seed)
    try:
        return check_run_dir(arm_experiment(sweep, scale, arm, seed), run)
    except ConfigError:
        raise ConfigError(f"{sweep.source}: arm '{arm}' seed {seed}: {run} was trained with other settings than the "
                          f"sweep's now; delete {run} to run it again") from None


def check_not_stale(sweep: Sweep, scale: str) -> None:
    """Finished runs are reused only while they are what the sweep would run now: the same training settings, from
    the same base stage (a run's config.yaml names its base file, not what that file trained)."""
    from rlkit.run import base_experiment

    base_dir = sweep.root / sweep.name / scale / "_base"
    try:
        exp = arm_experiment(sweep, scale, next(iter(sweep.arms)), sweep.seeds[0])
        if exp.base and (base_dir / "config.yaml").exists():
            check_run_dir(base_experiment(exp), base_dir)
    except ConfigError as e:
        raise ConfigError(f"{sweep.source}: the base stage changed since its runs were made ({e}); delete "
                          f"{sweep.root / sweep.name / scale} to run the sweep again") from None


def prepare(sweep: Sweep, scale: str, jobs) -> None:
    """What the runs share, made once before they start side by side: rendered scenes, the
    tiny model's cache and the base stage (two processes must never build these at once)."""
    from rlkit.run import render_scenes, ensure_model, train_base_stage

    for arm, seed in jobs:
        exp = arm_experiment(sweep, scale, arm, seed)
        render_scenes(exp)
        train_base_stage(exp)
        ensure_model(exp)


def _cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_side_by_side(sweep: Sweep, scale: str, jobs, n_jobs: int) -> None:
    """Each arm x seed in its own process (``rlkit run SWEEP --arms A --seeds K``), n_jobs at a
    time, each with an equal share of the CPU threads; its output goes to RUN_DIR/sweep.log."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm import tqdm

    prepare(sweep, scale, jobs)
    threads = str(max(1, _cpus() // n_jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def run_one(arm: str, seed: int) -> int:
        log_path = sweep.run_dir(scale, arm, seed) / "sweep.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "rlkit", "run", sweep.source, "--scale", scale,
               "--sweeps-dir", str(sweep.root), "--arms", arm, "--seeds", str(seed)]
        log.info("sweep %s: arm %s seed %d -> %s", sweep.name, arm, seed, log_path)
        with open(log_path, "w") as f:
            return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode

    failed = set()
    pool = ThreadPoolExecutor(max_workers=n_jobs)
    try:
        futures = {pool.submit(run_one, arm, seed): (arm, seed) for arm, seed in jobs}
        for future in tqdm(as_completed(futures), total=len(jobs), desc=f"sweep {sweep.name} ({scale}, {n_jobs} jobs)"):
            arm, seed = futures[future]
            if future.result():
                failed.add((arm, seed))
                log.error("sweep %s: arm %s seed %d failed (exit %d); see %s", sweep.name, arm, seed,
                          future.result(), sweep.run_dir(scale, arm, seed) / "sweep.log")
            write_results(sweep, scale)  # after each run, here in one thread, so a killed sweep still has its table
    finally:
        pool.shutdown(cancel_futures=True)  # interrupted (Ctrl-C): start no further run
    if failed:
        names = ", ".join(f"{a} seed {k}" for a, k in jobs if (a, k) in failed)
        raise SweepFailed(f"sweep {sweep.name}: {len(failed)} run(s) failed: {names}; "
                           "their sweep.log files say why; re-running the sweep retries only those")


def scenes_on_disk(sweep: Sweep, scale: str) -> bool:
    """Whether every procedural scene file the sweep's arms train and evaluate on exists already."""
    synths = [exp.data.synth for exp in (arm_experiment(sweep, scale, arm, sweep.seeds[0], shared=False)
                                          for arm in sweep.arms) if exp.data.synth is not None]
    return all(s.jsonl(family, split).exists() for s in synths for family in s.families for split, _ in s.splits())


def run_sweep(sweep: Sweep, scale: str = "mini", runner=None, arms=None, seeds=None, jobs: int = 1) -> Path:
    """Run every arm x seed without a finished result (or only the given arms/seeds), then write
    the results table. jobs > 1 runs that many side by side in separate processes."""
    from tqdm import tqdm

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    # from scratch: nothing of this sweep at this scale exists yet, and every arm and seed runs now
    from_scratch = arms is None and seeds is None and not (sweep.root / sweep.name / scale).exists()
    start, code, scenes = time.monotonic(), None, None
    if from_scratch:
        from rlkit.rundir import code_version

        code = run_commit({"code": code_version()})
        scenes = scenes_on_disk(sweep, scale)
    todo = pending_jobs(sweep, scale, arms, seeds)
    if todo and not from_scratch:  # runs are added or redone: the measured time no longer describes the table
        sweep.time_path(scale).unlink(missing_ok=True)
    side_by_side = jobs > 1 and len(todo) > 1
    if side_by_side:
        _run_side_by_side(sweep, scale, todo, jobs)
    else:
        if runner is None:
            from rlkit.run import run_experiment as runner
        for arm, seed in tqdm(todo, desc=f"sweep {sweep.name} ({scale})"):
            log.info("sweep %s: arm %s seed %d", sweep.name, arm, seed)
            runner(arm_experiment(sweep, scale, arm, seed))
            write_results(sweep, scale)  # after each run, so a killed sweep still has its table
    if from_scratch:  # the budget a figure's md reports: base stage, every run and its evaluation
        atomic_write_text(sweep.time_path(scale), json.dumps({
            "minutes": round((time.monotonic() - start) / 60, 1), "jobs": jobs if side_by_side else 1, "cpus": _cpus(),
            "scenes_rendered": int(not scenes), "commit": code}, indent=1))
    path = write_results(sweep, scale)
    log.info("results: %s", path)
    return path


def paired_winner(df: pd.DataFrame, metric: str = "delta1") -> tuple[str, pd.DataFrame, bool]:
    """(best arm, its seed-paired difference to every other arm, whether it leads each by more than 2 SE)."""
    d = df[(df["method"] == MODEL) & (df["metric"] == metric) & (df["dataset"] == "avg")]
    per_seed = d.pivot_table(index="seed", columns="arm", values="value", aggfunc="mean")
    if per_seed.shape[1] < 2:
        raise ConfigError(f"need results of 2 or more arms to pick a winner, got {list(per_seed.columns)}")
    best = per_seed.mean().idxmax()
    rows = []
    for arm in per_seed:
        if arm == best:
            continue
        diff = (per_seed[best] - per_seed[arm]).dropna()
        se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        rows.append({"arm": arm, "difference": float(diff.mean()), "se": se, "seeds": len(diff)})
    table = pd.DataFrame(rows)
    clear = bool(((table["seeds"] >= 2) & (table["difference"] > 0) & (table["difference"] > 2 * table["se"])).all())
    return best, table, clear


def sweep_files(folder: str | Path = "experiments/ablations") -> list[Path]:
    """Every sweep file of a folder (files starting with '_' are shared parts, not sweeps)."""
    return sorted(f for f in Path(folder).glob("*.yaml") if not f.name.startswith("_") and is_sweep_file(f))


def run_all(scale: str = "mini", jobs: int = 1, only=None, folder: str | Path = "experiments/ablations",
            root: str | Path = "runs/sweeps", figures: str | Path = "analysis/figures") -> list[str]:
    """Every sweep of the folder (finished runs are skipped), then every figure drawn again; returns one reading per
    figure: the arm with the best mean held-out δ1 and whether it leads every other arm by more than 2 SE."""
    import subprocess
    import sys
    import time

    files = [f for f in sweep_files(folder) if not only or f.stem in only]
    if only and len(files) != len(set(only)):
        raise ConfigError(f"--only {sorted(set(only) - {f.stem for f in files})}: no such sweep in {folder}; "
                          f"choose from {[f.stem for f in sweep_files(folder)]}")
    sweeps = [load_sweep(f, root) for f in files]  # every file checked before anything runs
    start, readings = time.monotonic(), []
    for sweep in sweeps:
        t = time.monotonic()
        run_sweep(sweep, scale, jobs=jobs)
        log.info("sweep %s: %.1f min", sweep.name, (time.monotonic() - t) / 60)
    for sweep in sweeps:
        rows = collect(sweep, scale)
        try:
            best, table, clear = paired_winner(rows)
        except ConfigError as e:
            readings.append(f"{sweep.figure}: {e}")
            continue
        lead = ", ".join(f"{r.arm} {r.difference:+.3f} ± {r.se:.3f}" for r in table.itertuples())
        verdict = "ahead of every arm by > 2 SE" if clear else "not > 2 SE ahead of every arm"
        readings.append(f"{sweep.figure}: best {best} ({verdict}; lead over {lead})")
    plot = Path(__file__).resolve().parent.parent / "analysis" / "plot_ablation.py"  # beside the package, in a checkout
    subprocess.run([sys.executable, str(plot), "--runs", str(root), "--scale", scale, "--out", str(figures)], check=True)
    print(f"{len(sweeps)} sweeps in {(time.monotonic() - start) / 60:.1f} min")
    for line in readings:
        print(line)
    return readings

