"""Load any supported VLM and its processor; per-family quirks live in FAMILIES, nowhere else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlkit.tiny import TINY_NAME, TinySpec, tiny_path

if TYPE_CHECKING:
    from rlkit.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """What differs between model families, in one place."""

    pixel_bounds: bool = False  # the image processor takes min_pixels / max_pixels (Qwen2.x-VL)
    token_px: int | None = None  # image side in pixels per image token (Qwen2.x-VL: 14-px patches merged 2 x 2)
    names: tuple[str, ...] = ()  # lower-case fragments of Hugging Face ids of this family

    def max_image_tokens(self, width: int, height: int, max_pixels: int | None) -> int | None:
        """Image tokens of the largest width x height image after the processor's resize (None: unknown)."""
        if self.token_px is None:
            return None
        p = self.token_px
        tokens = max(1, round(width / p)) * max(1, round(height / p))
        return min(tokens, max_pixels // (p * p)) if max_pixels else tokens


FAMILIES = {
    "qwen2_5_vl": Family(pixel_bounds=True, token_px=28, names=("qwen2.5-vl", "qwen2_5_vl")),
    "qwen2_vl": Family(pixel_bounds=True, token_px=28, names=("qwen2-vl",)),
    "llava": Family(),
    "pixtral": Family(names=("pixtral", "depthlm")),
}


def family_from_name(name: str) -> Family | None:
    """The family of a model id without reading any file (None: not known from the name)."""
    if name == TINY_NAME:
        return FAMILIES["qwen2_5_vl"]
    low = name.lower()
    return next((f for f in FAMILIES.values() if any(n in low for n in f.names)), None)


def image_pixel_bounds(cfg: ModelConfig) -> int | None:
    """model.max_pixels, or the embedded default's built-in bound."""
    if cfg.max_pixels is not None:
        return cfg.max_pixels
    return TinySpec(**cfg.tiny).max_pixels if cfg.name == TINY_NAME else None


def resolve_model_path(cfg: ModelConfig) -> str:
    """The checkpoint to load: the embedded default is built (once) into the cache."""
    if cfg.name == TINY_NAME:
        return str(tiny_path(cfg.cache_dir, TinySpec(**cfg.tiny)))  # keys checked at config load
    if cfg.tiny:  # e.g. the default YAML with model.name overridden: the tiny sizes do not apply
        log.info("model.tiny is ignored: it sizes only %s, not %s", TINY_NAME, cfg.name)
    return cfg.name


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"model.dtype {name!r} is not one of auto, float32, bfloat16, float16") from None


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        log.warning("model type %s has no rlkit family entry; using defaults", model_type)
    return FAMILIES.get(model_type, Family())


def load_processor(path: str, cfg: ModelConfig):
    from transformers import AutoConfig, AutoProcessor

    model_type = AutoConfig.from_pretrained(path).model_type
    kwargs = {}
    if family_of(model_type).pixel_bounds:
        for k in ("min_pixels", "max_pixels"):
            if getattr(cfg, k) is not None:
                kwargs[k] = getattr(cfg, k)
    elif cfg.min_pixels or cfg.max_pixels:
        raise ValueError(f"model.min_pixels/max_pixels apply to Qwen2.x-VL, not {model_type}")
    processor = AutoProcessor.from_pretrained(path, **kwargs)
    processor.tokenizer.padding_side = "left"  # generation pads prompts on the left
    return processor


def load_model(path: str, cfg: ModelConfig):
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": torch_dtype(cfg.dtype)}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)


def peft_config(cfg: ModelConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    try:
        return LoraConfig(task_type="CAUSAL_LM", **cfg.lora)
    except TypeError as e:
        raise ValueError(f"model.lora: {e}") from None
