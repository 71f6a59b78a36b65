"""Every section type of an experiment YAML, in one place: model, data (datasets, rendered scenes), camera,
prompt and eval. Each checks its own fields when built (a bad value raises ValueError, which the loader turns
into a ConfigError naming the file and key); checks across sections are config.validate's. Light on imports:
no torch, no PIL, no TRL.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

from rlkit.markers import MarkerStyle, color_name
from rlkit.prompts import REFERENCES, TASKS, TEMPLATES

METHODS = ("sft", "grpo")

DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: bf16 on a GPU, fp32 on a CPU
STRATEGIES = ("unify_focal", "direct", "intrinsics_in_prompt", "predict_rays")
# exact: rlkit's resize (pixel centers kept, W*f/fx x H*f/fy); official: the official DepthLM code's (camera.OfficialTransform)
RESIZES = ("exact", "official")
CROPS = ("random", "center")  # center: the official code's train crop (random size, centered)


@dataclass(frozen=True)
class CameraOptions:
    strategy: str = "unify_focal"
    f_uni: float = 1000.0
    crop_width: tuple[int, int] | None = (1000, 1400)  # train crops; None keeps the whole image
    crop_height: tuple[int, int] | None = (700, 1200)
    multiple_of: int = 1  # crop sizes only multiples of this (28 = Qwen2.5-VL's merged patch)
    resize: str = "exact"  # how unify_focal resizes: one of RESIZES
    crop: str = "random"  # where the train crop lies: one of CROPS

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"camera strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.resize not in RESIZES:
            raise ValueError(f"camera resize {self.resize!r} is not one of {RESIZES}")
        if self.crop not in CROPS:
            raise ValueError(f"camera crop {self.crop!r} is not one of {CROPS}")
        if self.resize == "official" and self.strategy != "unify_focal":
            raise ValueError(f"camera resize 'official' is the official code's unify_focal; strategy is {self.strategy!r}")
        if not (0 < self.f_uni < float("inf")):
            raise ValueError(f"f_uni must be a positive, finite number of pixels, got {self.f_uni}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1 (1: any crop size), got {self.multiple_of}")
        for name in ("crop_width", "crop_height"):
            r = getattr(self, name)
            if r is not None and not (len(r) == 2 and 1 <= r[0] <= r[1]):
                raise ValueError(f"{name} must be [min, max] with 1 <= min <= max, got {r}")


@dataclass(frozen=True)
class PromptOptions:
    task: str = "depth"
    template: str = "sft"
    reference: str = "marker"
    marker: MarkerStyle = MarkerStyle()
    # several tasks mixed by weight in one run, e.g. {depth: 1, speed: 1, two_point: 1}; replaces task
    tasks: dict[str, float] | None = None
    # two_point's second marker (default: the marker in blue, or in red when the marker is blue)
    second_marker: MarkerStyle | None = None

    def __post_init__(self):
        for name, allowed in (("task", tuple(TASKS)), ("template", TEMPLATES), ("reference", REFERENCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"prompt {name} {getattr(self, name)!r} is not one of {allowed}")
        if self.tasks is not None:
            if not self.tasks:
                raise ValueError("prompt tasks is empty (name tasks with weights, or leave it out and set task)")
            for name, w in self.tasks.items():
                if name not in TASKS:
                    raise ValueError(f"prompt tasks: {name!r} is not one of {tuple(TASKS)}")
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf:
                    raise ValueError(f"prompt tasks: the weight of {name} must be a number >= 0, got {w!r}")
            if sum(self.tasks.values()) <= 0:
                raise ValueError(f"prompt tasks: the weights must have a positive sum, got {self.tasks}")
        if "two_point" in self.task_weights() and len(set(self.marker_colors)) == 1:
            raise ValueError(f"two_point tells its markers apart by color, but both read as "
                             f"{self.marker_colors[0]!r}; give prompt.second_marker another color")

    def task_weights(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.tasks.items()} if self.tasks is not None else {self.task: 1.0}

    # derived once per options object (the builder reads them for every sample)
    @functools.cached_property
    def marker_styles(self) -> tuple[MarkerStyle, MarkerStyle]:
        """The marker, and two_point's second one."""
        if self.second_marker is not None:
            return self.marker, self.second_marker
        other = (255, 0, 0) if color_name(self.marker.color) == "blue" else (0, 0, 255)
        return self.marker, dataclasses.replace(self.marker, color=other)

    @functools.cached_property
    def marker_colors(self) -> tuple[str, str]:
        """The two markers' color names, as two_point's question says them."""
        return tuple(color_name(st.color) for st in self.marker_styles)


