import subprocess
import sys
from pathlib import Path

import yaml
from PIL import Image

ROOT = Path(__file__).parent.parent


def _rlkit(*args):
    r = subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_data_synth_and_preview(tmp_path):
    _rlkit("data", "synth", "--out", tmp_path, "--families", "outdoor", "--train-images", 3, "--eval-images", 2,
           "--points", 2, "--width", "64,96")
    assert len((tmp_path / "outdoor_train.jsonl").read_text().splitlines()) == 3
    assert len(list((tmp_path / "rgb" / "outdoor_eval").glob("*.png"))) == 2
    out = tmp_path / "p.png"
    _rlkit("data", "preview", "--data", tmp_path / "outdoor_train.jsonl", "--out", out, "--n", 4,
           "camera.f_uni=60", "camera.crop_width=[40, 60]", "camera.crop_height=[30, 50]")
    assert Image.open(out).size[0] > 400
    exp = {"method": "sft", "data": {"train": [{"path": str(tmp_path / "outdoor_train.jsonl")}],
                                     "eval": [{"path": str(tmp_path / "outdoor_eval.jsonl")}]},
           "camera": {"f_uni": 60, "crop_width": [40, 60], "crop_height": [30, 50]},
           "prompt": {"marker": {"shape": "circle", "size": 7}}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    _rlkit("data", "preview", "--experiment", tmp_path / "e.yaml", "--mode", "eval", "--n", 2, "--out", tmp_path / "q.png")
    assert (tmp_path / "q.png").exists()


def test_bad_experiment_fails_with_a_named_key(tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text("")  # the data files are checked before the trainer's fields
    (tmp_path / "e.yaml").write_text(f"method: sft\ndata: {{train: [{{path: {data}}}], eval: [{{path: {data}}}]}}\n"
                                     "train: {lerning_rate: 1}\n")
    r = subprocess.run([sys.executable, "-m", "rlkit", str(tmp_path / "e.yaml")], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert "unknown SFTConfig field 'lerning_rate'; did you mean 'learning_rate'" in r.stderr


def test_data_synth_rejects_a_negative_room_option(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlkit", "data", "synth", "--out", str(tmp_path), "--indoor-color-jitter",
                        "-1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "data synth: indoor_color_jitter must be a number >= 0" in r.stderr
    assert not any(tmp_path.iterdir())  # nothing rendered


def test_preview_shows_what_training_sees_shuffled_labels_included(tmp_path, synth_dir, monkeypatch):
    # the GRPO base stage trains on shuffled answers: its preview must show them, not the true labels
    import rlkit.preview
    from rlkit.cli import main

    shown = []
    monkeypatch.setattr(rlkit.preview, "save_preview", lambda samples, out: shown.extend(samples) or out)
    exp = {"method": "sft", "data": {"train": [{"path": str(synth_dir / "indoor_train.jsonl")}],
                                     "eval": [{"path": str(synth_dir / "indoor_eval.jsonl")}], "shuffle_labels": True},
           "camera": {"f_uni": 60, "crop_width": [56, 84], "crop_height": [56, 84]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    assert main(["data", "preview", "--experiment", str(tmp_path / "e.yaml"), "--n", "16"]) == 0
    assert len(shown) == 16
    own = [s.query.value in set(s.record.depth.tolist()) for s in shown]
    assert sum(own) <= 4, own  # almost every answer carries another image's label
    main(["data", "preview", "--experiment", str(tmp_path / "e.yaml"), "--n", "16", "data.shuffle_labels=false"])
    assert all(s.query.value in set(s.record.depth.tolist()) for s in shown[16:])


def test_data_render_writes_the_exact_model_inputs(tmp_path, synth_dir):
    import json

    import numpy as np

    from rlkit.config import load_experiment
    from rlkit.run import build_evalset, build_stream, load_sources

    exp = {"method": "sft", "data": {"train": [{"path": str(synth_dir / "indoor_train.jsonl")}],
                                     "eval": [{"path": str(synth_dir / "indoor_eval.jsonl")}]},
           "camera": {"f_uni": 60, "crop_width": [56, 84], "crop_height": [56, 84]}, "eval": {"samples_per_dataset": 5}}
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(exp))
    loaded = load_experiment(path)
    for split, n, expected in (("eval", None, None), ("train", 3, None)):
        out = tmp_path / split
        _rlkit("data", "render", path, "--split", split, "--out", out, *(["--n", n] if n else []))
        rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        sources = load_sources(loaded)
        samples = [build_evalset(loaded, sources).sample(k) for k in range(5)] if split == "eval" else \
            [build_stream(loaded, sources).sample(i) for i in range(3)]
        assert len(rows) == len(samples)
        for row, s in zip(rows, samples):
            assert np.array_equal(np.array(Image.open(out / row["image_file"])), np.array(s.image))
            assert (row["prompt"], row["answer"]) == (s.question, s.answer)
            assert row["pixel"] == s.record.pixels[s.label].tolist()
            assert row["pixel_transformed"] == [s.query.x, s.query.y]
            assert row["source_image"] == str(s.record.image)


def test_outputs_and_inputs_of_the_wrong_kind_are_one_line_before_any_sample(tmp_path, synth_dir, monkeypatch, capsys):
    """data render --out a file (or below one), data preview --out a folder (or below a file), data check on a
    folder: exit 2 with one line naming the path, before any sample is built."""
    import pytest

    from rlkit import run as run_mod
    from rlkit.cli import main

    monkeypatch.setattr(run_mod, "load_sources", lambda *a, **k: pytest.fail("samples were built"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    eval_file = synth_dir / "indoor_eval.jsonl"
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"method": "sft", "data": {"train": [{"path": str(eval_file)}],
                                                             "eval": [{"path": str(eval_file)}]}}))
    cases = [
        (["data", "render", exp, "--split", "eval", "--out", tmp_path / "afile"], "not a folder"),
        (["data", "render", exp, "--split", "eval", "--out", tmp_path / "afile" / "r"], "afile is a file"),
        (["data", "preview", "--data", eval_file, "--n", 2, "--out", tmp_path / "adir"], "a folder is there"),
        (["data", "preview", "--data", eval_file, "--n", 2, "--out", tmp_path / "afile" / "p.png"], "not a folder"),
        (["data", "check", synth_dir], "a folder"),
    ]
    for args, needle in cases:
        assert main([str(a) for a in args]) == 2, args
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
