"""The Pixtral/LLaVA family through the same code path as Qwen2.5-VL, on the offline tiny-pixtral.

Fast tests check the family table (image-size arguments, image-token arithmetic, the chat template) and the
official train.py's Pixtral switches (model.official_switches: the processor's flags and pixel values, the
vision tower's attention, one training step with reentrant checkpointing); the slow ones run SFT, GRPO and eval
end to end through ``python -m rlkit`` on the CPU, with and without those switches.
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
from rlkit.models import FAMILIES, PIXTRAL_OFFICIAL, family_from_name, load_model, load_processor, ensure_model_path
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


# ------------------------------------------------------------------ the official train.py's Pixtral switches
# facebookresearch/DepthLM_Official train.py (commit 7169b49): processor do_resize / do_rescale off (630-631), each
# training image through qwen_vl_utils.process_vision_info first (479), {"text_config": "flash_attention_2",
# "vision_config": "eager"} (658-661), enable_input_require_grads + use_reentrant True (690-693)


def qwen_vl_utils_smart_resize(height, width, factor=28, min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28):
    """qwen_vl_utils' smart_resize, restated literally (vision_process.py), independently of rlkit."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = (height * width / max_pixels) ** 0.5
        h_bar, w_bar = (int(v / beta // factor) * factor for v in (height, width))
    elif h_bar * w_bar < min_pixels:
        beta = (min_pixels / (height * width)) ** 0.5
        h_bar, w_bar = (-int(-(v * beta) // factor) * factor for v in (height, width))
    return h_bar, w_bar


def official_pixel_values(image: Image.Image, image_processor):
    """collate_fn_pixtral's pixels: fetch_image (RGB, smart_resize, PIL's default filter), then the processor
    with do_resize and do_rescale off: normalized from the 0-255 range, (C, H, W)."""
    import numpy as np

    h, w = qwen_vl_utils_smart_resize(image.height, image.width)
    resized = image.convert("RGB").resize((w, h))
    mean, std = (np.asarray(v, np.float32) for v in (image_processor.image_mean, image_processor.image_std))
    return resized, ((np.asarray(resized, np.float32) - mean) / std).transpose(2, 0, 1)


def test_official_switches_are_one_family_entry_and_an_experiment_option():
    assert PIXTRAL.official is PIXTRAL_OFFICIAL
    assert (PIXTRAL_OFFICIAL.processor_off, PIXTRAL_OFFICIAL.pre_resize_factor, PIXTRAL_OFFICIAL.vision_attn,
            PIXTRAL_OFFICIAL.reentrant_checkpointing) == (("do_resize", "do_rescale"), 28, "eager", True)
    assert all(FAMILIES[k].official is None for k in ("qwen2_5_vl", "qwen2_vl", "llava"))
    base = ROOT / "experiments/sft_tiny_pixtral.yaml"
    assert not load_experiment(base).model.official_switches  # off unless asked: the checkpoint's processor
    assert load_experiment(base, ["model.official_switches=true"]).model.official_switches
    # the 12B recipe turns them on, over the paper's LM attention
    paper = load_experiment(ROOT / "experiments/paper/pixtral_12b_sft.yaml")
    assert paper.model.official_switches and paper.model.attn_implementation == "flash_attention_2"
    assert PIXTRAL_OFFICIAL.attn_implementation("flash_attention_2") == {"text_config": "flash_attention_2",
                                                                          "vision_config": "eager"}
    with pytest.raises(ConfigError, match="no switches of its own for tiny-qwen2.5-vl"):
        load_experiment(ROOT / "experiments/sft_synthetic.yaml", ["model.official_switches=true"])
    with pytest.raises(ConfigError, match="official_switches with train.use_vllm"):
        load_experiment(base, ["model.official_switches=true", "train.use_vllm=true"])
    with pytest.raises(ConfigError, match="min_pixels 5000 is above model.max_pixels 4000"):
        load_experiment(base, ["model.official_switches=true", "model.min_pixels=5000", "model.max_pixels=4000"])
    with pytest.raises(ConfigError, match="must be true or false"):
        load_experiment(base, ["model.official_switches=3"])
    # TRL's checkpointing kwargs: the workaround's unless train: names them (either name)
    assert PIXTRAL_OFFICIAL.trl_defaults({}) == {"gradient_checkpointing_kwargs": {"use_reentrant": True}}
    assert PIXTRAL_OFFICIAL.trl_defaults({"gradient_checkpointing_kwargs": {"use_reentrant": False}}) == {}
    assert PIXTRAL_OFFICIAL.trl_defaults({"activation_checkpointing_kwargs": {}}) == {}


def test_official_pre_resize_is_qwen_vl_utils_and_bounds_the_token_count():
    cfg = ModelConfig(name=TINY_PIXTRAL_NAME, official_switches=True)
    for w, h in [(150, 100), (1400, 1200), (1000, 700), (1113, 851), (70, 14), (20, 20), (5000, 4000)]:
        sh, sw = qwen_vl_utils_smart_resize(h, w)
        assert PIXTRAL_OFFICIAL.pre_resized_size(w, h, cfg) == (sw, sh)
        assert PIXTRAL.train_image_tokens(w, h, cfg) == (sh // 16) * (sw // 16 + 1)  # whole 16-px patches only
    assert PIXTRAL_OFFICIAL.pre_resized_size(1400, 1200, cfg) == (1400, 1204)  # the paper's largest crop
    # model.min_pixels / max_pixels bound the pre-resize (qwen_vl_utils' per-image min_pixels / max_pixels)
    bounded = ModelConfig(name=TINY_PIXTRAL_NAME, official_switches=True, max_pixels=56 * 56)
    assert PIXTRAL_OFFICIAL.pre_resized_size(150, 100, bounded) == tuple(
        reversed(qwen_vl_utils_smart_resize(100, 150, max_pixels=56 * 56)))
    # without the switches: the processor's own resize (longest edge, rounded up to whole patches)
    assert PIXTRAL.train_image_tokens(150, 100, ModelConfig(name=TINY_PIXTRAL_NAME)) == pixtral_tokens(150, 100)
    # an SFT max_length too short for the largest crop counts the pre-resized crop's tokens
    with pytest.raises(ConfigError, match=r"a (\d+) x (\d+) crop is (\d+) image tokens") as e:
        load_experiment(ROOT / "experiments/sft_tiny_pixtral.yaml",
                        ["train.max_length=60", "model.official_switches=true"])
    w, h, n = map(int, re.search(r"a (\d+) x (\d+) crop is (\d+) image tokens", str(e.value)).groups())
    sh, sw = qwen_vl_utils_smart_resize(h, w)
    assert n == (sh // 16) * (sw // 16 + 1)


def test_official_processor_takes_the_pre_resized_image_unscaled(tiny):
    import numpy as np

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8))
    cfg = ModelConfig(name=tiny, official_switches=True)
    processor = load_processor(tiny, cfg)
    ip = processor.image_processor
    assert (ip.do_resize, ip.do_rescale, ip.do_normalize) == (False, False, True)
    calls = []
    inner = ip._preprocess

    def spy(images, **kw):  # the flags the processor's preprocessing runs with
        calls.append({k: kw[k] for k in ("do_resize", "do_rescale", "do_normalize")})
        return inner(images, **kw)

    ip._preprocess = spy
    pre = PIXTRAL_OFFICIAL.pre_resize(image, cfg)
    resized, expected = official_pixel_values(image, ip)
    assert pre.size == resized.size == (140, 112) and np.array_equal(np.asarray(pre), np.asarray(resized))
    enc = processor(images=[pre], text=["[IMG]"], return_tensors="pt")
    assert calls == [{"do_resize": False, "do_rescale": False, "do_normalize": True}]
    assert enc["image_sizes"].tolist() == [[112, 140]]  # as given: no resize, no rounding to 16 px
    assert np.allclose(enc["pixel_values"][0].numpy(), expected, atol=1e-4)
    assert enc["pixel_values"].max() > 100  # 0-255 values normalized: no 1/255
    ids = enc["input_ids"][0].tolist()  # 112 // 16 = 7 rows of 140 // 16 = 8 patches
    assert sum(ids.count(t) for t in processor.image_token_ids) == 7 * (8 + 1) == \
        PIXTRAL.train_image_tokens(150, 100, cfg)
    # the same checkpoint without the switches: the processor resizes (whole patches) and rescales
    plain = load_processor(tiny, ModelConfig(name=tiny))(images=[image], text=["[IMG]"], return_tensors="pt")
    assert plain["image_sizes"].tolist() == [[112, 160]] and plain["pixel_values"].max() < 3


@pytest.mark.parametrize("asked, lm", [(None, "sdpa"), ("sdpa", "sdpa"), ("eager", "eager"),
                                       ("varlen", "rlkit_flash_varlen")])
def test_official_vision_tower_attends_eager_and_the_lm_as_asked(tiny, monkeypatch, asked, lm):
    import torch
    from transformers.models.mistral import modeling_mistral
    from transformers.models.pixtral import modeling_pixtral

    model = load_model(tiny, ModelConfig(name=tiny, official_switches=True, attn_implementation=asked))
    assert model.config.vision_config._attn_implementation == "eager"
    assert model.config.text_config._attn_implementation == lm
    tower, lm_model = model.model.vision_tower, model.model.language_model
    assert {layer.attention.config._attn_implementation for layer in tower.transformer.layers} == {"eager"}
    assert {layer.self_attn.config._attn_implementation for layer in lm_model.layers} == {lm}
    # the vision tower's attention runs through Pixtral's eager function, once per layer
    counts = {"pixtral": 0, "mistral": 0}
    for name, module in (("pixtral", modeling_pixtral), ("mistral", modeling_mistral)):
        def counted(*a, _inner=module.eager_attention_forward, _name=name, **k):
            counts[_name] += 1
            return _inner(*a, **k)
        monkeypatch.setattr(module, "eager_attention_forward", counted)
    processor = load_processor(tiny, ModelConfig(name=tiny, official_switches=True))
    enc = processor(images=[Image.new("RGB", (56, 56))], text=["[IMG]d"], return_tensors="pt")
    with torch.no_grad():
        model(**enc)
    assert counts == {"pixtral": TinyPixtralSpec().vision_layers,
                      "mistral": TinyPixtralSpec().text_layers if lm == "eager" else 0}
    # without the switches the tower attends as the LM does (unchanged)
    plain = load_model(tiny, ModelConfig(name=tiny, attn_implementation=asked))
    assert plain.config.vision_config._attn_implementation == plain.config.text_config._attn_implementation == lm


def test_official_training_pre_resizes_and_checkpoints_reentrant(tmp_path, synth_dir, tiny):
    """One SFT step through the kit's trainer with the switches: the rows' images pre-resized, the batch unscaled,
    TRL's checkpointing reentrant with input grads, and the backward reaching the LM's and the tower's layers."""
    import numpy as np
    import torch

    from rlkit.run import build_stream, load_sources
    from rlkit.sft import make_trainer

    exp = load_experiment(_experiment(tmp_path, synth_dir, model={"official_switches": True},
                                      train={"max_steps": 1, "per_device_train_batch_size": 2, "save_steps": 10,
                                             "gradient_checkpointing": True}))
    trainer = make_trainer(exp, tiny, build_stream(exp, load_sources(exp)))
    assert trainer.args.gradient_checkpointing and trainer.args.gradient_checkpointing_kwargs == {"use_reentrant": True}
    rows = [row for _, row in zip(range(4), trainer.train_dataset)]
    assert all(w % 28 == 0 and h % 28 == 0 for row in rows for w, h in (im.size for im in row["images"]))
    batch = next(iter(trainer.get_train_dataloader()))
    assert all(h % 28 == 0 and w % 28 == 0 for h, w in batch["image_sizes"].tolist())
    assert batch["pixel_values"].max() > 100  # no 1/255
    model = trainer.model
    watched = {"lm": model.model.language_model.layers[0].mlp.up_proj.weight,
               "tower": model.model.vision_tower.transformer.layers[0].feed_forward.up_proj.weight}
    before = {k: v.detach().clone() for k, v in watched.items()}
    trainer.train()
    layer = model.model.language_model.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords == {"use_reentrant": True}
    assert model._require_grads_hooks  # enable_input_require_grads: reentrant checkpointing needs an input with grads
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])
    for name, w in watched.items():
        assert not torch.equal(before[name], w.detach()), f"no gradient reached the {name}'s first layer"


# ------------------------------------------------------------------ end to end (slow)


def _check_final(run: Path, official: bool = False):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(run / "final")
    assert model.config.model_type == "llava" and type(model).__name__ == "LlavaForConditionalGeneration"
    processor = AutoProcessor.from_pretrained(run / "final")
    assert type(processor).__name__ == "PixtralProcessor"
    # the official switches' processor is saved as train.py:767 saves it: no resize, no rescale
    ip = processor.image_processor
    assert (ip.do_resize, ip.do_rescale) == ((False, False) if official else (True, True))
    enc = processor(images=[Image.new("RGB", (64, 48))], text=["[IMG]"], return_tensors="pt")
    assert sum(enc["input_ids"][0].tolist().count(t) for t in processor.image_token_ids) == pixtral_tokens(64, 48) == 15


@pytest.mark.slow
@pytest.mark.parametrize("official", [False, True], ids=["kit", "official_switches"])
def test_sft_two_steps_then_eval(tmp_path, synth_dir, tiny, official):
    exp = _experiment(tmp_path, synth_dir, model={"official_switches": official},
                      train={"max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 2})
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
    _check_final(run, official)
    # the saved checkpoint evaluates again through `rlkit eval`, with the same answers
    r2 = _run("eval", exp, "--out", tmp_path / "again")
    assert r2.returncode == 0, r2.stderr[-3000:]
    again = pd.read_csv(tmp_path / "again" / "predictions.csv")
    assert again["text"].fillna("").tolist() == preds["text"].fillna("").tolist()


@pytest.mark.slow
@pytest.mark.parametrize("official", [False, True], ids=["kit", "official_switches"])
def test_grpo_two_steps(tmp_path, synth_dir, tiny, official):
    spy_log = tmp_path / "spy.jsonl"
    exp = _experiment(tmp_path, synth_dir, method="grpo", prompt={"template": "grpo"},
                      model={"official_switches": official},
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
    _check_final(run, official)
