"""End-to-end runs of the real code path on the tiny model (CPU). Marked slow; CI runs them."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import OFFICIAL, write_experiment

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


_experiment = write_experiment


def _cells(markdown: str) -> str:
    """Text with markdown tables' column padding collapsed: rows read as "| model | 0.500 |"."""
    return " ".join(markdown.split())


def _run(*args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_sft_end_to_end_checkpoint_reloads_and_metrics(tmp_path, synth_dir):
    exp = _experiment(tmp_path, synth_dir)
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"model", "constant 2 m", "median (train labels)"}
    assert set(metrics["metrics"]["model"]) == {"indoor", "outdoor", "avg"}
    assert set(metrics["metrics"]["model"]["avg"]) == {"delta1", "delta2", "delta3", "abs_rel", "rmse", "log10",
                                                       "parse_fail"}
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns) == ["task", "dataset", "image", "x", "y", "gt", "pred", "text"]
    assert len(preds) == 12
    # the saved model reloads through the standard Auto classes and evaluates again, same answers
    r2 = _run("eval", exp, "--out", tmp_path / "again")
    assert r2.returncode == 0, r2.stderr[-3000:]
    again = pd.read_csv(tmp_path / "again" / "predictions.csv")
    assert again["text"].fillna("").tolist() == preds["text"].fillna("").tolist()
    assert "| delta1 | indoor | outdoor | avg |" in _cells(r.stdout)
    # only eval settings changed: the finished run is evaluated again, not refused and not trained again
    weights = (run / "final" / "model.safetensors").stat().st_mtime_ns
    r3 = _run(exp, "eval.samples_per_dataset=3")
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert "evaluated again" in r3.stderr and len(pd.read_csv(run / "predictions.csv")) == 6
    assert json.loads((run / "metrics.json").read_text())["eval_samples"] == 6
    assert json.loads((run / "metrics.json").read_text())["train_samples"] == metrics["train_samples"]
    assert (run / "final" / "model.safetensors").stat().st_mtime_ns == weights
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["samples_per_dataset"] == 3
    r4 = _run(exp, "eval.samples_per_dataset=3")
    assert r4.returncode == 0 and "is finished" in r4.stderr
    r5 = _run(exp, "train.learning_rate=0.5")  # a training setting still binds the folder
    assert r5.returncode == 2 and "holds a run of a different configuration" in r5.stderr


