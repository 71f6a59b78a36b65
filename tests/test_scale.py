"""./run.sh scale: a sweep's winning arm, picked by the seed-paired δ1, written as a paper experiment."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rlkit.config import ConfigError, load_experiment
from rlkit.scale import scale_winner
from rlkit.sweep import paired_winner

ROOT = Path(__file__).parent.parent
ABLATIONS = ROOT / "experiments/ablations"


def _results(path: Path, figure: str, means: dict[str, float], spread: float, seeds=(0, 1, 2)) -> Path:
    """Per-seed rows in the sweep results' layout: arm means plus a per-seed wobble of +-spread."""
    rows = []
    for i, (arm, mean) in enumerate(means.items()):
        for k in seeds:
            v = mean + spread * (-1, 1, 0, 0.5, -0.5)[k] * (-1) ** i
            for ds, value in (("indoor", v), ("outdoor", v), ("avg", v)):
                rows.append({"sweep": figure, "figure": figure, "scale": "mini", "arm": arm, "series": figure, "x": 0,
                             "seed": k, "dataset": ds, "method": "model", "metric": "delta1", "value": value})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_paired_winner_needs_two_standard_errors(tmp_path):
    clear = pd.read_csv(_results(tmp_path / "a.csv", "f", {"a": 0.5, "b": 0.4}, 0.01))
    assert paired_winner(clear)[0] == "a" and paired_winner(clear)[2]
    close = pd.read_csv(_results(tmp_path / "b.csv", "f", {"a": 0.5, "b": 0.49}, 0.03))
    best, table, won = paired_winner(close)
    assert not won and table["seeds"].tolist() == [3]


def test_focal_length_winner_becomes_a_paper_experiment(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "focal.csv", "focal_length", {"f25": 0.30, "f50": 0.45, "f75": 0.52, "f100": 0.40}, 0.01)
    out = scale_winner(ABLATIONS / "focal_length.yaml", "qwen2.5-vl-3b", tmp_path / "winner.yaml", csv)
    assert out == tmp_path / "winner.yaml"
    exp = load_experiment(out)  # loads and validates
    paper = load_experiment(ROOT / "experiments/paper/qwen2_5_vl_3b_sft.yaml")
    assert exp.camera.f_uni == 1500  # f75 at the miniature's 50 = the paper's 1000
    assert (exp.camera.crop_width, exp.prompt, exp.train, exp.data) == \
           (paper.camera.crop_width, paper.prompt, paper.train, paper.data)
    text = capsys.readouterr().out
    assert "'f75' wins" in text and "f75 − f50: +0.070" in text
    assert "accelerate launch --config_file experiments/paper/accelerate/fsdp2_qwen2_5_vl.yaml" in text
    assert "sbatch" in text and str(out) in text
    # another model: its own recipe and f_uni scale (Pixtral's 750)
    pix = scale_winner(ABLATIONS / "focal_length.yaml", "pixtral-12b", tmp_path / "pix.yaml", csv)
    assert load_experiment(pix).camera.f_uni == 1125 and "pixtral" in load_experiment(pix).model.name


