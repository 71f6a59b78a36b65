"""Paper scale: the paper's image sizes end to end, recipes, global batch, sequence length, and several
processes over gloo (2 CPU ranks, as torchrun or accelerate launch start them on a GPU node)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_experiment
from rlkit.config import ConfigError, load_experiment

ROOT = Path(__file__).parent.parent
PAPER = ROOT / "experiments" / "paper"
PAPER_CAMERA = {"f_uni": 1000, "crop_width": [1000, 1400], "crop_height": [700, 1200], "multiple_of": 28}
RECIPES = {  # recipe: (global batch, lr, scheduler, grad clip, f_uni, per-device batch)
    "qwen2_5_vl_3b_sft": (1280, 5.2e-5, "cosine", 0.1, 1000, 10),
    "qwen2_5_vl_7b_sft": (1280, 1e-4, "cosine", 0.5, 1000, 5),
    "pixtral_12b_sft": (384, 5.6e-5, "cosine", 1.0, 750, 3),
    "qwen2_5_vl_3b_grpo": (32, 1e-5, "constant", 1.0, 1000, 8),
}


@pytest.fixture(scope="session")
def paper_synth_dir(tmp_path_factory):
    """Scenes whose unified images (f_uni 1000, 90-95 deg field of view) exceed the largest paper crop."""
    from rlkit.synth import CameraRange, generate_split

    out = tmp_path_factory.mktemp("paper_synth")
    cam = CameraRange(width=(320, 400), hfov_deg=(90.0, 95.0))
    for family in ("indoor", "outdoor"):
        generate_split(out, family, "train", 4, points_per_image=4, progress=False, camera=cam)
        generate_split(out, family, "eval", 2, points_per_image=4, progress=False, camera=cam)
    return out


def _experiment(tmp_path, data_dir, **over) -> Path:
    """conftest's experiment with 6 steps of 2 samples, a checkpoint every 3, 5 eval pixels per dataset."""
    train = {"max_steps": 6, "per_device_train_batch_size": 2, "save_steps": 3, **over.pop("train", {})}
    evaluation = {"samples_per_dataset": 5, "batch_size": 2, **over.pop("eval", {})}
    return write_experiment(tmp_path, data_dir, train=train, eval=evaluation, **over)


