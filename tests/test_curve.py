"""The learning curve (eval.during_training) and GRPO's diagnostics, on the tiny model end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_experiment

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow
CURVE = {"during_training": {"every_steps": 2, "samples_per_dataset": 4}, "samples_per_dataset": 6,
         "batch_size": 4, "max_new_tokens": 12}


def _run(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _scalars(run: Path) -> dict[str, list[float]]:
    """Every TensorBoard scalar under the run dir: tag -> values in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted((run / "runs").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out[tag] = [e.value for e in acc.Scalars(tag)]
    return out


def _eval_metrics(tmp_path, exp, model, name) -> dict[str, float]:
    """δ1 and AbsRel per dataset of a separate ./run.sh eval of ``model`` on the curve's subset (4 pixels per
    dataset), named as curve.csv names them."""
    r = _run("eval", exp, "eval.samples_per_dataset=4", "--model", model, "--out", tmp_path / name)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]["model"]
    return {f"{k}/{ds}": cells[k] for ds, cells in m.items() for k in ("delta1", "abs_rel")}


def test_sft_curve_points_equal_separate_evals_and_reach_tensorboard(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, eval=CURVE,
                           train={"max_steps": 5, "learning_rate": 1e-2, "report_to": "tensorboard"})
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    curve = pd.read_csv(run / "curve.csv")
    assert curve["step"].tolist() == [0, 2, 4, 5]  # the start, every 2 steps, the last step
    assert curve["samples"].tolist() == [0, 8, 16, 20]  # steps x per-device batch 4
    assert curve["train_seconds"].iloc[0] == 0 and curve["train_seconds"].is_monotonic_increasing
    metrics = json.loads((run / "metrics.json").read_text())
    pd.testing.assert_frame_equal(pd.DataFrame(metrics["curve"]), curve)
    # training time excludes the curve's evaluation
    assert metrics["curve_eval_seconds"] == pytest.approx(curve["eval_seconds"].sum(), abs=0.2)
    assert curve["train_seconds"].iloc[-1] <= metrics["train_seconds"] + 0.5  # it also counts setup and the save
    # the start and the end are what separate evaluations of those checkpoints give on the same subset
    from rlkit.tiny import ensure_tiny_model

    start = _eval_metrics(tmp_path, exp, ensure_tiny_model(ROOT / ".cache/models"), "start")
    final = _eval_metrics(tmp_path, exp, run / "final", "final")
    assert set(start) == {c for c in curve.columns if "/" in c}
    texts = [pd.read_csv(tmp_path / name / "predictions.csv", keep_default_na=False)["text"].tolist()
             for name in ("start", "final")]
    assert texts[0] != texts[1]  # training changed the answers between the two points
    for key in start:
        assert curve[key].iloc[0] == pytest.approx(start[key]), key
        assert curve[key].iloc[-1] == pytest.approx(final[key]), key
    # TensorBoard: the Trainer's loss and learning rate, and the curve, read back from the event files
    tb = _scalars(run)
    assert len(tb["train/loss"]) == 5 and len(tb["train/learning_rate"]) == 5
    assert tb["curve/delta1/indoor"] == pytest.approx(curve["delta1/indoor"].tolist())
    assert "## Learning curve" in (run / "README.md").read_text()


def test_grpo_curve_and_diagnostics(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"},
                           rewards=["neg_l1", "format"], eval=CURVE,
                           train={"max_steps": 3, "per_device_train_batch_size": 8, "num_generations": 4,
                                  "max_completion_length": 8, "learning_rate": 1e-4, "beta": 0.0, "save_steps": 10,
                                  "logging_steps": 1, "report_to": "tensorboard", "temperature": 1.0})
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    curve = pd.read_csv(run / "curve.csv")
    assert curve["step"].tolist() == [0, 2, 3] and curve["samples"].tolist() == [0, 4, 6]  # 2 prompts x 4 per step
    # as for SFT: the start and the end equal separate evaluations of those checkpoints on the same subset
    from rlkit.tiny import ensure_tiny_model

    start = _eval_metrics(tmp_path, exp, ensure_tiny_model(ROOT / ".cache/models"), "start")
    final = _eval_metrics(tmp_path, exp, run / "final", "final")
    for key in start:
        assert curve[key].iloc[0] == pytest.approx(start[key]), key
        assert curve[key].iloc[-1] == pytest.approx(final[key]), key
    diag = json.loads((run / "metrics.json").read_text())["grpo_diagnostics"]
    # distinct parsed answers per group of 4 completions: between 1 and 4 (a parse failure counts as one answer)
    for part in ("first", "last"):
        assert 1 <= diag["answers/distinct_per_group"][part] <= 4
        assert 0 <= diag["answers/parse_fail"][part] <= 1 and 0 <= diag["frac_reward_zero_std"][part] <= 1
    assert {"reward", "reward_std", "entropy", "completions/mean_length", "rewards/neg_l1/mean"} <= set(diag)
    tb = _scalars(run)
    assert len(tb["train/answers/distinct_per_group"]) == 3 and len(tb["train/rewards/neg_l1/mean"]) == 3
    assert "## GRPO diagnostics" in (run / "README.md").read_text()
