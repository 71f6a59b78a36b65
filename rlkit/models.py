"""Load any supported VLM and its processor; per-family quirks live in FAMILIES, nowhere else."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlkit.attention import load_kwargs as attention_load_kwargs, switch_to_varlen
from rlkit.chat_templates import PIXTRAL_CHAT_TEMPLATE
from rlkit.errors import ConfigError
from rlkit.tiny import TINY_SPECS, ensure_tiny_model

if TYPE_CHECKING:
    from rlkit.schema import ModelConfig

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class Family:
    """What differs between model families, in one place."""

    pixel_bounds: bool = False  # the image processor takes min_pixels / max_pixels (Qwen2.x-VL)
    # the image processor takes size={"longest_edge": N} (Pixtral): model.max_pixels maps to N = isqrt(max_pixels),
    # so no image keeps more than max_pixels pixels; model.min_pixels has no counterpart (Pixtral never upscales)
    longest_edge: bool = False
    # image side in pixels per image token (Qwen2.x-VL: 14-px patches merged 2 x 2; Pixtral: 16-px patches, unmerged)
    token_px: int | None = None
    row_break: bool = False  # one more token per row of patches: [IMG_BREAK], the last one [IMG_END] (Pixtral)
    # replaces a checkpoint's chat template that cannot render the kit's rows (image chunk, then a text chunk
    # under "text"; the answer as a list of chunks, as TRL passes it); None: such a checkpoint is refused
    chat_template: str | None = None
    names: tuple[str, ...] = ()  # lower-case fragments of Hugging Face ids of this family

    def image_size_kwargs(self, cfg: ModelConfig, model_type: str) -> dict:
        """The image processor's size arguments for model.min_pixels / max_pixels (unset: the checkpoint's)."""
        lo, hi = cfg.min_pixels, cfg.max_pixels
        if self.pixel_bounds:
            return {k: v for k, v in (("min_pixels", lo), ("max_pixels", hi)) if v is not None}
        if self.longest_edge and lo is None:
            return {} if hi is None else {"size": {"longest_edge": math.isqrt(hi)}}
        if self.longest_edge:
            raise ConfigError(f"model.min_pixels does not apply to {model_type} (Pixtral): its image processor only "
                             "scales a longer side down to sqrt(model.max_pixels) and never upscales; drop min_pixels")
        if lo is not None or hi is not None:
            raise ConfigError(f"model.min_pixels/max_pixels apply to Qwen2.x-VL and Pixtral, not {model_type}")
        return {}

    def max_image_tokens(self, width: int, height: int, max_pixels: int | None) -> int | None:
        """Image tokens of the largest width x height image after the processor's resize (None: unknown)."""
        if self.token_px is None:
            return None
        p = self.token_px
        if self.longest_edge:  # Pixtral: scale the longer side down to the edge, then whole patches (rounded up)
            edge = math.isqrt(max_pixels) if max_pixels else max(width, height)
            ratio = max(width / edge, height / edge, 1.0)
            cols, rows = (math.ceil(math.floor(v / ratio) / p) for v in (width, height))
            return rows * (cols + self.row_break)
        tokens = max(1, round(width / p)) * max(1, round(height / p))
        return min(tokens, max_pixels // (p * p)) if max_pixels else tokens


FAMILIES = {
    "qwen2_5_vl": Family(pixel_bounds=True, token_px=28, names=("qwen2.5-vl", "qwen2_5_vl")),
    "qwen2_vl": Family(pixel_bounds=True, token_px=28, names=("qwen2-vl",)),
    "llava": Family(),
    # Pixtral checkpoints are model_type llava with a pixtral vision_config: family_key picks this entry
    "pixtral": Family(longest_edge=True, token_px=16, row_break=True, chat_template=PIXTRAL_CHAT_TEMPLATE,
                      names=("pixtral", "depthlm")),
}


def family_key(config) -> str:
    """The FAMILIES key of a checkpoint's config: its model_type, or for a LLaVA wrapper around a vision
    tower with an entry of its own (Pixtral), the tower's model_type."""
    vision = getattr(getattr(config, "vision_config", None), "model_type", None)
    return vision if config.model_type == "llava" and vision in FAMILIES else config.model_type


def family_from_name(name: str) -> Family | None:
    """The family of a model id without reading any file (None: not known from the name)."""
    if name in TINY_SPECS:
        return FAMILIES[TINY_SPECS[name].family]
    low = name.lower()
    return next((f for f in FAMILIES.values() if any(n in low for n in f.names)), None)


def tiny_spec(cfg: ModelConfig):
    """The sizes of the tiny model model.name names (model.tiny over its defaults), or None for any other model."""
    spec = TINY_SPECS.get(cfg.name)
    return spec(**cfg.tiny) if spec else None  # keys checked at config load


def image_pixel_bounds(cfg: ModelConfig) -> int | None:
    """model.max_pixels, or a tiny model's built-in bound."""
    if cfg.max_pixels is not None:
        return cfg.max_pixels
    spec = tiny_spec(cfg)
    return spec.max_pixels if spec else None


def no_accelerator() -> bool:
    """No CUDA and no Apple GPU: train on the CPU (and run several ranks over gloo)."""
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def ensure_model_path(cfg: ModelConfig) -> str:
    """The checkpoint to load: a tiny model (the embedded default, tiny-pixtral) is built (once) into the cache."""
    spec = tiny_spec(cfg)
    if spec is not None:
        return str(ensure_tiny_model(cfg.cache_dir, spec))
    if cfg.tiny:  # e.g. the default YAML with model.name overridden: the tiny sizes do not apply
        log.info("model.tiny is ignored: it sizes only %s, not %s", " and ".join(TINY_SPECS), cfg.name)
    return cfg.name


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)  # one of schema.DTYPES: checked at config load


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        log.warning("model type %s has no rlkit family entry; using defaults", model_type)
    return FAMILIES.get(model_type, Family())