def _env():
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _rlkit(*args, launcher=(sys.executable, "-m", "rlkit"), timeout=900):
    return subprocess.run([*launcher, *map(str, args)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


TORCHRUN = (str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", "-m", "rlkit")


def _accelerate():
    return (str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
            str(PAPER / "accelerate" / "ddp.yaml"), "--num_processes", "2", "--mixed_precision", "no",
            "--main_process_port", _free_port(), "-m", "rlkit")


# ---------------------------------------------------------------- recipes and config


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_recipes_load_with_the_papers_numbers(name, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    exp = load_experiment(PAPER / f"{name}.yaml")
    batch, lr, schedule, clip, f_uni, per_device = RECIPES[name]
    assert exp.global_batch_size == batch
    assert exp.camera.f_uni == f_uni
    assert exp.camera.crop_width == (1000, 1400) and exp.camera.crop_height == (700, 1200)
    # the official code's inputs (utils/datasets.py): its arrow, prompt, resize and centered crop
    assert exp.prompt.marker.shape == "official_arrow" and exp.prompt.template == "official"
    assert (exp.camera.resize, exp.camera.crop) == ("official", "center")
    assert exp.model.dtype == "bfloat16" and exp.model.attn_implementation == "flash_attention_2"
    for world in (1, 8, 16):  # the global batch stays the paper's on any number of GPUs
        cfg = exp.trl_config(world_size=world)
        assert (cfg.learning_rate, cfg.lr_scheduler_type.value, cfg.max_grad_norm) == (lr, schedule, clip)
        completions = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
        assert completions == batch * (8 if exp.method == "grpo" else 1)
        assert cfg.per_device_train_batch_size == per_device and cfg.bf16 and cfg.gradient_checkpointing
    if exp.method == "sft":
        assert cfg.warmup_steps == 0.1 and cfg.max_length is None
    else:
        assert (cfg.num_generations, cfg.beta, exp.rewards) == (8, 0.0, ["neg_l1", "format"])


def test_global_batch_that_does_not_divide_names_the_numbers(tmp_path, synth_dir):
    from rlkit.run import check_experiment

    exp = load_experiment(_experiment(tmp_path, synth_dir, global_batch_size=10, train={"per_device_train_batch_size": 4}))
    with pytest.raises(ConfigError, match=r"global_batch_size: global_batch_size 10 = 10 completions per step, "
                                          r"per_device_train_batch_size 4 x world size 1 = 4 per micro-step"):
        check_experiment(exp)  # the plan's first step, before any scene or model
    exp = load_experiment(_experiment(tmp_path, synth_dir, global_batch_size=8,
                                      train={"per_device_train_batch_size": 4, "gradient_accumulation_steps": 3}))
    with pytest.raises(ConfigError, match="gradient_accumulation_steps 3 contradicts global_batch_size"):
        check_experiment(exp)
    exp = load_experiment(_experiment(tmp_path, synth_dir, global_batch_size=8,
                                      train={"per_device_train_batch_size": 2}))
    assert exp.trl_config(world_size=2).gradient_accumulation_steps == 2
    with pytest.raises(ConfigError, match="world size 3"):
        exp.trl_config(world_size=3)


def test_sft_max_length_defaults_to_no_truncation_and_a_short_one_fails_at_load(tmp_path, synth_dir):
    path = _experiment(tmp_path, synth_dir, camera=PAPER_CAMERA, model={"max_pixels": 1680000})
    assert load_experiment(path).trl_config().max_length is None  # TRL's 1024 would cut the image
    with pytest.raises(ConfigError, match=r"train.max_length 1024 cannot hold the largest training image: "
                                          r"a 1400 x 1176 crop is 2100 image tokens"):
        load_experiment(path, ["train.max_length=1024"])
    # with the tiny model's own bound (64 tokens) the same crops fit
    assert load_experiment(_experiment(tmp_path, synth_dir, camera=PAPER_CAMERA),
                           ["train.max_length=1024"]).trl_config().max_length == 1024


def test_max_length_is_checked_against_the_real_longest_sequence_before_training(tmp_path, paper_synth_dir):
    from rlkit.models import load_processor, ensure_model_path
    from rlkit.run import load_sources
    from rlkit.sft import check_longest_sequence, largest_train_image, longest_sequence

    exp = load_experiment(_experiment(tmp_path, paper_synth_dir, camera=PAPER_CAMERA, model={"max_pixels": 1680000}))
    processor = load_processor(ensure_model_path(exp.model), exp.model)
    sources = load_sources(exp, ("train",)).train
    assert largest_train_image(exp, sources) == (1400, 1176)  # crop sizes are multiples of 28
    n = longest_sequence(exp, processor, (1400, 1176))
    assert 2100 < n < 2100 + 200  # the image (50 x 42 merged patches) plus the words
    check_longest_sequence(exp, processor, sources, n)  # exactly enough
    with pytest.raises(ConfigError, match=rf"train.max_length {n - 1} is too short: .* is {n} tokens"):
        check_longest_sequence(exp, processor, sources, n - 1)


def test_mixed_image_sizes_in_one_batch_give_each_samples_own_loss(tmp_path, synth_dir):
    """Padding must not leak between samples of different image sizes (cf. trl#5785): per-sample
    losses of a mixed batch equal those of each sample alone."""
    import torch
    import torch.nn.functional as F

    from rlkit.builder import SFT_COLUMNS
    from rlkit.models import ensure_model_path
    from rlkit.run import build_stream, load_sources
    from rlkit.sft import make_trainer

    exp = load_experiment(_experiment(tmp_path, synth_dir, camera={"crop_width": [28, 140], "crop_height": [28, 140]}))
    stream = build_stream(exp, load_sources(exp, ("train",)))
    trainer = make_trainer(exp, ensure_model_path(exp.model), stream)
    rows = [{k: v for k, v in stream.rows().__next__().items() if k in SFT_COLUMNS}]
    i = 1
    while len(rows) < 3:  # three samples of three different image sizes
        row = {k: v for k, v in next(stream.rows(start=i)).items() if k in SFT_COLUMNS}
        i += 1
        if row["images"][0].size not in {r["images"][0].size for r in rows}:
            rows.append(row)
    model = trainer.model.eval()

    def losses(batch_rows):
        batch = trainer.data_collator([dict(r) for r in batch_rows])
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        labels = batch["labels"][:, 1:]
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100, reduction="none")
        return (ce.sum(1) / (labels != -100).sum(1)).tolist()

    alone = [losses([r])[0] for r in rows]
    together = losses(rows)
    assert len({r["images"][0].size for r in rows}) == 3
    assert together == pytest.approx(alone, rel=1e-4, abs=1e-5)


# ---------------------------------------------------------------- end to end at paper sizes


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_paper_image_sizes_train_and_evaluate(tmp_path, paper_synth_dir, method):
    over = {"camera": PAPER_CAMERA, "model": {"max_pixels": 1680000},
            "train": {"max_steps": 2, "save_steps": 100}, "eval": {"samples_per_dataset": 2, "batch_size": 2}}
    if method == "grpo":
        over |= {"method": "grpo", "prompt": {"template": "grpo"}, "rewards": ["neg_l1", "format"],
                 "train": {"max_steps": 2, "save_steps": 100, "per_device_train_batch_size": 4,
                           "num_generations": 4, "max_completion_length": 8, "beta": 0.0}}
    r = _rlkit(_experiment(tmp_path, paper_synth_dir, **over))
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["world_size"] == 1 and m["eval_samples"] == 4
    assert m["train_samples"] == (2 * 4 // 4 if method == "grpo" else 2 * 2)
    assert "image placeholder tokens" not in r.stderr


# ---------------------------------------------------------------- several processes


def _rows(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "predictions.csv", keep_default_na=False)


@pytest.mark.slow
def test_torchrun_two_ranks_sft_train_eval_and_resume(tmp_path, synth_dir):
    exp = _experiment(tmp_path, synth_dir, eval={"samples_per_dataset": 7, "batch_size": 3,
                                                 "during_training": {"every_steps": 3, "samples_per_dataset": 7}})
    run = tmp_path / "run"
    r = _rlkit(exp, launcher=TORCHRUN)
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["world_size"] == 2
    # the learning curve, evaluated by both ranks: its last point is the final evaluation (same selection)
    assert [p["step"] for p in m["curve"]] == [0, 3, 6] and [p["samples"] for p in m["curve"]] == [0, 12, 24]
    for ds in ("indoor", "outdoor", "avg"):
        assert m["curve"][-1][f"delta1/{ds}"] == pytest.approx(m["metrics"]["model"][ds]["delta1"])
        assert m["curve"][-1][f"abs_rel/{ds}"] == pytest.approx(m["metrics"]["model"][ds]["abs_rel"])
    assert m["train_samples"] == 6 * 2 * 2  # steps x per-device batch x ranks
    assert "global batch: 4 samples per optimizer step = per_device_train_batch_size 2 x " \
           "gradient_accumulation_steps 1 x 2 process(es)" in r.stderr
    # checkpoints written once (one trainer state, one weights file), at the global step
    for step in (3, 6):
        state = json.loads((run / f"checkpoint-{step}" / "trainer_state.json").read_text())
        assert state["global_step"] == step
        assert (run / f"checkpoint-{step}" / "model.safetensors").is_file()
    # every selected eval pixel exactly once, and the same answers as one process evaluating final/
    two = _rows(run)
    assert len(two) == 14 and not two.duplicated(["dataset", "image", "x", "y"]).any()
    r1 = _rlkit("eval", exp, "--out", tmp_path / "one")
    assert r1.returncode == 0, r1.stderr[-3000:]
    one = _rows(tmp_path / "one")
    pd.testing.assert_frame_equal(one, two)
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"] == m["metrics"]
    # resume after a kill after step 3: two ranks take checkpoint-3 and end at step 6 again
    for p in ("final", "checkpoint-6"):
        subprocess.run(["rm", "-r", str(run / p)], check=True)
    for p in ("metrics.json", "predictions.csv"):
        (run / p).unlink()
    r = _rlkit(exp, launcher=TORCHRUN)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stderr.count(f"resuming from {run}/checkpoint-3") == 2  # both ranks
    # the curve keeps its points up to the checkpoint and goes on from there
    assert pd.read_csv(run / "curve.csv")["step"].tolist() == [0, 3, 6]
    assert json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
    from transformers import AutoModelForImageTextToText

    assert AutoModelForImageTextToText.from_pretrained(run / "final").config.model_type == "qwen2_5_vl"


@pytest.mark.slow
def test_accelerate_launch_two_ranks_grpo_with_the_shipped_ddp_config(tmp_path, synth_dir):
    exp = _experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"}, rewards=["neg_l1", "format"],
                      global_batch_size=4,
                      train={"max_steps": 2, "save_steps": 100, "per_device_train_batch_size": 4,
                             "num_generations": 4, "max_completion_length": 8, "beta": 0.0})
    r = _rlkit(exp, launcher=_accelerate())
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["world_size"] == 2
    # 4 prompts x 4 completions per step = 16 completions = 4 per rank x 2 ranks x 2 accumulation steps
    assert "global batch: 4 samples (16 completions, groups of 4) per optimizer step" in r.stderr
    assert m["train_samples"] == 2 * 4
    assert len(_rows(tmp_path / "run")) == 10


RANK_SCRIPT = """
import json, sys
from accelerate.utils import gather_object
from rlkit.config import load_experiment
from rlkit.models import process_state
from rlkit.run import build_stream, load_sources, ensure_model
from rlkit.sft import make_trainer

state = process_state()
exp = load_experiment(sys.argv[1])
stream = build_stream(exp, load_sources(exp, ("train",)))
trainer = make_trainer(exp, ensure_model(exp, state), stream)
tok = trainer.processing_class.tokenizer
seen = []
for step, batch in zip(range(3), trainer.get_train_dataloader()):
    for row in batch["labels"]:
        seen.append((state.process_index, step, tok.decode(row[row != -100], skip_special_tokens=True).strip()))
seen = gather_object(seen)
if state.is_main_process:
    expected = [stream.sample(i).answer for i in range(3 * 2 * 2)]
    json.dump({"seen": seen, "expected": expected}, open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_two_ranks_draw_disjoint_training_samples(tmp_path, synth_dir):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    exp = _experiment(tmp_path, synth_dir)
    out = tmp_path / "seen.json"
    launcher = (str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2")
    r = _rlkit(script, exp, out, launcher=launcher)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(out.read_text())
    seen, expected = got["seen"], got["expected"]
    assert len(seen) == 12 and {rank for rank, _, _ in seen} == {0, 1}
    # together the ranks consume the stream's first 12 samples, each exactly once
    assert sorted(text for _, _, text in seen) == sorted(expected)
    # and disjointly: at step s rank k gets samples 4s + 2k and 4s + 2k + 1 of the stream
    for rank, step in {(rank, step) for rank, step, _ in seen}:
        texts = [text for r, s, text in seen if (r, s) == (rank, step)]
        assert texts == expected[4 * step + 2 * rank: 4 * step + 2 * rank + 2], (rank, step)


def test_vllm_gets_the_training_pixel_bounds(monkeypatch):
    import importlib.util

    from rlkit.cli import vllm_pixel_args
    from rlkit.grpo import check_vllm

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))

    exp = load_experiment(PAPER / "qwen2_5_vl_3b_grpo.yaml")
    assert vllm_pixel_args(exp.model) == ["--mm-processor-kwargs", '{"min_pixels": 3136, "max_pixels": 1685600}']
    # Pixtral's processor takes a longest edge: the recipe's keeps the largest crop (1400 px) whole
    pixtral = load_experiment(PAPER / "pixtral_12b_sft.yaml")
    assert vllm_pixel_args(pixtral.model) == ["--mm-processor-kwargs", '{"size": {"longest_edge": 1400}}']
    # colocate: Taskonomy is fed whole (train_crop false, as the official code does), so the bounds may shrink
    # one of its images and a colocated vLLM would see it otherwise: refused
    with pytest.raises(ConfigError, match="not passed to a colocated vLLM; use train.vllm_mode=server"):
        check_vllm(load_experiment(PAPER / "qwen2_5_vl_3b_grpo.yaml", ["train.use_vllm=true"]))
    # with cropped sets only, the bounds change no 1000-1400 x 700-1200 crop: only the missing vLLM stops it
    cropped = "data.train=[{path: data/depthlmbench/hm3d/train.jsonl, name: hm3d}]"
    with pytest.raises(ConfigError, match="vLLM is not installed"):
        check_vllm(load_experiment(PAPER / "qwen2_5_vl_3b_grpo.yaml", ["train.use_vllm=true", cropped]))
    # bounds that shrink a crop would differ between training and a colocated vLLM
    with pytest.raises(ConfigError, match="not passed to a colocated vLLM; use train.vllm_mode=server"):
        check_vllm(load_experiment(PAPER / "qwen2_5_vl_3b_grpo.yaml", ["train.use_vllm=true", "model.max_pixels=1000000"]))