def test_killed_run_resumes_from_last_checkpoint(tmp_path, synth_dir):
    exp = _experiment(tmp_path, synth_dir, train={"max_steps": 60, "save_steps": 3})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlkit", str(exp)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "run" / "checkpoint-3" / "trainer_state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "run" / "final").exists(), "the run was not killed mid-training"
    killed_at = max(int(p.name.split("-")[1]) for p in (tmp_path / "run").glob("checkpoint-*"))
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {tmp_path / 'run'}/checkpoint-{killed_at}" in r.stderr
    state = json.loads(max((tmp_path / "run").glob("checkpoint-*"),
                           key=lambda p: int(p.name.split("-")[1])).joinpath("trainer_state.json").read_text())
    assert state["global_step"] == 60
    assert (tmp_path / "run" / "metrics.json").exists()


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, synth_dir, lora):
    # The trained weights must come back on resume, not only the step count: transformers' Trainer
    # reloads a checkpoint without Qwen2.5-VL's key renaming and silently keeps fresh weights.
    over = {"model": {"lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}}} if lora else {}
    exp = _experiment(tmp_path, synth_dir, train={"max_steps": 4, "save_steps": 2, "learning_rate": 1e-2}, **over)
    run = tmp_path / "run"
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    uninterrupted = _weights(run / "final")
    from rlkit.tiny import ensure_tiny_model

    start = _weights(ensure_tiny_model(ROOT / ".cache/models"))  # the training moved the weights well past the tolerance
    assert max(np.abs(uninterrupted[k] - start[k]).max() for k in start) > 1e-3
    # as if killed right after step 2: only checkpoint-2 is left
    for p in ["final", "metrics.json", "predictions.csv", "checkpoint-4"]:
        (run / p).unlink() if (run / p).is_file() else shutil.rmtree(run / p)
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {run}/checkpoint-2" in r.stderr
    assert "missing keys" not in r.stderr and "unexpected keys" not in r.stderr
    resumed = _weights(run / "final")
    assert resumed.keys() == uninterrupted.keys()
    for k, v in uninterrupted.items():
        np.testing.assert_allclose(resumed[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


def test_grpo_with_file_plugin_receives_depth(tmp_path, synth_dir):
    spy_log = tmp_path / "spy.jsonl"
    exp = _experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"},
                      rewards=["tests/fixtures/spy_reward.py:spy", "neg_l1", "format"],
                      reward_kwargs={"tests/fixtures/spy_reward.py:spy": {"log_path": str(spy_log)}},
                      train={"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
                             "max_completion_length": 8, "learning_rate": 1e-5, "beta": 0.0, "save_steps": 2,
                             "logging_steps": 1, "report_to": "none", "disable_tqdm": True})
    r = _run(exp, "eval.constant=3.0")
    assert r.returncode == 0, r.stderr[-3000:]
    calls = [json.loads(line) for line in spy_log.read_text().splitlines()]
    assert len(calls) == 2 and all(c["n"] == 4 for c in calls)
    assert all(d > 0 for c in calls for d in c["depth"])
    assert {"label", "unit", "task", "dataset", "pixels", "intrinsics"} <= set(calls[0]["keys"])
    # each group of 4 completions shares one prompt, hence one label
    assert all(len(set(c["depth"])) == 1 for c in calls)
    # logged under the registry names (format_reward is the function behind `format`) and a plugin's function name
    for name in ("spy", "neg_l1", "format"):
        assert f"'rewards/{name}/mean'" in r.stdout + r.stderr, name
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"model", "constant 3 m", "median (train labels)"}

    # README.md is the kit's model card, not TRL's template
    card = (tmp_path / "run" / "README.md").read_text()
    assert "time machine" not in card and "# run: metric depth by GRPO" in card
    assert "`tests/fixtures/spy_reward.py:spy`, `neg_l1`, `format`" in card
    assert f"| train | indoor | `{synth_dir / 'indoor_train.jsonl'}` | 12 |" in card
    pixels = (pd.read_csv(tmp_path / "run" / "predictions.csv")["dataset"] == "outdoor").sum()
    assert f"| eval | outdoor | `{synth_dir / 'outdoor_eval.jsonl'}` | 6 ({pixels} eval pixels) |" in card
    model_delta1 = metrics["metrics"]["model"]["avg"]["delta1"]
    assert f"| model | {metrics['metrics']['model']['indoor']['delta1']:.3f} |" in _cells(card)
    assert f"| {model_delta1:.3f} |" in _cells(card) and "| abs_rel | indoor | outdoor | avg |" in _cells(card)
    assert f"./run.sh {exp} eval.constant=3.0\n" in card  # the override the run was given
    assert f"AutoModelForImageTextToText.from_pretrained('{tmp_path / 'run' / 'final'}')" in card


def test_constant_baseline_matches_hand_computation(tmp_path):
    exp = {"method": "sft", "output_dir": str(tmp_path / "base"),
           "data": {"train": [{"path": str(OFFICIAL), "name": "test"}], "eval": [{"path": str(OFFICIAL), "name": "test"}]},
           "camera": {"strategy": "direct"}, "eval": {"samples_per_dataset": 100, "constant": 2.0}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    r = _run("eval", path, "--model", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "base" / "metrics.json").exists()  # eval never marks the run dir finished
    metrics = json.loads((tmp_path / "base" / "eval-baselines" / "metrics.json").read_text())["metrics"]
    # by hand: the fixture's labels, less (63, 47) whose arrow would leave the image
    gt = np.array([2.5, 7.25, 1.75, 3.0, 4.5])
    hand = np.mean(np.maximum(2.0 / gt, gt / 2.0) < 1.25)
    assert hand == pytest.approx(0.2)
    assert metrics["constant 2 m"]["test"]["delta1"] == pytest.approx(hand)
    assert metrics["median (train labels)"]["test"]["delta1"] == pytest.approx(
        np.mean(np.maximum(3.75 / gt, gt / 3.75) < 1.25))  # the median of the 6 train labels


def test_micro_sweep_side_by_side_and_plot(tmp_path, synth_dir):
    exp = _experiment(tmp_path, synth_dir, train={"max_steps": 2, "save_steps": 100})
    missing = str(tmp_path / "missing.jsonl")
    sweep = {"figure": "camera_ambiguity", "experiment": str(exp), "seeds": [0],
             "scales": {"mini": {"eval.samples_per_dataset": 4}},
             "arms": {"direct": {"camera.strategy": "direct"}, "unify_focal": {"camera.strategy": "unify_focal"},
                      "broken": {"data.train": [{"path": missing, "name": "indoor"}]}}}
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(sweep))
    runs = tmp_path / "sweeps" / "micro" / "mini"
    r = _run(path, "--sweeps-dir", tmp_path / "sweeps", "--jobs", "2")
    # the broken arm fails in its own process and is named; the others finish and are tabled
    assert r.returncode == 1 and "1 run(s) failed: broken seed 0" in r.stderr, r.stderr[-3000:]
    assert "missing.jsonl" in (runs / "broken" / "seed0" / "sweep.log").read_text()
    assert "train_runtime" in (runs / "direct" / "seed0" / "sweep.log").read_text()
    table = pd.read_csv(runs / "results.csv")
    table = table[table["method"] != "sweep wall time"]  # a failed sweep has none; a finished one would
    assert set(table["arm"]) == {"direct", "unify_focal"}
    assert set(table["dataset"]) == {"indoor", "outdoor", "avg", "all"}
    r2 = subprocess.run([sys.executable, "analysis/plot_ablation.py", "--runs", str(tmp_path / "sweeps"),
                         "--out", str(tmp_path / "figs"), "--figure", "camera_ambiguity"],
                        cwd=ROOT, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    md = (tmp_path / "figs" / "camera_ambiguity.md").read_text()
    d = table[(table["method"] == "model") & (table["metric"] == "delta1") & (table["dataset"] == "avg")]
    for arm, value in zip(d["arm"], d["value"]):
        assert f"| {arm} | {value:.3f} |" in _cells(md)
    # re-running the finished arms runs nothing
    r3 = _run(path, "--sweeps-dir", tmp_path / "sweeps", "--arms", "direct", "unify_focal")
    assert r3.returncode == 0 and "train_runtime" not in r3.stdout + r3.stderr
    # ./run.sh sweeps: every sweep of a folder, finished runs skipped, figures redrawn, one reading per figure
    (tmp_path / "ablations").mkdir()
    del sweep["arms"]["broken"]
    (tmp_path / "ablations" / "micro.yaml").write_text(yaml.safe_dump(sweep))
    r4 = _run("sweeps", "--folder", tmp_path / "ablations", "--sweeps-dir", tmp_path / "sweeps",
              "--figures", tmp_path / "figs2")
    assert r4.returncode == 0, r4.stderr[-3000:]
    assert "train_runtime" not in r4.stdout + r4.stderr and "1 sweeps in" in r4.stdout
    assert "camera_ambiguity: best " in r4.stdout and (tmp_path / "figs2" / "camera_ambiguity.png").exists()


def test_multitask_sft_and_grpo_end_to_end(tmp_path):
    """Six tasks in one run (camera_motion's two images among one-image samples), SFT then GRPO: metrics
    per task and dataset, each task with its own median baseline."""
    from rlkit.synth import CameraRange, generate_split

    data = tmp_path / "pairs"
    for family in ("indoor", "outdoor"):
        for split, n in (("train", 8), ("eval", 4)):
            generate_split(data, family, split, n, points_per_image=6, progress=False, pairs=True,
                           camera=CameraRange(width=(96, 128)))
    tasks = {t: 1 for t in ("depth", "axis_depth", "speed", "time", "two_point", "camera_motion")}
    ev = {"samples_per_dataset": 3, "batch_size": 6, "max_new_tokens": 16}
    sft = _experiment(tmp_path, data, prompt={"tasks": tasks}, eval=ev)
    r = _run(sft)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(tasks)
    for t in tasks:
        assert set(metrics["tasks"][t]) == {"model", "constant 2 m", "median (train labels)"}
        assert set(metrics["tasks"][t]["model"]) == {"indoor", "outdoor", "avg"}
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert preds.groupby(["task", "dataset"]).size().tolist() == [3] * 12
    assert "Per task, averaged over the datasets" in r.stdout
    header = next(line for line in r.stdout.splitlines() if line.startswith("| delta1") and "two_point " in line)
    assert [c.strip() for c in header.strip("|").split("|")] == ["delta1", *sorted(tasks)]  # the YAML's order

    (tmp_path / "g").mkdir()
    grpo = _experiment(tmp_path / "g", data, method="grpo", prompt={"template": "grpo", "tasks": tasks},
                       rewards=["neg_abs_rel", "format"], eval=ev,
                       train={"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
                              "max_completion_length": 8, "learning_rate": 1e-5, "beta": 0.0, "save_steps": 2,
                              "logging_steps": 1, "report_to": "none", "disable_tqdm": True})
    r = _run(grpo)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "g" / "run" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(tasks) and metrics["train_samples"] == 2  # 2 steps x 4 completions / 4 per prompt


def test_the_released_model_preset_evaluates_without_training_data(tmp_path):
    """Table 1 for a released model needs only eval files: the median baseline is reported unavailable."""
    r = _run("eval", "experiments/eval_depthlm_official.yaml", "--model", "none",
             f"data.eval=[{{path: {OFFICIAL}, name: x}}]", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "median (train labels) baseline is unavailable (data.train[0].path: file not found" in r.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(m["metrics"]) == ["constant 2 m"] and m["median_baseline"].startswith("unavailable")
    # training still needs its data
    r = _run("experiments/eval_depthlm_official.yaml", "train.max_steps=2", f"output_dir={tmp_path / 'train'}")
    assert r.returncode == 2 and "data.train[0].path: file not found" in r.stderr


def test_the_shipped_grpo_experiment_swaps_in_a_plugin_from_rewards(tmp_path):
    """./run.sh experiments/grpo_negl1.yaml rewards=[close_enough,format] runs rewards/close_enough.py (its base
    stage and scenes made small here)."""
    small = [f"data.synth.out={tmp_path / 'synth'}", "data.synth.train_images=4", "data.synth.eval_images=2",
             "eval.samples_per_dataset=4"]
    base = [f"output_dir={tmp_path / 'base'}", "train.max_steps=2", *small]
    r = _run("experiments/grpo_negl1.yaml", "rewards=[close_enough, format]", "train.max_steps=2",
             "train.logging_steps=1", "train.report_to=none", f"output_dir={tmp_path / 'run'}", *small,
             f"base_overrides={json.dumps(base)}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'rewards/close_enough/mean'" in r.stdout + r.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_samples"] == 2 * 32 // 8 and "rewards/close_enough/mean" in metrics["grpo_diagnostics"]