def renders_rows(processor) -> bool:
    """Whether the processor's chat template renders a kit row: its image, question and answer."""
    row = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "QQ"}]},
           {"role": "assistant", "content": [{"type": "text", "text": "AA"}]}]
    try:
        text = processor.apply_chat_template(row, tokenize=False)
    except Exception:  # e.g. an old Pixtral template: message['content'] + eos_token on a list
        return False
    return "QQ" in text and "AA" in text


def load_processor(path: str, cfg: ModelConfig):
    from transformers import AutoConfig, AutoProcessor

    key = family_key(AutoConfig.from_pretrained(path))
    family = family_of(key)
    processor = AutoProcessor.from_pretrained(path, **family.image_size_kwargs(cfg, key))
    # generate() continues each row from its last position, so eval batches are padded on the left; training
    # is unaffected: TRL's SFT and GRPO collators pass their own padding_side on every call
    processor.tokenizer.padding_side = "left"
    if family.chat_template and not renders_rows(processor):
        log.warning("%s: the chat template cannot render the kit's rows (text chunks under 'text', a list as the "
                    "answer); using rlkit's %s template", path, key)
        processor.chat_template = family.chat_template
    return processor


def load_model(path: str, cfg: ModelConfig, device=None):
    """``device``: load straight onto it (each eval rank), not first as a full copy in CPU memory."""
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": torch_dtype(cfg.dtype)}
    if device is not None:
        kwargs["device_map"] = {"": device}
    attn, varlen = attention_load_kwargs(cfg.attn_implementation)
    if attn:
        kwargs["attn_implementation"] = attn
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    return switch_to_varlen(model) if varlen else model


def peft_config(cfg: ModelConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    try:
        return LoraConfig(task_type="CAUSAL_LM", **cfg.lora)
    except TypeError as e:
        raise ConfigError(f"model.lora: {e}") from None


def process_state():
    """The accelerate process state: one process, or one per rank under torchrun / accelerate launch
    (gloo on a machine without a GPU, so CPU ranks really form one job)."""
    from accelerate import PartialState

    return PartialState(cpu=no_accelerator())