@dataclass(frozen=True)
class DatasetSpec:
    path: str
    name: str | None = None  # defaults to the jsonl's stem
    weight: float = 1.0
    images: int | None = None  # distinct images used for training (None: all)
    points_per_image: int | None = None  # labels used per image (None: all)
    root: str | None = None  # image folder (default: the jsonl's folder)
    allow_outside_root: bool = False  # image paths may leave root (../, absolute): only for a jsonl you trust
    # training only, the official code's Taskonomy handling: after the camera resize the height alone becomes
    # int(width / r), r uniform in [lo, hi] (its intrinsics noise; the official range is [1.0, 1.3]) ...
    aspect_jitter: tuple[float, float] | None = None
    train_crop: bool = True  # ... and no train crop (false): the whole image, as the official code feeds Taskonomy

    def __post_init__(self):
        for key in ("images", "points_per_image"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or left out: all), got {getattr(self, key)}")
        if not self.weight >= 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        r = self.aspect_jitter
        if r is not None and not (len(r) == 2 and 0 < r[0] <= r[1] < math.inf):
            raise ValueError(f"aspect_jitter must be [MIN, MAX] width/height ratios with 0 < MIN <= MAX, got {r}")

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass
class ModelConfig:
    name: str = "tiny-qwen2.5-vl"  # the embedded default, a Hugging Face id, or a local checkpoint folder
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2
    min_pixels: int | None = None  # image processor bounds (Qwen2.x-VL): None keeps the checkpoint's
    max_pixels: int | None = None
    # the official DepthLM train.py's switches for this model's family (rlkit.models.OfficialSwitches; Pixtral:
    # processor resize and rescale off, training images pre-resized to 28-px multiples, eager vision attention,
    # reentrant gradient checkpointing); with them min_pixels / max_pixels bound that pre-resize
    official_switches: bool = False
    lora: dict | None = None  # peft LoraConfig fields, e.g. {r: 16, lora_alpha: 32, target_modules: all-linear}
    tiny: dict = field(default_factory=dict)  # rlkit.tiny.TinySpec fields for the embedded default
    cache_dir: str = ".cache/models"  # where the embedded default is built once

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")


@dataclass
class SynthConfig:
    out: str = "data/synth"
    families: list = field(default_factory=lambda: ["indoor", "outdoor"])
    train_images: int = 2000
    eval_images: int = 200
    # validation scenes (OUT/{family}_val.jsonl): their own random stream, for choosing settings without looking
    # at the eval scenes (name them in data.eval of the tuning runs); 0: none
    val_images: int = 0
    points: int = 16
    seed: int = 0
    width: list = field(default_factory=lambda: [160, 320])
    hfov: list = field(default_factory=lambda: [45.0, 95.0])
    # > 0: rooms lit from the camera (a flash); a facing surface this many meters away is half lit
    indoor_lamp: float = 0.0
    # scales the room-to-room spread of paint colors (1: the full spread; smaller: brightness says more)
    indoor_color_jitter: float = 1.0
    pairs: bool = False  # also render each scene from a moved camera: the camera_motion task's pair views

    def __post_init__(self):
        for key, what in (("indoor_lamp", "a distance in meters >= 0 (0: no lamp)"),
                          ("indoor_color_jitter", "a number >= 0 (1: the full paint spread)")):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{key} must be {what}, got {v!r}")
        for key in ("train_images", "eval_images", "val_images", "points"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{key} must be a whole number >= 0, got {v!r}")
        # cameras whose scenes have labelable pixels: a marker fits, and a finite focal length (hfov < 180)
        for key, lo, hi, unit in (("width", 32, 4096, "pixels"), ("hfov", 5, 170, "degrees")):
            v = getattr(self, key)
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and lo <= x <= hi for x in v) and v[0] <= v[1]):
                raise ValueError(f"{key} must be [MIN, MAX] with {lo} <= MIN <= MAX <= {hi} {unit}, got {v!r}")

    def jsonl(self, family: str, split: str) -> Path:
        return Path(self.out) / f"{family}_{split}.jsonl"

    def splits(self) -> list[tuple[str, int]]:
        """(split, images per family) of every split this renders."""
        sizes = (("train", self.train_images), ("eval", self.eval_images), ("val", self.val_images))
        return [(split, n) for split, n in sizes if n > 0]


@dataclass
class DataConfig:
    # DatasetSpec fields: path, name, weight, images, points_per_image, root, allow_outside_root; left out with synth:
    # the rendered scenes
    train: list[DatasetSpec] = field(default_factory=list)
    eval: list[DatasetSpec] = field(default_factory=list)
    synth: SynthConfig | None = None  # render the procedural scenes first if missing
    skip_invalid: bool = False  # count and log bad jsonl lines instead of failing
    shuffle_labels: bool = False  # answers carry random labels of the dataset: format without depth (GRPO base)
    label_scale: float = 1.0  # answers carry label x this: depth read at the wrong scale (GRPO base)
    cache_images: int = 64

    def __post_init__(self):
        v = self.label_scale
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"label_scale must be a number > 0, got {v!r}")


@dataclass
class DuringTraining:
    """Held-out evaluation during training: the learning curve (rlkit.curve)."""

    every_steps: int = 100  # optimizer steps between points (step 0 and the last step are always points)
    samples_per_dataset: int = 128  # the fixed subset, drawn with eval.seed: the same for every method and seed

    def __post_init__(self):
        for key in ("every_steps", "samples_per_dataset"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a whole number >= 1, got {v!r}")


@dataclass(frozen=True)
class SharedArm:
    """Another arm of a comparison (a sweep writes these): its camera and prompt settings where the arms differ.
    Keys as in the experiment's own sections (``marker`` fields nested); the rest is this experiment's."""

    camera: dict = field(default_factory=dict)
    prompt: dict = field(default_factory=dict)


@dataclass
class EvalConfig:
    samples_per_dataset: int = 8192
    batch_size: int = 32
    max_new_tokens: int = 32
    seed: int = 0
    constant: float = 2.0  # the constant-answer baseline, meters
    during_training: DuringTraining | None = None  # off by default: the learning curve costs eval time
    # one eval selection across a comparison's arms: a pixel is selected only when every arm listed here (and this
    # experiment) can draw it; the ones only some arm can draw are counted as 'unusable_in_another_arm'
    shared_with: list[SharedArm] = field(default_factory=list)
