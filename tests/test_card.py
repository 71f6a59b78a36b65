"""rlkit.card: the run dir's model card, from an experiment and its metrics (no training here)."""

import json

import pandas as pd

from rlkit.card import reproduce_command, write_model_card
from rlkit.config import experiment_from_dict, load_experiment
from rlkit.evaluate import summarize

from conftest import OFFICIAL


def _experiment(tmp_path, **over):
    data = {"method": "sft", "output_dir": str(tmp_path / "run"),
            "data": {"train": [{"path": str(OFFICIAL), "name": "test"}],
                     "eval": [{"path": str(OFFICIAL), "name": "test"}]}, **over}
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_the_command_carries_the_overrides_and_falls_back_to_config_yaml(tmp_path):
    path = _experiment(tmp_path)
    assert reproduce_command(load_experiment(path)) == f"./run.sh {path}"
    exp = load_experiment(path, ["train.learning_rate=1e-4", "camera.crop_width=[100, 200]"])
    assert reproduce_command(exp) == f"./run.sh {path} 'camera.crop_width=[100, 200]' train.learning_rate=0.0001"
    # the YAML changed since: its differences become overrides too
    _experiment(tmp_path, seed=5)
    assert reproduce_command(exp) == f"./run.sh {path} seed=0 'camera.crop_width=[100, 200]' train.learning_rate=0.0001"
    # a key the YAML has but the run had not: no override removes it; and an experiment built in code
    _experiment(tmp_path, train={"max_steps": 3})
    assert reproduce_command(exp) is None
    assert reproduce_command(experiment_from_dict(exp.to_dict())) is None


def test_card_written_over_trl_template(tmp_path):
    exp = load_experiment(_experiment(tmp_path), ["eval.constant=3"])
    frame = pd.DataFrame({"dataset": ["test"] * 2, "gt": [3.0, 8.0], "pred": [3.0, float("nan")]})
    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("If you had a time machine ...")
    frame.to_csv(out / "predictions.csv", index=False)
    metrics = {"metrics": summarize(frame, 3.0), "eval_samples": 2, "train_samples": 64,
               "train_data": {"test": {"loaded": 6}}, "eval_data": {"test": {"loaded": 6}}}
    card = write_model_card(exp, metrics).read_text()
    assert "time machine" not in card and card.startswith("---\nlibrary_name: transformers\n")
    assert "- **Method**: SFT on the answers; 64 training samples; seed 0" in card
    assert f"| train | test | `{OFFICIAL}` | 6 |" in card and f"| eval | test | `{OFFICIAL}` | 6 (2 eval pixels) |" in card
    cells = " ".join(card.split())
    assert "| delta1 | test | avg |" in cells and "| model | 0.500 | 0.500 |" in cells
    assert "| constant 3 m | 0.500 | 0.500 |" in cells  # 3 m is right for the 3 m label only
    assert f"./run.sh {tmp_path / 'exp.yaml'} eval.constant=3.0\n" in card
    # the YAML gained a key the run had not: the command is the run's own config.yaml
    _experiment(tmp_path, train={"max_steps": 3})
    card = write_model_card(exp, metrics).read_text()
    assert f"./run.sh {out / 'config.yaml'} output_dir=NEW_DIR" in card
