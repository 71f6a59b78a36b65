"""The Pixtral/LLaVA family through the same code path as Qwen2.5-VL, on the offline tiny-pixtral.

Fast tests check the family table (image-size arguments, image-token arithmetic, the chat template);
the slow ones run SFT, GRPO and eval end to end through ``python -m rlkit`` on the CPU.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from conftest import write_experiment
from rlkit.config import ConfigError, load_experiment
from rlkit.schema import ModelConfig
from rlkit.models import FAMILIES, family_from_name, load_processor, ensure_model_path
from rlkit.tiny import TINY_PIXTRAL_NAME, TinyPixtralSpec, ensure_tiny_model

ROOT = Path(__file__).parent.parent
CACHE = ROOT / ".cache/models"
PIXTRAL = FAMILIES["pixtral"]
# 16-px patches, no merging: crops of whole patches (48-64 px: 3-4 x 3-4 patches)
CAMERA = {"f_uni": 60, "crop_width": [48, 64], "crop_height": [48, 64], "multiple_of": 16}


def pixtral_tokens(width: int, height: int) -> int:
    """Pixtral's arithmetic: rows x cols [IMG]s, an [IMG_BREAK] ending each row but the last, [IMG_END] the last."""
    rows, cols = -(-height // 16), -(-width // 16)
    return rows * (cols + 1)


@pytest.fixture(scope="module")
def tiny():
    return str(ensure_tiny_model(CACHE, TinyPixtralSpec()))


def _run(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _experiment(tmp_path, synth_dir, **over):
    model = {"name": TINY_PIXTRAL_NAME, **over.pop("model", {})}
    return write_experiment(tmp_path, synth_dir, model=model, camera=CAMERA, **over)


# ------------------------------------------------------------------ family table, processor, template


def test_tiny_pixtral_resolves_builds_once_and_is_a_llava_checkpoint(tiny):
    from transformers import AutoConfig

    cfg = ModelConfig(name=TINY_PIXTRAL_NAME, cache_dir=str(CACHE))
    assert ensure_model_path(cfg) == tiny  # the cached build, keyed by the spec
    config = AutoConfig.from_pretrained(tiny)
    assert (config.model_type, config.vision_config.model_type, config.text_config.model_type) == \
        ("llava", "pixtral", "mistral")
    assert config.vision_config.patch_size == 16
    assert family_from_name(TINY_PIXTRAL_NAME) is PIXTRAL
    assert family_from_name("mistral-community/pixtral-12b") is PIXTRAL
    # model.tiny sizes the model named; another spec builds another folder
    other = ensure_model_path(ModelConfig(name=TINY_PIXTRAL_NAME, cache_dir=str(CACHE), tiny={"longest_edge": 96}))
    assert other != tiny and Path(other).name.startswith("tiny-pixtral-")
    assert json.loads((Path(other) / "rlkit_tiny.json").read_text())["longest_edge"] == 96


@pytest.mark.parametrize("size", [(64, 48), (48, 64), (80, 32), (16, 16)])
def test_image_tokens_follow_pixtral_arithmetic(tiny, size):
    processor = load_processor(tiny, ModelConfig(name=tiny))
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "d"}]}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    enc = processor(images=[Image.new("RGB", size)], text=[text], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    w, h = size
    rows, cols = h // 16, w // 16
    assert ids.count(processor.image_token_id) == rows * cols
    assert ids.count(processor.image_break_token_id) == rows - 1
    assert ids.count(processor.image_end_token_id) == 1
    n = sum(ids.count(t) for t in processor.image_token_ids)
    assert n == pixtral_tokens(w, h) == PIXTRAL.max_image_tokens(w, h, None)
    # the image tokens come as one block: row after row, [IMG_END] last
    first = ids.index(processor.image_token_id)
    row = [processor.image_token_id] * cols
    assert ids[first:first + n] == (row + [processor.image_break_token_id]) * (rows - 1) + row + \
        [processor.image_end_token_id]
    assert enc["image_sizes"].tolist() == [[h, w]]


def test_max_pixels_maps_to_longest_edge_and_min_pixels_is_refused(tiny):
    # model.max_pixels N: the longer side is scaled down to isqrt(N), so no image keeps more than N pixels
    processor = load_processor(tiny, ModelConfig(name=tiny, max_pixels=48 * 48 + 90))
    assert processor.image_processor.size.longest_edge == 48
    enc = processor(images=[Image.new("RGB", (96, 64))], text=["[IMG]"], return_tensors="pt")
    assert enc["image_sizes"].tolist() == [[32, 48]]  # 96 x 64 scaled by 1/2: 2 rows x 3 columns of patches
    assert PIXTRAL.max_image_tokens(96, 64, 48 * 48 + 90) == 2 * (3 + 1)
    assert PIXTRAL.max_image_tokens(96, 64, None) == pixtral_tokens(96, 64)
    # unset: the checkpoint's (the built-in longest_edge)
    assert load_processor(tiny, ModelConfig(name=tiny)).image_processor.size.longest_edge == \
        TinyPixtralSpec().longest_edge
    with pytest.raises(ValueError, match="model.min_pixels does not apply to pixtral.*never upscales"):
        load_processor(tiny, ModelConfig(name=tiny, min_pixels=1024))


def test_builder_rows_render_image_first_through_the_pixtral_template(tiny, caplog):
    from rlkit.builder import to_row
    from rlkit.camera import Camera
    from rlkit.prompts import Query

    processor = load_processor(tiny, ModelConfig(name=tiny))
    assert processor.tokenizer.padding_side == "left"
    assert "cannot render" not in caplog.text and processor.chat_template == PIXTRAL.chat_template  # its own
    q = Query("depth", Camera(60, 60, 32, 24, 64, 48), 10, 20, 2.5)
    sample = SimpleNamespace(query=q, images=[Image.new("RGB", (64, 48))], question="How far?", answer="2.50",
                             record=SimpleNamespace(dataset="indoor", image="x.png", depth=[2.5]), label=0)
    row = to_row(sample)
    prompt = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    assert prompt == "<s>[INST][IMG]How far?[/INST]"
    assert full == prompt + "2.50</s>"  # the completion is the rendered suffix (TRL's prompt-completion split)
    # the text chunk placed first still renders after the image (mistral_common's layout); old "content" keys read
    swapped = [{"role": "user", "content": [{"type": "text", "content": "How far?"}, {"type": "image"}]}]
    assert processor.apply_chat_template(swapped, tokenize=False, add_generation_prompt=True) == prompt


def test_old_pixtral_template_is_replaced_by_the_family_one(tiny, tmp_path, caplog):
    # mistral-community/pixtral-12b's first template: text under chunk["content"], answer as a string only
    import shutil

    old = ('{{- bos_token }}{%- for message in messages %}{%- if message["role"] == "user" %}{{- "[INST]" }}'
           '{%- for chunk in message["content"] %}{%- if chunk["type"] == "text" %}{{- chunk["content"] }}'
           '{%- elif chunk["type"] == "image" %}{{- "[IMG]" }}{%- endif %}{%- endfor %}{{- "[/INST]" }}'
           '{%- elif message["role"] == "assistant" %}{{- message["content"] + eos_token}}{%- endif %}{%- endfor %}')
    ckpt = tmp_path / "old"
    shutil.copytree(tiny, ckpt)
    (ckpt / "chat_template.jinja").write_text(old)
    processor = load_processor(str(ckpt), ModelConfig(name=str(ckpt)))
    assert "cannot render the kit's rows" in caplog.text
    assert processor.chat_template == PIXTRAL.chat_template


def test_tiny_sizes_are_checked_against_the_named_model(tmp_path):
    exp = load_experiment(ROOT / "experiments/sft_tiny_pixtral.yaml")
    assert exp.model.name == TINY_PIXTRAL_NAME and exp.camera.multiple_of == 16
    assert exp.model.tiny  # the SFT default's vision sizes, with the same names in TinyPixtralSpec
    with pytest.raises(ConfigError, match=r"model.tiny: unknown field 'min_pixels'.*\(sizes of tiny-pixtral\)"):
        load_experiment(ROOT / "experiments/sft_tiny_pixtral.yaml", ["model.tiny={min_pixels: 100}"])
    with pytest.raises(ConfigError, match=r"model.tiny: unknown field 'longest_edge'.*\(sizes of tiny-qwen2.5-vl\)"):
        load_experiment(ROOT / "experiments/sft_synthetic.yaml", ["model.tiny={longest_edge: 100}"])
    # an SFT max_length too short for the largest crop, from Pixtral's arithmetic (not Qwen's 28-px tokens):
    # e.g. 140 x 120 is 9 columns x 8 rows of patches (rounded up), plus a break or end per row
    assert pixtral_tokens(140, 120) == 8 * (9 + 1) and pixtral_tokens(128, 112) == 7 * (8 + 1)
    with pytest.raises(ConfigError, match=r"a (\d+) x (\d+) crop is (\d+) image tokens") as e:
        load_experiment(ROOT / "experiments/sft_tiny_pixtral.yaml", ["train.max_length=60"])
    w, h, n = map(int, re.search(r"a (\d+) x (\d+) crop is (\d+) image tokens", str(e.value)).groups())
    assert (w, h) in {(140, 120), (128, 112)} and n == pixtral_tokens(w, h)  # the range's top, or its top multiple of 16


# ------------------------------------------------------------------ end to end (slow)


def _check_final(run: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(run / "final")
    assert model.config.model_type == "llava" and type(model).__name__ == "LlavaForConditionalGeneration"
    processor = AutoProcessor.from_pretrained(run / "final")
    assert type(processor).__name__ == "PixtralProcessor"
    enc = processor(images=[Image.new("RGB", (64, 48))], text=["[IMG]"], return_tensors="pt")
    assert sum(enc["input_ids"][0].tolist().count(t) for t in processor.image_token_ids) == pixtral_tokens(64, 48) == 15


@pytest.mark.slow
def test_sft_two_steps_then_eval(tmp_path, synth_dir, tiny):
    exp = _experiment(tmp_path, synth_dir, train={"max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 2})
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 1
    assert metrics["train_samples"] == 4  # 2 steps x 2
    assert set(metrics["metrics"]["model"]) == {"indoor", "outdoor", "avg"}
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == 12 and list(preds["dataset"].value_counts().sort_index()) == [6, 6]
    assert json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    _check_final(run)
    # the saved checkpoint evaluates again through `rlkit eval`, with the same answers
    r2 = _run("eval", exp, "--out", tmp_path / "again")
    assert r2.returncode == 0, r2.stderr[-3000:]
    again = pd.read_csv(tmp_path / "again" / "predictions.csv")
    assert again["text"].fillna("").tolist() == preds["text"].fillna("").tolist()


@pytest.mark.slow
def test_grpo_two_steps(tmp_path, synth_dir, tiny):
    spy_log = tmp_path / "spy.jsonl"
    exp = _experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"},
                      rewards=["tests/fixtures/spy_reward.py:spy", "neg_l1", "format"],
                      reward_kwargs={"tests/fixtures/spy_reward.py:spy": {"log_path": str(spy_log)}},
                      train={"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
                             "max_completion_length": 8, "learning_rate": 1e-5, "beta": 0.0, "save_steps": 2,
                             "logging_steps": 1, "report_to": "none", "disable_tqdm": True},
                      eval={"samples_per_dataset": 3, "batch_size": 6, "max_new_tokens": 8})
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    calls = [json.loads(line) for line in spy_log.read_text().splitlines()]
    assert len(calls) == 2 and all(c["n"] == 4 for c in calls)
    assert all(len(set(c["depth"])) == 1 and c["depth"][0] > 0 for c in calls)  # one prompt per group
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["train_samples"] == 2  # 2 steps x 4 completions / groups of 4
    assert len(pd.read_csv(run / "predictions.csv")) == 6
    _check_final(run)
