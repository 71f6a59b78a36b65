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
import json
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlkit.errors import ConfigError  # noqa: F401 - re-exported: most callers import it from here
from rlkit.io import atomic_write_text
from rlkit.models import no_accelerator
from rlkit.schema import METHODS, CameraOptions, DataConfig, DatasetSpec, EvalConfig, ModelConfig, PromptOptions
from rlkit.prompts import TASKS, check_official


class _Loader(yaml.SafeLoader):
    """YAML with 1.2 float rules, so 1e-4 is a number (YAML 1.1 reads it as a string), no key twice
    in one mapping (PyYAML would keep the last silently), and at most MAX_NODES nodes once aliases are
    expanded (an alias bomb of a few lines expands to gigabytes when the experiment is copied)."""

    MAX_NODES = 100_000

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(n) -> int:  # an alias is the same node object: count it once per place it stands
            if id(n) not in sizes:
                sizes[id(n)] = 1  # a recursive alias counts as one (PyYAML builds it as a cycle)
                if isinstance(n, yaml.MappingNode):
                    sizes[id(n)] = 1 + sum(expanded(k) + expanded(v) for k, v in n.value)
                elif isinstance(n, yaml.SequenceNode):
                    sizes[id(n)] = 1 + sum(expanded(v) for v in n.value)
                if sizes[id(n)] > self.MAX_NODES:
                    raise yaml.composer.ComposerError(None, None, f"expands to more than {self.MAX_NODES:,} values "
                                                      "through aliases (*name): refused", n.start_mark)
            return sizes[id(n)]

        if node is not None:
            expanded(node)
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)




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
    camera: CameraOptions = field(default_factory=CameraOptions)
    prompt: PromptOptions = field(default_factory=PromptOptions)  # marker: rlkit.markers.MarkerStyle fields
    train: dict = field(default_factory=dict)  # TRL SFTConfig / GRPOConfig fields, unchanged
    eval: EvalConfig = field(default_factory=EvalConfig)
    rewards: list = field(default_factory=list)  # GRPO: registry names, module:function, or path.py:function
    reward_kwargs: dict = field(default_factory=dict)  # per reward name: keyword arguments (e.g. clip)
    source: str = "<dict>"

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
        if "use_cpu" not in kw and no_accelerator():
            kw["use_cpu"] = True  # else the Trainer sets up no process group and CPU ranks run apart (no gloo)
        if self.method == "sft" and "max_length" not in self.train:
            # TRL's 1024 tokens cut paper-size images (a 1400 x 1176 crop alone is 2,100 tokens); the
            # image budget (model.max_pixels) already bounds every sequence, so nothing is truncated
            kw["max_length"] = None
        if self.global_batch_size is not None:
            ws = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
            kw["gradient_accumulation_steps"] = accumulation_steps(self, ws)
        hints = _trl_hints(cls)
        kw = {k: _check_type(v, hints[k], f"{self.source}: train.{k}") if k in hints and k in self.train else v
              for k, v in kw.items()}
        with warnings.catch_warnings():  # TRL 1.16 itself still sets (and reads) transformers' old checkpointing names
            warnings.filterwarnings("ignore", message="`gradient_checkpointing(_kwargs)?` is deprecated",
                                    category=FutureWarning)
            return _construct(cls, kw, f"{self.source}: train")

    def completions_per_sample(self) -> int:
        """TRL's batch sizes count completions: a GRPO sample is a group of num_generations."""
        return int(self.train.get("num_generations", trl_default("grpo", "num_generations"))) \
            if self.method == "grpo" else 1

    def to_dict(self) -> dict:
        """Plain YAML-able data (tuples as lists): what config.yaml holds."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
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


@functools.lru_cache(maxsize=None)
def _trl_hints(cls) -> dict:
    """TRL's field annotations, for the same type checks as the kit's own keys (none if they don't resolve)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation TRL's own module cannot resolve: TRL checks those itself
        return {}


def trl_config_class(method: str):
    from trl import GRPOConfig, SFTConfig

    return {"sft": SFTConfig, "grpo": GRPOConfig}[method]


def _closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _check_type(value, hint, where: str):
    """``value`` as the annotation ``hint`` wants it (lists as tuples where a tuple is declared), or a
    ConfigError naming ``where``. Numbers must be finite; bools are not numbers."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for a in options[:-1]:
            try:
                return _check_type(value, a, where)
            except ConfigError:
                pass
        return _check_type(value, options[-1], where)
    if dataclasses.is_dataclass(hint):
        return _construct(hint, value, where)
    what = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}.get(hint)
    if hint is bool and isinstance(value, bool) or hint is str and isinstance(value, str):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if what:
        raise ConfigError(f"{where}: must be {what}, got {value!r}")
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)) or (args and len(value) != len(args)):
            raise ConfigError(f"{where}: must be a list of {len(args) or 'some'} values, got {value!r}")
        return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args \
            else tuple(value)
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping, got {value!r}")
        return value
    return value


def _key_path(where: str, key: str) -> str:
    """'exp.yaml' + 'camera' -> 'exp.yaml: camera'; 'exp.yaml: camera' + 'f_uni' -> 'exp.yaml: camera.f_uni'."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _construct(cls, kw, where: str):
    """A config dataclass from a mapping: unknown keys, wrong types and the class's own checks are
    ConfigErrors naming the key's path."""
    if isinstance(kw, cls):
        return kw
    if not isinstance(kw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(kw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in kw:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{_closest(key, fields)}")
    values = {k: _check_type(v, hints[k], _key_path(where, k)) for k, v in kw.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _from_dict(data: dict, source: str) -> Experiment:
    """The typed experiment; errors name the key's full path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    data = dict(data)
    if data.get("method") == "grpo" and isinstance(data.get("prompt"), dict):  # GRPO asks for tagged answers
        data["prompt"] = {"template": "grpo", **data["prompt"]}
    elif data.get("method") == "grpo" and data.get("prompt") is None:
        data["prompt"] = {"template": "grpo"}
    for key in ("model", "data", "eval", "camera", "prompt"):
        if data.get(key) is None:
            data.pop(key, None)
    exp = _construct(Experiment, {k: v for k, v in data.items() if k != "source"}, source)
    return exp


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
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if isinstance(data.get("base"), str):  # a base experiment is named relative to the file naming it
        data["base"] = str(path.parent / data["base"])
    parent = data.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be one file name (relative to this file), got {parent!r}")
    if parent is not None:
        inherited = read_yaml(path.parent / parent, _seen + (path.resolve(),))
        inherited.pop("output_dir", None)  # each file runs into its own dir (default runs/<file stem>)
        data = deep_merge(inherited, data)
    return data


def apply_overrides(data: dict, overrides: list[str] = ()) -> dict:
    """``key.sub=value`` overrides (values parsed as YAML) set into a raw experiment mapping."""
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} must look like key.sub=value (e.g. train.learning_rate=1e-4)")
        key, raw = o.split("=", 1)
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {o!r}: invalid YAML value: {e}") from None
        set_dotted(data, key.strip(), value, f"override {o!r}")
    return data


def load_experiment(path: str | Path, overrides: list[str] = ()) -> Experiment:
    path = Path(path)
    data = read_yaml(path)
    data.setdefault("output_dir", f"runs/{path.stem}")
    return experiment_from_dict(apply_overrides(data, overrides), source=str(path))


def experiment_from_dict(data: dict, source: str = "<dict>") -> Experiment:
    exp = _from_dict(data, source)
    exp.source = source
    fill_scene_paths(exp)
    validate(exp)
    return exp


def fill_scene_paths(exp: Experiment) -> None:
    """data.train / data.eval left out with data.synth: the rendered scenes' jsonl files (rendered by the plan)."""
    synth = exp.data.synth
    if synth is not None:
        for split in ("train", "eval"):
            if not getattr(exp.data, split):
                setattr(exp.data, split, [DatasetSpec(str(synth.jsonl(f, split)), f) for f in synth.families])


def shared_selection(exp: Experiment) -> list[tuple[CameraOptions, PromptOptions]]:
    """The camera and prompt options of eval.shared_with's arms: each arm's keys over this experiment's sections."""
    out = []
    for i, arm in enumerate(exp.eval.shared_with):
        where = f"{exp.source}: eval.shared_with[{i}]"
        camera = _construct(CameraOptions, deep_merge(dataclasses.asdict(exp.camera), arm.camera), f"{where}.camera")
        prompt = _construct(PromptOptions, deep_merge(dataclasses.asdict(exp.prompt), arm.prompt), f"{where}.prompt")
        out.append((camera, prompt))
    return out


def validate(exp: Experiment) -> None:
    src = exp.source
    if exp.method not in METHODS:
        raise ConfigError(f"{src}: method '{exp.method}' is not one of {METHODS}{_closest(exp.method, METHODS)}")
    cam, prompt = exp.camera, exp.prompt
    for task in prompt.task_weights():
        if prompt.template == "official":
            try:
                check_official(task, prompt.reference, cam.strategy)
            except ValueError as e:
                raise ConfigError(f"{src}: {e}") from None
        if not TASKS[task].distance and (cam.strategy == "predict_rays" or prompt.reference == "text"):
            raise ConfigError(f"{src}: prompt task '{task}' is not a point's distance from the camera; camera.strategy "
                              "predict_rays and prompt.reference text word their questions for depth and axis_depth")
        for key, on in (("shuffle_labels", exp.data.shuffle_labels), ("label_scale", exp.data.label_scale != 1.0)):
            if on and TASKS[task].label_key is None:
                raise ConfigError(f"{src}: data.{key} needs per-pixel labels in the records (tasks depth, "
                                  f"axis_depth); prompt task '{task}' has none")
    shared_selection(exp)  # each shared arm's options check their own fields
    for section, specs in (("train", exp.data.train), ("eval", exp.data.eval)):
        labels = [s.label for s in specs]
        if "avg" in labels:  # the tables' average column
            raise ConfigError(f"{src}: data.{section}: the dataset name 'avg' is taken by the average; rename it")
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
    if exp.method == "sft" and exp.rewards:
        raise ConfigError(f"{src}: rewards: is only used by method grpo")
    if not isinstance(exp.train, dict):
        raise ConfigError(f"{src}: train must be a mapping of TRL {exp.method.upper()}Config fields")
    from rlkit.tiny import TINY_SPECS

    if exp.model.name in TINY_SPECS and exp.model.tiny:  # the sizes of the tiny model named

        fields = {f.name for f in dataclasses.fields(TINY_SPECS[exp.model.name])}
        for key in exp.model.tiny:
            if key not in fields:
                raise ConfigError(f"{src}: model.tiny: unknown field '{key}'{_closest(key, fields)} "
                                  f"(sizes of {exp.model.name})")
    if exp.eval.samples_per_dataset < 1 or exp.eval.batch_size < 1 or exp.eval.max_new_tokens < 1:
        raise ConfigError(f"{src}: eval.samples_per_dataset, eval.batch_size and eval.max_new_tokens must be >= 1")
    if not exp.eval.constant > 0:  # a distance: δ1 and AbsRel of a value <= 0 mean nothing
        raise ConfigError(f"{src}: eval.constant must be > 0 (the constant answer, in the task's unit), got "
                          f"{exp.eval.constant!r}")
    gb = exp.global_batch_size
    if gb is not None:
        if isinstance(gb, bool) or not isinstance(gb, int) or gb < 1:
            raise ConfigError(f"{src}: global_batch_size must be a whole number >= 1, got {gb!r}")
    if exp.model.official_switches:
        check_official_switches(exp)
    check_max_length_holds_images(exp, cam)


def check_official_switches(exp: Experiment) -> None:
    """model.official_switches: a family that has them (known from the name; a folder's is checked at load), no
    vLLM (it builds its own processor from the checkpoint: it would resize and rescale), pre-resize bounds in order."""
    from rlkit.models import family_from_name

    src, model = exp.source, exp.model
    family = family_from_name(model.name)
    if family is not None:
        try:
            family.switches(model, model.name)
        except ConfigError as e:
            raise ConfigError(f"{src}: {e}") from None
    if exp.train.get("use_vllm"):
        raise ConfigError(f"{src}: model.official_switches with train.use_vllm: vLLM builds its processor from the "
                          "checkpoint and would resize and rescale the images training does not; drop one of them")
    lo, hi = model.min_pixels, model.max_pixels
    for key, v in (("min_pixels", lo), ("max_pixels", hi)):
        if v is not None and (isinstance(v, bool) or v < 1):
            raise ConfigError(f"{src}: model.{key} must be a whole number >= 1, got {v!r}")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{src}: model.min_pixels {lo} is above model.max_pixels {hi} (the official pre-resize's "
                          "bounds)")


def check_trainer_fields(exp: Experiment) -> None:
    """Every train: key is a field of TRL's config class for the method (imports TRL: a plan step)."""
    cls = trl_config_class(exp.method)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in exp.train:
        if key not in names:
            raise ConfigError(f"{exp.source}: train: unknown {cls.__name__} field '{key}'{_closest(key, names)}")


def check_max_length_holds_images(exp: Experiment, cam: CameraOptions) -> None:
    """An SFT train.max_length must hold the largest training crop's image tokens (family known from the
    model name; sft.check_longest_sequence later checks the real longest sample with the processor)."""
    from rlkit.models import family_from_name, image_pixel_bounds

    max_length = exp.train.get("max_length")
    family = family_from_name(exp.model.name)
    if exp.method != "sft" or max_length is None or family is None or cam.crop_width is None \
            or cam.crop_height is None or not all(s.train_crop for s in exp.data.train):
        return  # whole images have no size bound here
    m = cam.multiple_of
    width, height = cam.crop_width[1] // m * m, cam.crop_height[1] // m * m  # the largest crop drawn
    tokens = family.train_image_tokens(width, height, exp.model)
    if tokens is not None and max_length <= tokens:
        raise ConfigError(f"{exp.source}: train.max_length {max_length} cannot hold the largest training image: "
                          f"a {width} x {height} crop is {tokens} image tokens "
                          f"(model.max_pixels {image_pixel_bounds(exp.model)}); set train.max_length above "
                          f"{tokens} plus the prompt and answer, or leave it out (no truncation)")


def save_resolved(exp: Experiment, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(exp.to_dict(), sort_keys=False))
