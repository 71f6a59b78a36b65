"""One table across models, in the layout of the DepthLM paper's Table 1.

    python analysis/table.py runs/sft_synthetic runs/grpo_negl1 runs/sft_synthetic/eval-openai-gpt-4o
    python analysis/table.py RUN_OR_EVAL_DIR ... [--metric delta1] [--names A B ...] [--out analysis/table1]

Reads each folder's metrics.json (a run dir, an ``eval`` folder, or the metrics.json itself) and
writes one table: the eval datasets as columns (in order of first appearance), their average last;
one row per folder that evaluated a model (row name: the folder's name, with its parent's name
when two folders share a name, or ``--names``), then the no-model baselines (the constant answer,
the median training label) once, from the first folder that has each cell. A dataset a model was not
evaluated on is an empty cell, and so is the average of a row with an empty cell (an average over
fewer datasets is not comparable). Markdown goes to stdout, and with ``--out PREFIX`` to PREFIX.md
(3 decimals) and PREFIX.csv (full precision).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from rlkit.evaluate import MEDIAN, MODEL, is_constant

AVG = "avg"


def metrics_path(arg: str | Path) -> Path:
    p = Path(arg)
    return p if p.is_file() else p / "metrics.json"


def load(arg: str | Path) -> dict:
    """The {method: {dataset: {metric: value}}} of a folder's metrics.json."""
    path = metrics_path(arg)
    if not path.is_file():
        raise SystemExit(f"{arg}: no metrics.json (not a finished run or eval folder)")
    try:
        return json.loads(path.read_text())["metrics"]
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a metrics.json written by rlkit ({e})") from None


def default_names(args: list[str]) -> list[str]:
    """Each folder's name; the parent's name in front where two folders would get the same name."""
    dirs = [metrics_path(a).parent.resolve() for a in args]
    names = [d.name for d in dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]


def _value(cell) -> float | None:
    return float(cell) if isinstance(cell, (int, float)) and math.isfinite(cell) else None


def is_baseline(method: str) -> bool:
    return is_constant(method) or method == MEDIAN


def build(runs: list[tuple[str, dict]], metric: str = "delta1") -> pd.DataFrame:
    """The table: one row per run's model, then each baseline once; columns the datasets, then avg."""
    if not any(isinstance(cell, dict) and metric in cell for _, result in runs for per in result.values()
               for cell in per.values()):
        raise SystemExit(f"no metric {metric!r} in any metrics.json (delta1, abs_rel, ...)")
    datasets: list[str] = []
    for _, result in runs:
        for per in result.values():
            datasets += [d for d in per if d != AVG and d not in datasets]
    rows: dict[str, dict[str, float | None]] = {}
    for name, result in runs:
        if MODEL in result:
            if name in rows:
                raise SystemExit(f"two rows named {name!r}: pass --names")
            rows[name] = {d: _value(result[MODEL].get(d, {}).get(metric)) for d in datasets}
    baselines: dict[str, dict[str, float | None]] = {}
    for run_name, result in runs:  # the first folder with the cell gives it; later disagreements are noted
        for method in filter(is_baseline, result):
            row = baselines.setdefault(method, {d: None for d in datasets})
            for d in datasets:
                v = _value(result[method].get(d, {}).get(metric))
                if row[d] is None:
                    row[d] = v
                elif v is not None and abs(v - row[d]) > 1e-12:
                    print(f"note: {run_name}: {method} {metric} on {d} is {v:.4g}, not {row[d]:.4g} as in an "
                          "earlier folder: its eval pixels differ, so its row is not comparable", file=sys.stderr)
    for method in sorted(baselines, key=lambda m: m == MEDIAN):  # constant(s) first, then the median
        if method in rows:
            raise SystemExit(f"a row is named {method!r} like a baseline: pass --names")
        rows[method] = baselines[method]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=datasets, dtype=float)
    table[AVG] = table[datasets].mean(axis=1, skipna=False) if datasets else float("nan")
    table.index.name = metric
    return table


def markdown(table: pd.DataFrame) -> str:
    """3 decimals; a missing cell stays empty."""
    return table.astype(object).where(table.notna(), None).to_markdown(floatfmt=".3f", missingval="") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="run or eval folders (or their metrics.json files)")
    p.add_argument("--metric", default="delta1", help="delta1, delta2, delta3, abs_rel, rmse, log10 or parse_fail")
    p.add_argument("--names", nargs="+", help="row names, one per folder (default: the folders' names)")
    p.add_argument("--out", help="write PREFIX.md and PREFIX.csv")
    a = p.parse_args(argv)
    if a.names is not None and len(a.names) != len(a.dirs):
        p.error(f"--names: {len(a.names)} names for {len(a.dirs)} folders")
    names = a.names or default_names(a.dirs)
    table = build([(n, load(d)) for n, d in zip(names, a.dirs)], a.metric)
    text = markdown(table)
    print(text, end="")
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + ".md").write_text(text)
        table.to_csv(out.with_name(out.name + ".csv"))
        print(f"wrote {out}.md and {out}.csv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