def test_a_sweep_without_a_clear_winner_says_so_and_exits_0(tmp_path):
    csv = _results(tmp_path / "reward.csv", "grpo_reward",
                   {"delta1": 0.35, "neg_abs_rel": 0.356, "neg_l2": 0.357, "neg_l1": 0.355}, 0.02)
    r = subprocess.run([sys.executable, "-m", "rlkit", "scale", str(ABLATIONS / "grpo_reward.yaml"),
                        "--results", str(csv), "--out", str(tmp_path / "w.yaml")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no arm wins beyond 2 standard errors" in r.stdout and not (tmp_path / "w.yaml").exists()


def test_arm_scales_a_named_arm_when_none_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "focal.csv", "focal_length", {"f25": 0.45, "f50": 0.505, "f75": 0.502, "f100": 0.47}, 0.02)
    assert scale_winner(ABLATIONS / "focal_length.yaml", "qwen2.5-vl-3b", tmp_path / "none.yaml", csv) is None
    hint = capsys.readouterr().out.splitlines()[-1]
    assert hint == f"to scale an arm anyway: ./run.sh scale {ABLATIONS / 'focal_length.yaml'} --model qwen2.5-vl-3b " \
                   f"--results {csv} --arm f50" and not (tmp_path / "none.yaml").exists()
    out = scale_winner(ABLATIONS / "focal_length.yaml", "qwen2.5-vl-3b", tmp_path / "f50.yaml", csv, arm="f50")
    assert load_experiment(out).camera.f_uni == 1000  # the miniature's 50 is the paper's 1000
    head = out.read_text().splitlines()[0]
    assert "no arm wins beyond 2 standard errors (best mean: f50); 'f50' chosen with --arm" in head
    assert "f50 − f75: +0.003" in out.read_text() and "--arm f50" in out.read_text()
    with pytest.raises(ConfigError, match="--arm 'f60' is not an arm of .*choose from"):
        scale_winner(ABLATIONS / "focal_length.yaml", "qwen2.5-vl-3b", tmp_path / "x.yaml", csv, arm="f60")


def test_grpo_winner_uses_the_grpo_recipe_and_copies_its_rewards(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "reward.csv", "grpo_reward",
                   {"delta1": 0.30, "neg_abs_rel": 0.33, "neg_l2": 0.34, "neg_l1": 0.42}, 0.005)
    exp = load_experiment(scale_winner(ABLATIONS / "grpo_reward.yaml", "qwen2.5-vl-7b", tmp_path / "g.yaml", csv))
    assert exp.method == "grpo" and exp.rewards == ["neg_l1", "format"]
    assert exp.model.name == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert "experiments/paper/accelerate/ddp.yaml" in capsys.readouterr().out


def test_unknown_model_is_refused():
    with pytest.raises(ConfigError, match="--model 'llava' is not one of"):
        scale_winner(ABLATIONS / "focal_length.yaml", "llava")


def test_a_winner_the_official_template_refuses_goes_over_the_kits_conventions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "ref.csv", "pixel_reference", {"text": 0.60, "arrow": 0.30, "square": 0.45}, 0.005)
    out = scale_winner(ABLATIONS / "pixel_reference.yaml", "qwen2.5-vl-3b", tmp_path / "ref.yaml", csv)
    exp = load_experiment(out)
    assert (exp.prompt.reference, exp.prompt.template, exp.camera.resize) == ("text", "sft", "exact")
    assert "the kit's conventions (_paper_kit.yaml)" in out.read_text()
    assert not list(tmp_path.glob(".*tmp*"))  # the refused first try left nothing


def test_a_square_marker_winner_is_listed_as_not_translated(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "ref.csv", "pixel_reference", {"text": 0.30, "arrow": 0.31, "square": 0.60}, 0.005)
    out = scale_winner(ABLATIONS / "pixel_reference.yaml", "qwen2.5-vl-3b", tmp_path / "sq.yaml", csv)
    assert load_experiment(out).prompt.marker.shape == "square"
    assert "a miniature marker size: check it at paper image sizes" in out.read_text()


def test_an_arrow_winner_takes_the_recipes_arrow_and_says_what_it_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "ref.csv", "pixel_reference", {"text": 0.30, "arrow": 0.60, "square": 0.31}, 0.005)
    out = scale_winner(ABLATIONS / "pixel_reference.yaml", "qwen2.5-vl-3b", tmp_path / "ar.yaml", csv)
    paper = load_experiment(ROOT / "experiments/paper/qwen2_5_vl_3b_sft.yaml").prompt.marker
    assert load_experiment(out).prompt.marker == paper
    assert (f"prompt.marker: the recipe's {paper.shape} (size {paper.size}) in place of the miniature's "
            "{'shape': 'arrow', 'size': 9, 'outline': [255, 255, 255]}") in out.read_text()


def test_an_arrow_of_the_recipes_size_replaces_nothing_worth_listing(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    csv = _results(tmp_path / "t.csv", "pixel_reference_tuning", {"arrow_5": 0.60, "arrow_9_outlined": 0.30,
                                                                  "square_5": 0.31, "square_9_outlined": 0.32}, 0.005)
    out = scale_winner(ABLATIONS / "pixel_reference_tuning.yaml", "qwen2.5-vl-3b", tmp_path / "a5.yaml", csv)
    assert "'arrow_5' wins" in out.read_text() and "in place of the miniature's" not in out.read_text()
