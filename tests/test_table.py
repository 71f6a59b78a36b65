"""analysis/table.py: one Table 1 across models, from hand-written metrics.json files."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parent.parent
_spec = importlib.util.spec_from_file_location("analysis_table", ROOT / "analysis" / "table.py")
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)


def _cells(delta1: dict, abs_rel: dict | None = None) -> dict:
    per = {d: {"delta1": v, "abs_rel": (abs_rel or {}).get(d, 1.0)} for d, v in delta1.items()}
    per["avg"] = {"delta1": 0.123456, "abs_rel": 9.9}  # the file's own average: never used, recomputed
    return per


SFT = {"model": _cells({"indoor": 0.5, "outdoor": 0.25}),
       "constant 2 m": _cells({"indoor": 0.1, "outdoor": 0.2}),
       "median (train labels)": _cells({"indoor": 0.3, "outdoor": 0.4})}
GRPO = {"model": _cells({"indoor": 0.75, "kitti": 0.6}),
        "constant 2 m": _cells({"indoor": 0.1, "kitti": 0.05}),
        "median (train labels)": _cells({"indoor": 0.3, "kitti": 0.35})}
API = {"model": _cells({"indoor": 0.9, "outdoor": 0.8, "kitti": 0.7},
                       abs_rel={"indoor": 0.2, "outdoor": None, "kitti": 0.4}),  # None: a null in metrics.json
       "constant 2 m": _cells({"indoor": 0.15, "outdoor": 0.2, "kitti": 0.05},  # other eval pixels: noted
                              abs_rel={"indoor": 1.0, "outdoor": 2.0, "kitti": 3.0}),
       "median (train labels)": _cells({"indoor": 0.3, "outdoor": 0.4, "kitti": 0.35})}

EXPECTED_MD = """\
| delta1                |   indoor |   outdoor |   kitti |   avg |
|:----------------------|---------:|----------:|--------:|------:|
| sft                   |    0.500 |     0.250 |         |       |
| grpo/eval             |    0.750 |           |   0.600 |       |
| api/eval              |    0.900 |     0.800 |   0.700 | 0.800 |
| constant 2 m          |    0.100 |     0.200 |   0.050 | 0.117 |
| median (train labels) |    0.300 |     0.400 |   0.350 | 0.350 |
"""


def _write(root: Path) -> list[Path]:
    dirs = [root / "runs" / "sft", root / "runs" / "grpo" / "eval", root / "runs" / "api" / "eval"]
    for d, m in zip(dirs, (SFT, GRPO, API)):
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"metrics": m, "eval_samples": 3}))
    return dirs


def test_table_cells_by_hand(tmp_path):
    dirs = _write(tmp_path)
    assert table.default_names([str(d) for d in dirs]) == ["sft", "grpo/eval", "api/eval"]
    t = table.build([("sft", SFT), ("grpo/eval", GRPO), ("api/eval", API)])
    assert list(t.columns) == ["indoor", "outdoor", "kitti", "avg"]
    assert list(t.index) == ["sft", "grpo/eval", "api/eval", "constant 2 m", "median (train labels)"]
    assert t.loc["sft"].tolist()[:2] == [0.5, 0.25] and t.loc["sft"][["kitti", "avg"]].isna().all()
    assert math.isnan(t.loc["grpo/eval", "outdoor"]) and math.isnan(t.loc["grpo/eval", "avg"])
    assert t.loc["api/eval", "avg"] == pytest.approx(0.8)
    assert t.loc["constant 2 m"].tolist() == pytest.approx([0.1, 0.2, 0.05, 0.35 / 3])  # from the first folder
    assert t.loc["median (train labels)", "avg"] == pytest.approx(0.35)
    assert table.markdown(t) == EXPECTED_MD

    a = table.build([("api", API)], metric="abs_rel")
    assert a.loc["api", "indoor"] == 0.2 and a.loc["api", "kitti"] == 0.4
    assert a.loc["api"][["outdoor", "avg"]].isna().all()
    assert a.loc["constant 2 m", "avg"] == pytest.approx(2.0)
    assert "median (train labels)" in a.index

    base = table.build([("eval-baselines", {k: v for k, v in SFT.items() if k != "model"}), ("api", API)])
    assert list(base.index) == ["api", "constant 2 m", "median (train labels)"]  # a model-less folder: baselines


def test_table_command(tmp_path):
    dirs = _write(tmp_path)
    out = tmp_path / "tables" / "table1"
    r = subprocess.run([sys.executable, "analysis/table.py", *map(str, dirs), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == EXPECTED_MD
    assert (out.parent / "table1.md").read_text() == EXPECTED_MD
    assert "api/eval: constant 2 m delta1 on indoor is 0.15, not 0.1" in r.stderr
    csv = pd.read_csv(out.parent / "table1.csv", index_col=0)
    assert csv.index.name == "delta1" and list(csv.columns) == ["indoor", "outdoor", "kitti", "avg"]
    assert csv.loc["constant 2 m", "avg"] == pytest.approx(0.35 / 3, abs=1e-12)  # full precision
    assert csv.loc["grpo/eval", "kitti"] == 0.6 and pd.isna(csv.loc["grpo/eval", "outdoor"])

    r = subprocess.run([sys.executable, "analysis/table.py", str(dirs[0] / "metrics.json"), str(dirs[2]),
                        "--names", "SFT (ours)", "GPT", "--metric", "abs_rel"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert [" ".join(line.split()) for line in r.stdout.splitlines()[2:4]] == [
        "| SFT (ours) | 1.000 | 1.000 | | |", "| GPT | 0.200 | | 0.400 | |"]

    r = subprocess.run([sys.executable, "analysis/table.py", *map(str, dirs), "--names", "a"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--names: 1 names for 3 folders" in r.stderr
    r = subprocess.run([sys.executable, "analysis/table.py", str(tmp_path / "nowhere")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no metrics.json" in r.stderr
