"""Hostile input, one case per kind: each ends as one line naming the file/line/key (exit 2, no
traceback), or as a count in metrics.json. Rewards: broken plugins stop a run at its first step."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_experiment

ROOT = Path(__file__).parent.parent


def _cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for n in needles:
        assert n in last, last


def test_loader_a_line_that_is_not_utf8_names_file_and_line(tmp_path, synth_dir):
    bad = tmp_path / "eval.jsonl"
    lines = (synth_dir / "indoor_eval.jsonl").read_bytes().splitlines()
    bad.write_bytes(b"\n".join(lines[:2] + [b'{"image": "\xff"}'] + lines[2:]) + b"\n")
    exp = write_experiment(tmp_path, synth_dir, data={"eval": [{"path": str(bad), "root": str(synth_dir)}]})
    _one_line_error(_cli("eval", exp, "--model", "none"), f"{bad}:3: field '<utf-8>': not UTF-8")


def test_counts_two_eval_sets_with_one_name_are_an_error(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, data={"eval": [{"path": str(synth_dir / "indoor_eval.jsonl")},
                                                               {"path": str(synth_dir / "indoor_eval.jsonl")}]})
    _one_line_error(_cli("eval", exp, "--model", "none"), "data.eval: dataset name(s) ['indoor_eval'] used twice")


def test_config_a_wrong_type_names_the_key(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir)
    _one_line_error(_cli(exp, "data.skip_invalid='false'"), f"{exp}: data.skip_invalid: must be true or false")
    _one_line_error(_cli(exp, "train.learning_rate=abc"), "train.learning_rate: must be a finite number, got 'abc'")


@pytest.mark.parametrize("ref,kwargs,needle", [
    ("neg_l1", {"clip": 0}, "reward 'neg_l1': clip must be a number > 0 and finite, got 0"),
    ("delta1", {"threshold": 1.0}, "reward 'delta1': threshold must be a number > 1"),
    ("tests/fixtures/exiting_reward.py:reward", {}, "importing tests/fixtures/exiting_reward.py failed: "
                                                     "SystemExit('plugin refuses to load')"),
])
def test_rewards_bad_parameters_and_plugins_stop_before_any_work(tmp_path, synth_dir, ref, kwargs, needle):
    exp = write_experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"}, rewards=[ref],
                           reward_kwargs={ref: kwargs} if kwargs else {}, train={"num_generations": 4})
    _one_line_error(_cli(exp), needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("func,needle", [
    ("returns_none", "returned None for completion 0"),
    ("returns_nan", "returned nan for completion 0"),
    ("too_short", "returned 1 values for 4 completions"),
])
def test_rewards_a_plugin_returning_garbage_stops_the_first_step(tmp_path, synth_dir, func, needle):
    ref = f"tests/fixtures/broken_rewards.py:{func}"
    exp = write_experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"}, rewards=[ref],
                           train={"max_steps": 3, "per_device_train_batch_size": 4, "num_generations": 4,
                                  "max_completion_length": 8, "beta": 0.0, "save_steps": 1})
    _one_line_error(_cli(exp), f"reward '{ref}' {needle}", "a reward returns one finite number per completion")
    assert not list((tmp_path / "run").glob("checkpoint-*"))  # nothing was trained on it


def test_rewards_plugins_are_not_imported_by_eval_or_preview(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"},
                           rewards=["tests/fixtures/exiting_reward.py:reward"],
                           eval={"samples_per_dataset": 2})
    r = _cli("eval", exp, "--model", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _cli("data", "preview", "--experiment", exp, "--n", 2, "--out", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr[-3000:]


def test_battery_findings_end_as_one_line_errors(tmp_path, synth_dir):
    """Cases the hostile battery (./run.sh bench hostile) found as tracebacks or silent results."""
    exp = write_experiment(tmp_path, synth_dir)
    _one_line_error(_cli(exp, "train.max_steps=-1"), "train.max_steps must be >= 1")
    _one_line_error(_cli(exp, "train.per_device_train_batch_size=0"), "per_device_train_batch_size must be >= 1")
    _one_line_error(_cli(exp, "model.name=./no-such-model"), "model.name ./no-such-model: folder not found")
    _one_line_error(_cli(exp, "model.lora={rr: 4}"), f"{exp}: model.lora:", "'rr'")
    _one_line_error(_cli(exp, "data.eval=[{path: " + str(synth_dir / "indoor_eval.jsonl") + ", name: avg}]"),
                    "the dataset name 'avg' is taken")
    _one_line_error(_cli("eval", exp, "--model", "none", "--out", tmp_path / "run"), "is the run dir itself")
    other = tmp_path / "other_run"  # another experiment's run folder: its metrics.json would be lost
    other.mkdir()
    (other / "config.yaml").write_text("method: sft\n")
    (other / "metrics.json").write_text("{}")
    _one_line_error(_cli("eval", exp, "--model", "none", "--out", other), "holds a training run")
    assert (other / "metrics.json").read_text() == "{}"
    twice = tmp_path / "twice.yaml"
    twice.write_text(Path(exp).read_text() + "seed: 1\nseed: 2\n")
    _one_line_error(_cli(twice), f"{twice}:", "key 'seed' appears twice")
    (tmp_path / "file_not_dir").write_text("x")
    _one_line_error(_cli(exp, f"output_dir={tmp_path / 'file_not_dir'}"), "is a file, not a folder")
    plugin = "tests/fixtures/broken_rewards.py:no_kwargs"
    grpo = write_experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"}, rewards=[plugin],
                            train={"num_generations": 4})
    _one_line_error(_cli(grpo), "must take **kwargs")
