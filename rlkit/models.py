"""Load any supported VLM and its processor; per-family quirks live in FAMILIES, nowhere else."""

from __future__ import annotations

import functools
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

# qwen_vl_utils' image defaults (vision_process.py: IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS, MAX_RATIO): what the official
# train.py's process_vision_info resizes each training image to, its message dicts carrying no bounds of their own
PRE_RESIZE_MIN_PIXELS = 4 * 28 * 28
PRE_RESIZE_MAX_PIXELS = 16384 * 28 * 28
PRE_RESIZE_MAX_RATIO = 200


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen_vl_utils.smart_resize: (height, width) each rounded to the nearest multiple of ``factor`` (Python's
    round: halves to even), scaled down (floor) or up (ceil) to multiples when the pixels leave [min, max]."""
    if max(height, width) / min(height, width) > PRE_RESIZE_MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {PRE_RESIZE_MAX_RATIO}, got "
                         f"{max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class OfficialSwitches:
    """What facebookresearch/DepthLM_Official's train.py (commit 7169b49) does for one family beyond the kit's
    defaults, in force with model.official_switches: true. All off: a family (or a run) without any."""

    # image processor flags set False (train.py:630-631), in training and at eval (the official eval.py loads the
    # processor train.py saved, train.py:767). do_rescale is the 1/255 scaling: without it the pixel values are
    # normalized from the 0-255 range, as the model trained that way expects them
    processor_off: tuple[str, ...] = ()
    # training images resized first as collate_fn_pixtral's qwen_vl_utils.process_vision_info does (train.py:479):
    # smart_resize to multiples of this, within model.min_pixels / max_pixels (default qwen_vl_utils' 3136 /
    # 12845056), PIL's default filter; eval images are not (eval.py hands its images to the processor as they are)
    pre_resize_factor: int | None = None
    # the vision tower's attention (train.py:658-661: {"text_config": "flash_attention_2", "vision_config":
    # "eager"}); the LM keeps model.attn_implementation
    vision_attn: str | None = None
    # with gradient checkpointing, train.py:690-693: model.enable_input_require_grads() and TRL's
    # gradient_checkpointing_kwargs {"use_reentrant": True} (a train: value of either kwargs name wins)
    reentrant_checkpointing: bool = False

    def attn_implementation(self, lm: str | None) -> str | dict | None:
        """from_pretrained's attn_implementation for the LM's ``lm``: per sub-config when the tower has its own."""
        if self.vision_attn is None:
            return lm
        return {**({"text_config": lm} if lm else {}), "vision_config": self.vision_attn}

    def attn_kept(self) -> dict:
        """Sub-configs whose attention a later switch of the whole model (rlkit.attention.switch_to_varlen) keeps."""
        return {"vision_config": self.vision_attn} if self.vision_attn else {}

    def set_processor(self, processor) -> None:
        for flag in self.processor_off:
            setattr(processor.image_processor, flag, False)

    def pixel_bounds(self, cfg: ModelConfig) -> tuple[int, int]:
        """The pre-resize's (min, max) pixels: model.min_pixels / max_pixels, else qwen_vl_utils' defaults."""
        return (cfg.min_pixels if cfg.min_pixels is not None else PRE_RESIZE_MIN_PIXELS,
                cfg.max_pixels if cfg.max_pixels is not None else PRE_RESIZE_MAX_PIXELS)

    def pre_resized_size(self, width: int, height: int, cfg: ModelConfig) -> tuple[int, int]:
        """(width, height) of a training image after the pre-resize (unchanged without one)."""
        if self.pre_resize_factor is None:
            return width, height
        h, w = smart_resize(height, width, self.pre_resize_factor, *self.pixel_bounds(cfg))
        return w, h

    def pre_resize(self, image, cfg: ModelConfig):
        """qwen_vl_utils.fetch_image on a PIL image: RGB, then resized (PIL's default filter) to pre_resized_size."""
        if self.pre_resize_factor is None:
            return image
        image = image.convert("RGB")
        return image.resize(self.pre_resized_size(*image.size, cfg))

    def train_rows(self, dataset, cfg: ModelConfig):
        """The training rows with their images pre-resized (the dataset itself without a pre-resize)."""
        if self.pre_resize_factor is None:
            return dataset
        return dataset.map(functools.partial(_pre_resize_row, switches=self, cfg=cfg))

    def trl_defaults(self, train: dict) -> dict:
        """TRL config fields this family's official code sets, for those the experiment's train: leaves unset."""
        given = {"gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"} & set(train)
        if not self.reentrant_checkpointing or given:
            return {}
        return {"gradient_checkpointing_kwargs": {"use_reentrant": True}}  # a fresh dict: TRL edits it in place

    def prepare_model(self, model, args) -> None:
        """Before the trainer: inputs that require grads, which reentrant checkpointing needs (train.py:691)."""
        if self.reentrant_checkpointing and args.gradient_checkpointing:
            model.enable_input_require_grads()


def _pre_resize_row(row: dict, switches: OfficialSwitches, cfg: ModelConfig) -> dict:
    return {"images": [switches.pre_resize(im, cfg) for im in row["images"]]}


NO_SWITCHES = OfficialSwitches()
# train.py's Pixtral branches ("pixtral-12b" in the model name): train.py:617-631, 653-665, 686-693, collate_fn_pixtral
PIXTRAL_OFFICIAL = OfficialSwitches(processor_off=("do_resize", "do_rescale"), pre_resize_factor=28,
                                    vision_attn="eager", reentrant_checkpointing=True)


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
    # what the official train.py does for this family beyond the kit's defaults (model.official_switches);
    # None: nothing of its own (Qwen2.x-VL: the kit already loads and trains it as that code does)
    official: OfficialSwitches | None = None

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

    def train_image_tokens(self, width: int, height: int, cfg: ModelConfig) -> int | None:
        """Image tokens of the largest width x height training image as the model gets it: with the official
        switches pre-resized and not resized by the processor (whole patches: the tower drops a partial one),
        else after the processor's resize within image_pixel_bounds."""
        switches = self.switches(cfg)
        if self.token_px is None or "do_resize" not in switches.processor_off:
            return self.max_image_tokens(width, height, image_pixel_bounds(cfg))
        w, h = switches.pre_resized_size(width, height, cfg)
        return (h // self.token_px) * (w // self.token_px + self.row_break)

    def switches(self, cfg: ModelConfig, model_type: str | None = None) -> OfficialSwitches:
        """The switch set in force: this family's official one with model.official_switches, else none."""
        if not cfg.official_switches:
            return NO_SWITCHES
        if self.official is None:
            raise ConfigError(f"model.official_switches: the official train.py has no switches of its own for "
                              f"{model_type or 'this family'} (it loads and trains it as the kit does); drop it")
        return self.official


FAMILIES = {
    "qwen2_5_vl": Family(pixel_bounds=True, token_px=28, names=("qwen2.5-vl", "qwen2_5_vl")),
    "qwen2_vl": Family(pixel_bounds=True, token_px=28, names=("qwen2-vl",)),
    "llava": Family(),
    # Pixtral checkpoints are model_type llava with a pixtral vision_config: family_key picks this entry
    "pixtral": Family(longest_edge=True, token_px=16, row_break=True, chat_template=PIXTRAL_CHAT_TEMPLATE,
                      names=("pixtral", "depthlm"), official=PIXTRAL_OFFICIAL),
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


def checkpoint_family(path: str) -> tuple[str, Family]:
    """(FAMILIES key, family) of a checkpoint, from its config."""
    from transformers import AutoConfig

    key = family_key(AutoConfig.from_pretrained(path))
    return key, family_of(key)


def checkpoint_switches(path: str, cfg: ModelConfig) -> OfficialSwitches:
    """The official switch set in force for this checkpoint (NO_SWITCHES without model.official_switches)."""
    if not cfg.official_switches:
        return NO_SWITCHES
    key, family = checkpoint_family(path)
    return family.switches(cfg, key)


def load_processor(path: str, cfg: ModelConfig):
    from transformers import AutoProcessor

    key, family = checkpoint_family(path)
    switches = family.switches(cfg, key)
    # with the official switches the processor does not resize: its size arguments would go unused, and
    # model.min_pixels / max_pixels bound the training images' pre-resize instead
    size = {} if "do_resize" in switches.processor_off else family.image_size_kwargs(cfg, key)
    processor = AutoProcessor.from_pretrained(path, **size)
    switches.set_processor(processor)
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
    switches = checkpoint_switches(path, cfg)
    attn, varlen = attention_load_kwargs(cfg.attn_implementation)
    attn = switches.attn_implementation(attn)
    if attn:
        kwargs["attn_implementation"] = attn
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    return switch_to_varlen(model, keep=switches.attn_kept()) if varlen else model


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
