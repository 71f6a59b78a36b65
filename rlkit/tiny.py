"""The embedded models: a small random-init Qwen2.5-VL (the default) and Pixtral, built offline.

``build_tiny`` writes an ordinary checkpoint folder (config, weights, tokenizer, chat
template, Qwen2.5-VL image processor) that is then loaded exactly like
``Qwen/Qwen2.5-VL-3B-Instruct``: the same Auto classes, the same processor, the same trainers.
``build_tiny_pixtral`` does the same for ``mistral-community/pixtral-12b``'s layout: a LLaVA
checkpoint with a Pixtral vision tower, a Mistral LM and Pixtral's processor.

The tokenizers are byte-level BPEs trained on the kit's own prompt and answer texts, with
each family's chat and vision special tokens, and digits always split one per token (as in Qwen).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from rlkit.chat_templates import PIXTRAL_CHAT_TEMPLATE, QWEN_TINY_CHAT_TEMPLATE
from rlkit.checkpoints import check_model_folder
from rlkit.errors import ConfigError

log = logging.getLogger(__name__)

TINY_NAME = "tiny-qwen2.5-vl"
TINY_PIXTRAL_NAME = "tiny-pixtral"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
PIXTRAL_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "<pad>"]


@dataclass(frozen=True)
class _TinySizes:
    """The sizes both tiny models share (one experiment's model.tiny sizes either model)."""

    text_layers: int = 2
    text_hidden: int = 128
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 384
    vision_layers: int = 2
    vision_hidden: int = 64
    vision_heads: int = 4
    vision_intermediate: int = 192
    vocab_size: int = 512
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class TinySpec(_TinySizes):
    """Sizes of the embedded default. Changing any field builds (and caches) a new model."""

    name: ClassVar[str] = TINY_NAME
    family: ClassVar[str] = "qwen2_5_vl"  # its rlkit.models.FAMILIES entry
    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 64


@dataclass(frozen=True)
class TinyPixtralSpec(_TinySizes):
    """Sizes of the tiny Pixtral (model.name tiny-pixtral)."""

    name: ClassVar[str] = TINY_PIXTRAL_NAME
    family: ClassVar[str] = "pixtral"
    longest_edge: int = 224  # the image processor's size {"longest_edge": N}: a longer image side is scaled to N

    @property
    def max_pixels(self) -> int:
        """The most pixels an image keeps (a square one), as model.max_pixels would say it."""
        return self.longest_edge ** 2


TINY_SPECS = {spec.name: spec for spec in (TinySpec, TinyPixtralSpec)}  # model.name -> its sizes

def _corpus(seed: int = 0) -> list[str]:
    """Texts the tokenizer is trained on: every prompt and answer template of the kit."""
    from rlkit.camera import Camera
    from rlkit.prompts import Query, answer, question

    rng = np.random.default_rng(seed)
    texts = ["0123456789 .,()=<>-+/:", "First think about it. The distance is about"]
    for _ in range(300):
        cam = Camera(*(float(v) for v in rng.uniform(50, 1500, 4)), int(rng.integers(50, 2000)), int(rng.integers(50, 2000)))
        q = Query(str(rng.choice(["depth", "axis_depth"])), cam, int(rng.integers(0, 2000)), int(rng.integers(0, 2000)),
                  float(rng.uniform(0.1, 100)))
        for strategy in ("unify_focal", "intrinsics_in_prompt", "predict_rays"):
            for template in ("sft", "grpo"):
                for reference in ("marker", "text"):
                    texts.append(question(q, reference=reference, strategy=strategy, template=template))
                texts.append(answer(q, strategy=strategy, template=template))
                texts.append("<think>The point is on the floor, near the wall.</think>")
    return texts


def build_tokenizer(vocab_size: int = 512, seed: int = 0, special_tokens: list[str] = SPECIAL_TOKENS,
                    chat_template: str = QWEN_TINY_CHAT_TEMPLATE, roles: dict | None = None):
    """``roles``: the tokenizer's special-token arguments (eos_token, pad_token, ...); default Qwen's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(seed), trainer)
    roles = roles or {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                      "extra_special_tokens": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    fast.chat_template = chat_template
    return fast


def build_tiny(out_dir: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Build the tiny model into ``out_dir`` (atomically: a half-built folder never appears)."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    out_dir = Path(out_dir)
    tmp = _build_dir(out_dir)
    tokenizer = build_tokenizer(spec.vocab_size, spec.seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half = spec.text_hidden // spec.text_heads // 2  # rotary frequencies per head, split over (t, h, w)
    hw = (half - half // 4) // 2
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=spec.text_intermediate,
            num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
            num_key_value_heads=spec.text_kv_heads, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [half - 2 * hw, hw, hw]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=spec.vision_layers, hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
            num_heads=spec.vision_heads, out_hidden_size=spec.text_hidden, window_size=112,
            fullatt_block_indexes=[spec.vision_layers - 1], patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TINY_CHAT_TEMPLATE)
    return _save_built(model, processor, spec, tmp, out_dir)


def build_tiny_pixtral(out_dir: str | Path, spec: TinyPixtralSpec = TinyPixtralSpec()) -> Path:
    """The tiny Pixtral into ``out_dir`` (atomically), laid out as mistral-community/pixtral-12b: a LLaVA
    config (model_type llava) with a Pixtral vision tower (16-px patches, no merging) and a Mistral LM."""
    import torch
    from transformers import (LlavaConfig, LlavaForConditionalGeneration, MistralConfig, PixtralImageProcessor,
                              PixtralProcessor, PixtralVisionConfig)

    out_dir = Path(out_dir)
    tmp = _build_dir(out_dir)
    template = PIXTRAL_CHAT_TEMPLATE
    tokenizer = build_tokenizer(spec.vocab_size, spec.seed, PIXTRAL_SPECIAL_TOKENS, template,
                                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in PIXTRAL_SPECIAL_TOKENS}
    config = LlavaConfig(
        text_config=MistralConfig(
            vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=spec.text_intermediate,
            num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
            num_key_value_heads=spec.text_kv_heads, head_dim=spec.text_hidden // spec.text_heads,
            max_position_embeddings=4096, sliding_window=None, tie_word_embeddings=True,
            bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"],
        ),
        vision_config=PixtralVisionConfig(
            hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
            num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
            image_size=1024, patch_size=16, hidden_act="silu",  # image_size: the 2-D rope's extent, as Pixtral's
        ),
        image_token_index=ids["[IMG]"], projector_hidden_act="gelu", vision_feature_layer=-1,
        vision_feature_select_strategy="full", tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.bos_token_id = ids["<s>"]
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    image_processor = PixtralImageProcessor(size={"longest_edge": spec.longest_edge},
                                            patch_size={"height": 16, "width": 16})
    processor = PixtralProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=16,
                                 spatial_merge_size=1, chat_template=template)
    return _save_built(model, processor, spec, tmp, out_dir)


BUILDERS = {TinySpec: build_tiny, TinyPixtralSpec: build_tiny_pixtral}


def ensure_tiny_model(cache_dir: str | Path, spec: TinySpec | TinyPixtralSpec = TinySpec()) -> Path:
    """The cached tiny checkpoint for this spec (of either tiny model), built on first use."""
    path = Path(cache_dir) / f"{spec.name}-{spec.key()}"
    if path.exists():
        try:
            check_model_folder(path, "tiny model cache")
            return path
        except ConfigError as e:  # cut short or damaged: built again, never a failure on every run
            log.warning("%s; building it again", e)
    BUILDERS[type(spec)](path, spec)
    return path


def _build_dir(out_dir: Path) -> Path:
    """A folder of this build's own beside the cache entry (two builders of one model never share one); build
    folders left by a killed builder more than an hour ago are removed."""
    import tempfile
    import time

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for old in out_dir.parent.glob(f"{out_dir.name}.tmp*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.tmp", dir=out_dir.parent))


def _save_built(model, processor, spec, tmp: Path, out_dir: Path) -> Path:
    """Write a built tiny model into tmp, then rename it into place: the cache never holds half a model. When
    another builder put the same model (the build is deterministic) there first, its copy is kept."""
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "rlkit_tiny.json").write_text(json.dumps(asdict(spec), indent=1))
    for _ in range(3):
        try:
            tmp.rename(out_dir)  # atomic; refused while out_dir holds files
            break
        except OSError:
            try:
                check_model_folder(out_dir, "tiny model cache")
                shutil.rmtree(tmp, ignore_errors=True)  # another builder's whole copy is there
                break
            except ConfigError:  # a damaged copy: replaced (unless another builder replaces it first)
                shutil.rmtree(out_dir, ignore_errors=True)
    else:
        raise OSError(f"could not put the built tiny model {tmp} in place at {out_dir}")
    n = sum(p.numel() for p in model.parameters())
    log.info("built %s (%.2fM parameters) in %s", spec.name, n / 1e6, out_dir)
    return out_dir
