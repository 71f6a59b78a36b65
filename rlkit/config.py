"""Experiment YAML: load, validate, override.

Sections: method, output_dir, seed, global_batch_size, base, model, data, camera, prompt, train,
eval, rewards, reward_kwargs. ``train:`` is passed to TRL's SFTConfig / GRPOConfig unchanged, so every TRL
field works under its TRL name. Unknown keys and bad values raise ConfigError naming the file,
the key and the closest valid key.

``extends: other.yaml`` merges this file over another (mappings merge, lists are replaced);
``extends`` and ``base`` paths are relative to the file that names them, data paths to the
working directory (run.sh runs from the repository root); output_dir defaults to runs/<file stem>.

Overrides: ``./run.sh exp.yaml train.learning_rate=1e-4 camera.f_uni=500`` — dotted keys,
values parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlkit.builder import CameraOptions, DatasetSpec, PromptOptions, TrainStream, reads_image
from rlkit.markers import MarkerStyle
from rlkit.prompts import TASKS

METHODS = ("sft", "grpo")


class _Loader(yaml.SafeLoader):
    """YAML with 1.2 float rules, so 1e-4 is a number (YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    name: str = "tiny-qwen2.5-vl"  # the embedded default, a Hugging Face id, or a local checkpoint folder
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2
    min_pixels: int | None = None  # image processor bounds (Qwen2.x-VL): None keeps the checkpoint's
    max_pixels: int | None = None
    lora: dict | None = None  # peft LoraConfig fields, e.g. {r: 16, lora_alpha: 32, target_modules: all-linear}
    tiny: dict = field(default_factory=dict)  # rlkit.tiny.TinySpec fields for the embedded default
    cache_dir: str = ".cache/models"  # where the embedded default is built once


@dataclass
class SynthConfig:
    out: str = "data/synth"
    families: list = field(default_factory=lambda: ["indoor", "outdoor"])
    train_images: int = 2000
    eval_images: int = 200
    points: int = 16
    seed: int = 0
    width: list = field(default_factory=lambda: [160, 320])
    hfov: list = field(default_factory=lambda: [45.0, 95.0])
    # > 0: rooms lit from the camera (a flash); a facing surface this many meters away is half lit
    indoor_lamp: float = 0.0
    # scales the room-to-room spread of paint colors (1: the full spread; smaller: brightness says more)
    indoor_color_jitter: float = 1.0


@dataclass
class DataConfig:
    train: list = field(default_factory=list)  # DatasetSpec fields: path, name, weight, images, points_per_image, root
    eval: list = field(default_factory=list)
    synth: SynthConfig | None = None  # render the procedural scenes first if missing
    skip_invalid: bool = False  # count and log bad jsonl lines instead of failing
    shuffle_labels: bool = False  # answers carry random labels of the dataset: format without depth (GRPO base)
    cache_images: int = 64


@dataclass
class EvalConfig:
    samples_per_dataset: int = 8192
    batch_size: int = 32
    max_new_tokens: int = 32
    seed: int = 0
    constant: float = 2.0  # the constant-answer baseline, meters


@dataclass
class Experiment:
    method: str = "sft"
    output_dir: str = "runs/default"
    seed: int = 0
    # samples (image + question) per optimizer step over all processes; the kit derives
    # train.gradient_accumulation_steps from it and the world size, so a recipe keeps the paper's batch
    global_batch_size: int | None = None
    base: str | None = None  # another experiment YAML whose final checkpoint is this run's starting model
    base_overrides: list = field(default_factory=list)  # key=value overrides for the base (sweeps set these)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    camera: dict = field(default_factory=dict)  # rlkit.builder.CameraOptions fields
    prompt: dict = field(default_factory=dict)  # rlkit.builder.PromptOptions fields; marker: MarkerStyle fields
    train: dict = field(default_factory=dict)  # TRL SFTConfig / GRPOConfig fields, unchanged
    eval: EvalConfig = field(default_factory=EvalConfig)
    rewards: list = field(default_factory=list)  # GRPO: registry names, module:function, or path.py:function
    reward_kwargs: dict = field(default_factory=dict)  # per reward name: keyword arguments (e.g. clip)
    source: str = "<dict>"

    # ------------------------------------------------------------ derived objects
    def train_stream(self, sources) -> TrainStream:
        return TrainStream(sources, self.camera_options(), self.prompt_options(), seed=self.seed,
                           cache_images=self.data.cache_images, shuffle_labels=self.data.shuffle_labels)

    def camera_options(self) -> CameraOptions:
        kw = dict(self.camera)
        for k in ("crop_width", "crop_height"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return _construct(CameraOptions, kw, f"{self.source}: camera")

    def prompt_options(self) -> PromptOptions:
        kw = dict(self.prompt)
        if self.method == "grpo":
            kw.setdefault("template", "grpo")
        marker = dict(kw.pop("marker", None) or {})  # a copy: the experiment's own dict stays as written
        for k in ("color", "outline"):
            if marker.get(k) is not None:
                marker[k] = tuple(marker[k])
        kw["marker"] = _construct(MarkerStyle, marker, f"{self.source}: prompt.marker")
        return _construct(PromptOptions, kw, f"{self.source}: prompt")

    def train_specs(self) -> list[DatasetSpec]:
        return [_construct(DatasetSpec, d, f"{self.source}: data.train[{i}]") for i, d in enumerate(self.data.train)]

    def eval_specs(self) -> list[DatasetSpec]:
        return [_construct(DatasetSpec, d, f"{self.source}: data.eval[{i}]") for i, d in enumerate(self.data.eval)]

    def trl_config(self, world_size: int | None = None, **extra):
        """The TRL config object for this method, from ``train:`` unchanged plus rlkit's needs.

        ``world_size`` (default: $WORLD_SIZE, set by torchrun and accelerate launch) turns
        ``global_batch_size`` into gradient accumulation steps.
        """
        import torch

        cls = trl_config_class(self.method)
        kw = {"output_dir": self.output_dir, "seed": self.seed, **self.train, **extra}
        if "bf16" not in kw:  # one config for CPU (fp32) and GPU (bf16); an explicit train.bf16 wins
            kw["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if "use_cpu" not in kw and not torch.cuda.is_available() and not torch.backends.mps.is_available():
            kw["use_cpu"] = True  # else the Trainer sets up no process group and CPU ranks run apart (no gloo)
        if self.method == "sft" and "max_length" not in self.train:
            # TRL's 1024 tokens cut paper-size images (a 1400 x 1176 crop alone is 2,100 tokens); the
            # image budget (model.max_pixels) already bounds every sequence, so nothing is truncated
            kw["max_length"] = None
        if self.global_batch_size is not None:
            ws = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
            kw["gradient_accumulation_steps"] = accumulation_steps(self, ws)
        return _construct(cls, kw, f"{self.source}: train")

    def completions_per_sample(self) -> int:
        """TRL's batch sizes count completions: a GRPO sample is a group of num_generations."""
        return int(self.train.get("num_generations", trl_default("grpo", "num_generations"))) \
            if self.method == "grpo" else 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def accumulation_steps(exp: Experiment, world_size: int) -> int:
    """train.gradient_accumulation_steps that makes exp.global_batch_size samples per optimizer step."""
    per_device = int(exp.train.get("per_device_train_batch_size",
                                   trl_default(exp.method, "per_device_train_batch_size")))
    completions = exp.global_batch_size * exp.completions_per_sample()
    steps, rest = divmod(completions, per_device * world_size)
    arithmetic = (f"global_batch_size {exp.global_batch_size}"
                  + (f" x num_generations {exp.completions_per_sample()}" if exp.method == "grpo" else "")
                  + f" = {completions} completions per step, per_device_train_batch_size {per_device} x "
                    f"world size {world_size} = {per_device * world_size} per micro-step")
    if rest or steps < 1:
        raise ConfigError(f"{exp.source}: global_batch_size: {arithmetic}: not a whole number of "
                          "gradient accumulation steps; change train.per_device_train_batch_size or the "
                          "number of processes")
    given = exp.train.get("gradient_accumulation_steps")
    if given is not None and given != steps:
        raise ConfigError(f"{exp.source}: train.gradient_accumulation_steps {given} contradicts "
                          f"global_batch_size ({arithmetic} needs {steps}); set only one of them")
    return steps


@functools.lru_cache(maxsize=None)
def trl_default(method: str, name: str):
    return next(f.default for f in dataclasses.fields(trl_config_class(method)) if f.name == name)


def trl_config_class(method: str):
    from trl import GRPOConfig, SFTConfig

    return {"sft": SFTConfig, "grpo": GRPOConfig}[method]


def _closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _construct(cls, kw: dict, where: str):
    if not isinstance(kw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(kw).__name__}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in kw:
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'{_closest(key, names)}")
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


NESTED = {(None, "model"): ModelConfig, (None, "data"): DataConfig, (None, "eval"): EvalConfig,
          ("data", "synth"): SynthConfig}


def _from_dict(cls, data: dict, source: str, section: str | None = None):
    """Recursively build the nested config dataclasses; errors name the key's full path."""
    prefix = f"{section}." if section else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{section or '<top>'}' must be a mapping, got {type(data).__name__}")
    valid = {f.name for f in dataclasses.fields(cls)} - {"source"}
    kw = {}
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{_closest(key, valid)}")
        sub = NESTED.get((section, key))
        kw[key] = _from_dict(sub, value, source, prefix + key) if sub is not None and value is not None else value
    return cls(**kw)


def set_dotted(d: dict, dotted: str, value: Any, where: str) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if cur.get(k) is None:
            cur[k] = {}
        if not isinstance(cur[k], dict):
            raise ConfigError(f"{where}: cannot set '{dotted}': '{k}' is not a mapping")
        cur = cur[k]
    cur[keys[-1]] = value


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path, _seen: tuple = ()) -> dict:
    """A YAML mapping; ``extends: other.yaml`` (relative to this file) is merged under it, recursively."""
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if isinstance(data.get("base"), str):  # a base experiment is named relative to the file naming it
        data["base"] = str(path.parent / data["base"])
    parent = data.pop("extends", None)
    if parent is not None:
        inherited = read_yaml(path.parent / parent, _seen + (path.resolve(),))
        inherited.pop("output_dir", None)  # each file runs into its own dir (default runs/<file stem>)
        data = deep_merge(inherited, data)
    return data


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    path = Path(path)
    data = read_yaml(path)
    data.setdefault("output_dir", f"runs/{path.stem}")
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} must look like key.sub=value (e.g. train.learning_rate=1e-4)")
        key, raw = o.split("=", 1)
        set_dotted(data, key.strip(), parse_yaml(raw), f"override {o!r}")
    return experiment_from_dict(data, source=str(path))


def experiment_from_dict(data: dict, source: str = "<dict>") -> Experiment:
    exp = _from_dict(Experiment, data, source)
    exp.source = source
    validate(exp)
    return exp


def validate(exp: Experiment) -> None:
    src = exp.source
    if exp.method not in METHODS:
        raise ConfigError(f"{src}: method '{exp.method}' is not one of {METHODS}{_closest(exp.method, METHODS)}")
    cam, prompt = exp.camera_options(), exp.prompt_options()
    if not TASKS[prompt.task].distance and (cam.strategy == "predict_rays" or prompt.reference == "text"):
        raise ConfigError(f"{src}: prompt.task '{prompt.task}' is not a distance; camera.strategy predict_rays "
                          "and prompt.reference text word their questions for distances")
    if exp.data.shuffle_labels and reads_image(prompt.task):
        raise ConfigError(f"{src}: data.shuffle_labels needs labels in the records; prompt.task '{prompt.task}' "
                          "reads its labels from the image")
    synth = exp.data.synth
    if synth is not None:
        for key, what in (("indoor_lamp", "a distance in meters >= 0 (0: no lamp)"),
                          ("indoor_color_jitter", "a number >= 0 (1: the full paint spread)")):
            v = getattr(synth, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"{src}: data.synth.{key} must be {what}, got {v!r}")
    if not exp.data.train and exp.data.synth is None:
        raise ConfigError(f"{src}: data.train is empty (list jsonl files, or set data.synth)")
    for section, specs in (("train", exp.train_specs()), ("eval", exp.eval_specs())):
        labels = [s.label for s in specs]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:  # results are keyed by name: two datasets would merge silently
            raise ConfigError(f"{src}: data.{section}: dataset name(s) {twice} used twice; give each a distinct name:")
    if exp.method == "grpo" and not exp.rewards:
        raise ConfigError(f"{src}: method grpo needs rewards: (e.g. [neg_l1, format])")
    if not exp.data.eval:
        raise ConfigError(f"{src}: data.eval is empty (list the jsonl files to evaluate on)")
    unknown = set(exp.reward_kwargs) - set(exp.rewards)
    if unknown:
        raise ConfigError(f"{src}: reward_kwargs names {sorted(unknown)}, which are not in rewards: {exp.rewards}")
    if exp.method == "grpo":
        from rewards import RewardLoadError, load_reward

        for ref in exp.rewards:  # resolve plugins now, before any model is loaded
            try:
                load_reward(ref, exp.reward_kwargs.get(ref))
            except RewardLoadError as e:
                raise ConfigError(f"{src}: rewards: {e}") from None
    if exp.method == "sft" and exp.rewards:
        raise ConfigError(f"{src}: rewards: is only used by method grpo")
    # TRL field names are checked now, before any model is loaded
    cls = trl_config_class(exp.method)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in exp.train:
        if key not in names:
            raise ConfigError(f"{src}: train: unknown {cls.__name__} field '{key}'{_closest(key, names)}")
    from rlkit.tiny import TINY_NAME, TinySpec

    if exp.model.name == TINY_NAME and exp.model.tiny:

        fields = {f.name for f in dataclasses.fields(TinySpec)}
        for key in exp.model.tiny:
            if key not in fields:
                raise ConfigError(f"{src}: model.tiny: unknown field '{key}'{_closest(key, fields)}")
    if exp.base and exp.model != ModelConfig():  # the base's checkpoint is the model: settings must agree
        base_model = load_experiment(exp.base, exp.base_overrides).model
        if exp.model != base_model:
            raise ConfigError(f"{src}: model.* differs from that of base {exp.base}, whose final checkpoint this "
                              "run starts from; set the model in the base experiment (or in base_overrides)")
    if exp.eval.samples_per_dataset < 1 or exp.eval.batch_size < 1:
        raise ConfigError(f"{src}: eval.samples_per_dataset and eval.batch_size must be >= 1")
    gb = exp.global_batch_size
    if gb is not None:
        if isinstance(gb, bool) or not isinstance(gb, int) or gb < 1:
            raise ConfigError(f"{src}: global_batch_size must be a whole number >= 1, got {gb!r}")
        accumulation_steps(exp, int(os.environ.get("WORLD_SIZE", "1")))
    check_max_length(exp, cam)


def check_max_length(exp: Experiment, cam: CameraOptions) -> None:
    """An SFT train.max_length must hold the largest training image (known from the model name)."""
    from rlkit.models import family_from_name, image_pixel_bounds

    max_length = exp.train.get("max_length")
    family = family_from_name(exp.model.name)
    if exp.method != "sft" or max_length is None or family is None or cam.crop_width is None \
            or cam.crop_height is None:
        return  # whole images have no size bound here; the trainer checks the real longest sample
    tokens = family.max_image_tokens(cam.crop_width[1], cam.crop_height[1], image_pixel_bounds(exp.model))
    if tokens is not None and max_length <= tokens:
        raise ConfigError(f"{exp.source}: train.max_length {max_length} cannot hold the largest training image: "
                          f"a {cam.crop_width[1]} x {cam.crop_height[1]} crop is {tokens} image tokens "
                          f"(model.max_pixels {image_pixel_bounds(exp.model)}); set train.max_length above "
                          f"{tokens} plus the prompt and answer, or leave it out (no truncation)")


def save_resolved(exp: Experiment, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
