"""Inputs are checked before any expensive work, and what loading skipped reaches metrics.json."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


def _cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_missing_eval_file_stops_before_training_with_one_line(tmp_path, synth_dir):
    exp = {"method": "sft", "output_dir": str(tmp_path / "run"), "train": {"max_steps": 5},
           "data": {"train": [{"path": str(synth_dir / "indoor_train.jsonl")}],
                    "eval": [{"path": str(synth_dir / "indoor_eval.jsonl")}]}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    r = _cli(path, "data.eval=[{path: missing.jsonl}]")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {path}: data.eval[0].path: file not found: missing.jsonl"]
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained
    # eval needs no training data: without it the median baseline is said to be unavailable, not guessed
    r = _cli("eval", path, "data.train=[{path: gone.jsonl}]", "--model", "none")
    assert r.returncode == 0 and "baseline is unavailable (data.train[0].path: file not found: gone.jsonl)" in r.stderr
    assert "Traceback" not in r.stderr


def test_errors_that_need_no_library_come_before_trl_and_transformers_load(tmp_path, synth_dir):
    """A missing model folder, data file or base stage, a bad output_dir or reward plugin is said in about a second:
    the plan checks them before it imports TRL, transformers and peft (several seconds), which only the trainer's
    fields and LoRA need."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"method": "sft", "output_dir": str(tmp_path / "run"),
                                   "data": {"train": [{"path": str(synth_dir / "indoor_train.jsonl")}],
                                            "eval": [{"path": str(synth_dir / "indoor_eval.jsonl")}]}}))
    (tmp_path / "a_file").write_text("x")
    probe = ("import sys\nfrom rlkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('loaded:', sorted(m for m in ('trl', 'transformers.training_args', 'peft') if m in sys.modules))")
    for over, said in (("model.name=./no-such-model", "model.name ./no-such-model: folder not found"),
                       ("data.eval=[{path: gone.jsonl}]", "data.eval[0].path: file not found: gone.jsonl"),
                       (f"output_dir={tmp_path / 'a_file'}", "is a file, not a folder"),
                       (f"base={tmp_path / 'no_base.yaml'}", "no_base.yaml"),
                       ("method=grpo", None)):
        args = [str(exp), over] + (["rewards=[tests/fixtures/exiting_reward.py:reward]"] if said is None else [])
        r = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert (said or "exiting_reward.py") in r.stderr, r.stderr[-2000:]
        assert r.stdout.strip().splitlines()[-1] == "loaded: []", (over, r.stdout)


def test_bad_trainer_arguments_stop_before_any_scene_is_rendered(tmp_path):
    exp = {"method": "sft", "output_dir": str(tmp_path / "run"),
           "data": {"synth": {"out": str(tmp_path / "synth"), "train_images": 2, "eval_images": 1},
                    "train": [{"path": str(tmp_path / "synth" / "indoor_train.jsonl")}],
                    "eval": [{"path": str(tmp_path / "synth" / "indoor_eval.jsonl")}]},
           "train": {"lr_scheduler_type": "sometimes"}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    r = _cli(path)
    assert r.returncode == 2 and "train: " in r.stderr and "sometimes" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "synth").exists()


def test_load_skips_and_repairs_reach_metrics_json(tmp_path, synth_dir):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    lines = (data / "indoor_eval.jsonl").read_text().splitlines()
    repaired = json.loads(lines[0])
    repaired["intrinsics"][0] = 0  # fx == 0 means fx = fy (the official curation code's convention)
    lines[0] = json.dumps(repaired)
    (data / "indoor_eval.jsonl").write_text("\n".join(lines + ["{not json", '{"image": 3}']) + "\n")
    exp = {"method": "sft", "output_dir": str(tmp_path / "run"),
           "data": {"train": [{"path": str(data / "indoor_train.jsonl"), "name": "indoor"}],
                    "eval": [{"path": str(data / "indoor_eval.jsonl"), "name": "indoor"}],
                    "skip_invalid": True},
           "camera": {"strategy": "direct"}, "eval": {"samples_per_dataset": 4}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    r = _cli("eval", path, "--model", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "run" / "eval-baselines" / "metrics.json").read_text())
    assert m["eval_data"] == {"indoor": {"loaded": len(lines), "skipped": {"<json>": 1, "intrinsics": 1},
                                         "repaired": {"fx0_as_fy": 1}}}
    assert m["world_size"] == 1


def test_metrics_json_is_strict_json_with_undefined_metrics_as_null(tmp_path):
    import pandas as pd

    from rlkit.evaluate import write_results
    from rlkit.metrics import METRICS

    values = {**{m: 0.5 for m in METRICS}, "delta1": float("nan"), "rmse": float("inf")}
    result = {"model": {"a": values}}
    write_results(tmp_path, pd.DataFrame({"gt": [1.0]}), result, {"train_metrics": {"loss": float("nan")}})
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text)
    assert m["metrics"]["model"]["a"] == {**values, "delta1": None, "rmse": None}
    assert m["train_metrics"] == {"loss": None} and m["null_metrics"].startswith("undefined")


def test_two_datasets_with_one_name_are_an_error(tmp_path):
    import pytest

    from rlkit.config import ConfigError, experiment_from_dict

    d = {"data": {"train": [{"path": "a/x.jsonl"}], "eval": [{"path": "a/x.jsonl"}, {"path": "b/x.jsonl"}]}}
    with pytest.raises(ConfigError, match=r"data.eval: dataset name\(s\) \['x'\] used twice"):
        experiment_from_dict(d)
    d["data"]["eval"][1]["name"] = "x_b"
    assert [s.label for s in experiment_from_dict(d).data.eval] == ["x", "x_b"]


def test_config_values_are_type_checked_at_load_with_the_key_named(tmp_path):
    import pytest

    from rlkit.config import ConfigError, load_experiment
    from rlkit.run import check_experiment

    (tmp_path / "x.jsonl").write_text("")
    base = f"data: {{train: [{{path: {tmp_path / 'x.jsonl'}}}], eval: [{{path: {tmp_path / 'x.jsonl'}}}]}}\n"
    path = tmp_path / "exp.yaml"
    path.write_text(base)
    cases = {"seed=x": "seed: must be a whole number, got 'x'",
             "data.skip_invalid='false'": "data.skip_invalid: must be true or false, got 'false'",
             "camera.multiple_of=0": "camera: multiple_of must be >= 1",
             "model.dtype=float8": "model: dtype 'float8' is not one of",
             "prompt.marker.color=[255, 0]": "prompt.marker.color: must be a list of 3 values",
             "camera.f_uni=abc": "camera.f_uni: must be a finite number, got 'abc'",
             "camera.f_uni=.nan": "camera.f_uni: must be a finite number, got nan"}
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=rf"{path}: " + message.replace("[", r"\[").replace("(", r"\(")):
            load_experiment(path, [override])
    with pytest.raises(ConfigError, match=rf"{path}: train.learning_rate: must be a finite number, got 'abc'"):
        check_experiment(load_experiment(path, ["train.learning_rate=abc"]))
    # a base stage that leads back to itself is named, not a RecursionError
    (tmp_path / "a.yaml").write_text(base + "base: b.yaml\n")
    (tmp_path / "b.yaml").write_text(base + "base: a.yaml\n")
    with pytest.raises(ConfigError, match="base: the stages loop back: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        check_experiment(load_experiment(tmp_path / "a.yaml"))
