"""The plan that runs an experiment, one named step after another:

    check_experiment -> render_scenes -> train_base_stage -> load_sources -> resolve_model
    -> build_stream / build_evalset -> train -> evaluate

``run``, ``eval``, ``data preview``, ``bench`` and the sweeps all take their steps from here; nothing
else loads sources. A run dir holds config.yaml (resolved), checkpoint-*/ (resumable), final/ (the trained
model and processor), predictions.csv, metrics.json and README.md (the model card, rlkit.card). metrics.json
marks the end of a run; a run dir that has it is finished and is not run again (this is what sweeps resume on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import yaml

from rlkit.builder import EvalSet, Source, TrainStream, load_source
from rlkit.card import write_model_card
from rlkit.config import (ConfigError, Experiment, ModelConfig, SynthConfig, check_trainer_fields, experiment_from_dict,
                          load_experiment, parse_yaml, save_resolved)
from rlkit.evaluate import (add_predictions, drop_skipped, predict, selection_frame, strict_json, summarize,
                            summarize_tasks, train_medians, write_results)
from rlkit.errors import DiskFull, disk_full
from rlkit.io import atomic_write_text
from rlkit.models import load_model, load_processor, no_accelerator, peft_config, resolve_model_path

log = logging.getLogger(__name__)


def render_scenes(exp: Experiment) -> None:
    """Render the procedural scenes the experiment names, once (skipped when the files exist)."""
    if exp.data.synth is not None:
        render_synth(exp.data.synth)


def render_synth(s: SynthConfig) -> list[Path]:
    """Render each family x split whose files are missing or were rendered with other options."""
    from rlkit.synth import CameraRange, Rooms, generate_split

    cam = CameraRange(width=tuple(s.width), hfov_deg=tuple(s.hfov))
    rooms = Rooms(lamp=s.indoor_lamp, color_jitter=s.indoor_color_jitter)
    written = []
    for family in s.families:
        for split, n in (("train", s.train_images), ("eval", s.eval_images)):
            jsonl = s.jsonl(family, split)
            manifest = jsonl.with_suffix(".synth.json")
            wanted = {"family": family, "split": split, "images": n, "seed": s.seed, "points": s.points,
                      "camera": dataclasses.asdict(cam)}
            if family == "indoor":  # room options only off their defaults: a manifest without them means default rooms
                wanted.update({k: getattr(s, k) for k in ("indoor_lamp", "indoor_color_jitter")
                               if getattr(s, k) != getattr(SynthConfig, k)})
            if s.pairs:  # only when set: a manifest without it is a split without pairs
                wanted["pairs"] = True
            current = json.loads(manifest.read_text()) if manifest.exists() else None
            if n > 0 and (not jsonl.exists() or current != json.loads(json.dumps(wanted))):
                generate_split(s.out, family, split, n, seed=s.seed, points_per_image=s.points, camera=cam,
                               rooms=rooms, pairs=s.pairs)
                atomic_write_text(manifest, json.dumps(wanted))
            if n > 0:
                written.append(jsonl)
    return written


def base_experiment(exp: Experiment) -> Experiment:
    return load_experiment(exp.base, exp.base_overrides)


def train_base_stage(exp: Experiment) -> None:
    """Train (or find finished) the base stage whose final checkpoint this experiment starts from."""
    if exp.base:
        run_experiment(base_experiment(exp))


def resolve_model(exp: Experiment, state=None) -> str:
    """The checkpoint training starts from: the base stage's final model, or model.name (the tiny
    default is built once, on the main process first)."""
    if exp.base:
        return str(Path(base_experiment(exp).output_dir) / "final")
    with state.main_process_first() if state is not None else contextlib.nullcontext():
        return resolve_model_path(exp.model)


@dataclasses.dataclass
class Sources:
    """The experiment's loaded datasets, loaded once per command."""

    train: list[Source]
    eval: list[Source]


def load_sources(exp: Experiment, splits: tuple[str, ...] = ("train", "eval")) -> Sources:
    load = lambda specs: [load_source(s, seed=exp.seed, skip_invalid=exp.data.skip_invalid) for s in specs]  # noqa: E731
    return Sources(train=load(exp.train_specs()) if "train" in splits else [],
                   eval=load(exp.eval_specs()) if "eval" in splits else [])


def build_stream(exp: Experiment, sources: Sources) -> TrainStream:
    """The endless training stream, exactly as the trainer gets it (label shuffling and image cache too)."""
    return TrainStream(sources.train, exp.camera_options(), exp.prompt_options(), seed=exp.seed,
                       cache_images=exp.data.cache_images, shuffle_labels=exp.data.shuffle_labels,
                       skip_invalid=exp.data.skip_invalid)


def build_evalset(exp: Experiment, sources: Sources, samples_per_dataset: int | None = None) -> EvalSet:
    """The eval selection (``samples_per_dataset``: another size than eval.samples_per_dataset, e.g. the
    learning curve's subset; the same eval.seed draws it)."""
    evalset = EvalSet(sources.eval, exp.camera_options(), exp.prompt_options(),
                      samples_per_dataset or exp.eval.samples_per_dataset, exp.eval.seed,
                      cache_images=exp.data.cache_images, skip_invalid=exp.data.skip_invalid)
    if not len(evalset):
        raise ConfigError(f"{exp.source}: no eval pixel could be drawn (skips: {evalset.skipped})")
    return evalset


def build_curve(exp: Experiment, sources: Sources, state):
    """The learning-curve callback of eval.during_training (None when it is off)."""
    during = exp.eval.during_training
    if during is None:
        return None
    from rlkit.curve import CurveCallback

    return CurveCallback(build_evalset(exp, sources, during.samples_per_dataset), during.every_steps,
                         exp.output_dir, batch_size=exp.eval.batch_size, max_new_tokens=exp.eval.max_new_tokens,
                         constant=exp.eval.constant, state=state)


def check_run_dir(exp: Experiment, out: Path) -> None:
    """A run dir belongs to one config: refuse to resume or skip into it with another."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{exp.source}: output_dir {out} is a file, not a folder")
    saved = out / "config.yaml"
    if saved.exists():
        def normal(e: Experiment) -> dict:
            return parse_yaml(yaml.safe_dump(e.to_dict(), sort_keys=False))

        try:  # through the loader, so a field config.yaml lacks is compared at its default
            same = normal(experiment_from_dict(parse_yaml(saved.read_text()), str(saved))) == normal(exp)
        except (ConfigError, TypeError, ValueError, yaml.YAMLError):
            same = False
        if not same:
            raise ConfigError(f"{out} holds a run of a different configuration ({saved}); "
                              "pass output_dir=NEW_DIR, or delete the folder to start over")


def save_final(trainer, final: Path, state) -> None:
    """Write final/ whole or not at all: model (LoRA merged) and processor into final.tmp, then rename."""
    tmp = final.with_name(final.name + ".tmp")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    fsdp = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if fsdp is not None:  # checkpoints stay sharded (resumable); final/ is one loadable model
        fsdp.set_state_dict_type("FULL_STATE_DICT")
    if getattr(trainer.model, "peft_config", None):
        if state.is_main_process:  # a standalone checkpoint, loadable like any other
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))
    if state.is_main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        tmp.rename(final)
    state.wait_for_everyone()


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model_fsdp_0")  # full, sharded, LoRA, legacy, FSDP sharded


def checkpoint_complete(folder: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint is whole when it parses and weights exist
    (a kill or a full disk mid-save leaves one without)."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any((folder / f).exists() for f in WEIGHT_FILES)


def last_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint-N in the run dir; incomplete newer ones are passed over and logged."""
    if not out.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, folder in reversed(steps):
        if checkpoint_complete(folder):
            return str(folder)
        log.warning("passing over incomplete checkpoint %s (no readable trainer_state.json or weights: the run "
                    "was killed or the disk filled up while it was written)", folder)
    return None


def resume_weights(checkpoint: str | None) -> str | None:
    """Where to load the model from when resuming a full fine-tune (None: from the starting model).

    transformers' Trainer reloads a checkpoint with a plain load_state_dict, without the key renaming
    that from_pretrained applies: Qwen2.5-VL saves ``visual.*``/``model.*`` but holds
    ``model.visual.*``/``model.language_model.*``, so every renamed weight would silently stay at its
    starting value, with only a missing-keys warning (huggingface/transformers#43701). Loading the
    model from the checkpoint with from_pretrained first makes that reload a no-op. LoRA checkpoints
    hold only adapters, which the Trainer reloads correctly through peft.
    """
    if checkpoint is None or not (Path(checkpoint) / "config.json").exists():
        return None
    if any((Path(checkpoint) / f).exists() for f in ("model.safetensors", "model.safetensors.index.json")):
        return checkpoint
    return None


class _KeyNameWarnings(logging.Filter):
    """Drops the Trainer's missing/unexpected-keys warnings, which only name renamed keys once the
    model already holds the checkpoint's weights (see resume_weights)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("There were missing keys in the checkpoint model loaded",
                                                   "There were unexpected keys in the checkpoint model loaded"))


@contextlib.contextmanager
def quiet_key_name_warnings(active: bool):
    logger, f = logging.getLogger("transformers.trainer"), _KeyNameWarnings()
    if active:
        logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def samples_seen(trainer) -> int:
    """Training samples (image + question) consumed; a GRPO group of completions is one sample."""
    from rlkit.curve import samples_per_step

    return round(trainer.state.global_step * samples_per_step(trainer.args))


def process_state():
    """The accelerate process state: one process, or one per rank under torchrun / accelerate launch
    (gloo on a machine without a GPU, so CPU ranks really form one job)."""
    from accelerate import PartialState

    return PartialState(cpu=no_accelerator())


def global_batch(trainer) -> str:
    a = trainer.args
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size
    group = getattr(a, "num_generations", None)
    samples = f"{per_step // group} samples ({per_step} completions, groups of {group})" if group else \
        f"{per_step} samples"
    return (f"global batch: {samples} per optimizer step = per_device_train_batch_size "
            f"{a.per_device_train_batch_size} x gradient_accumulation_steps {a.gradient_accumulation_steps} "
            f"x {a.world_size} process(es)")


def check_experiment(exp: Experiment, training: bool = True) -> None:
    """What can fail on the user's input, checked before any scene is rendered or step trained: the
    trainer arguments, the reward plugins (imported only by commands that train with them), the base
    stage's model and every data file (those data.synth renders excepted)."""
    if training:
        check_trainer_fields(exp)
        args = exp.trl_config()
        if exp.method == "grpo":
            from rlkit.grpo import reward_functions
            from rlkit.rewards import RewardLoadError

            try:
                reward_functions(exp)
            except RewardLoadError as e:
                raise ConfigError(f"{exp.source}: rewards: {e}") from None
        check_base_chain(exp)
        if exp.base and exp.model != ModelConfig() and exp.model != base_experiment(exp).model:
            raise ConfigError(f"{exp.source}: model.* differs from that of base {exp.base}, whose final checkpoint "
                              "this run starts from; set the model in the base experiment (or in base_overrides)")
        if args.max_steps < 1:  # the train stream is endless: only max_steps ends training
            raise ConfigError(f"{exp.source}: train.max_steps must be >= 1 (the training stream has no end), got "
                              f"{args.max_steps}")
        if args.per_device_train_batch_size < 1:
            raise ConfigError(f"{exp.source}: train.per_device_train_batch_size must be >= 1, got "
                              f"{args.per_device_train_batch_size}")
        weights = exp.train.get("reward_weights")
        if exp.method == "grpo" and weights is not None and len(weights) != len(exp.rewards):
            raise ConfigError(f"{exp.source}: train.reward_weights has {len(weights)} values for "
                              f"{len(exp.rewards)} rewards {exp.rewards}")
        name = exp.model.name
        if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
            raise ConfigError(f"{exp.source}: model.name: folder not found: {name}")
        try:
            peft_config(exp.model)
        except ConfigError as e:
            raise ConfigError(f"{exp.source}: {e}") from None
    synth_out = Path(exp.data.synth.out).resolve() if exp.data.synth is not None else None
    for section in ("train", "eval"):
        for i, spec in enumerate(getattr(exp.data, section)):
            path = Path(spec.path)
            if not path.is_file() and not (synth_out is not None and path.resolve().parent == synth_out):
                raise ConfigError(f"{exp.source}: data.{section}[{i}].path: file not found: {path}")


def check_base_chain(exp: Experiment) -> None:
    """base: stages lead to a first stage, never back to one already on the way."""
    seen, current = [Path(exp.source).resolve()], exp
    while current.base:
        path = Path(current.base).resolve()
        if path in seen:
            chain = " -> ".join(str(p) for p in [*seen, path])
            raise ConfigError(f"{exp.source}: base: the stages loop back: {chain}")
        seen.append(path)
        current = base_experiment(current)


def load_reports(sources) -> dict:
    """Per dataset: lines loaded, skipped (by field) and repaired, for metrics.json."""
    return {s.spec.label: {k: v for k, v in s.report.items() if k != "path"} for s in sources}


def run_experiment(exp: Experiment) -> dict:
    """Every step of the plan, in order; a finished run dir (metrics.json) is not run again."""
    out = Path(exp.output_dir)
    check_experiment(exp)
    check_run_dir(exp, out)
    if (out / "metrics.json").exists():
        log.info("%s is finished (metrics.json exists); delete it to run again", out)
        return json.loads((out / "metrics.json").read_text())
    state = process_state()
    with run_dir_lock(out, state), disk_full_said(out):
        with state.main_process_first():
            render_scenes(exp)
        train_base_stage(exp)
        sources = load_sources(exp)
        model_path = resolve_model(exp, state)
        evalset = build_evalset(exp, sources)  # before training: an eval set with no drawable pixel fails now
        final, info_path = out / "final", out / "train_info.json"
        model = processor = None
        if not (final / "config.json").exists():
            trainer, info = train(exp, model_path, sources, state, curve=build_curve(exp, sources, state))
            if state.num_processes == 1:
                model, processor = trainer.model, trainer.processing_class
            del trainer  # several processes evaluate a reloaded final/, never a (possibly sharded) training model
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        result = evaluate_run(exp, final, sources, model=model, processor=processor, extra=info, state=state,
                              evalset=evalset)
        if state.is_main_process:  # README.md: the model card, over TRL's template
            write_model_card(exp, result)
        return result


@contextlib.contextmanager
def disk_full_said(out: Path):
    """A write that fails for want of space ends as one line that says so (and that a re-run resumes)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the tokenizers library reports ENOSPC as a bare Exception
        if isinstance(e, (ConfigError, DiskFull)) or not disk_full(e, out):
            raise
        raise DiskFull(f"{out}: the disk is full ({type(e).__name__}: {str(e).splitlines()[0][:160]}); free space "
                       "and run the same command again: it resumes from the last complete checkpoint") from e


@contextlib.contextmanager
def run_dir_lock(out: Path, state):
    """One run at a time in a run dir: OUT/.rlkit.lock holds the running process's pid and host. A lock
    whose process is gone (same host) is stale and taken over; the main process holds it for all ranks."""
    lock = out / ".rlkit.lock"
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _acquire(lock, out)
    try:
        yield
    finally:
        if state.is_main_process:
            lock.unlink(missing_ok=True)


def _acquire(lock: Path, out: Path) -> None:
    import os
    import socket

    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        tmp = lock.with_name(f"{lock.name}.{me['pid']}")
        tmp.write_text(json.dumps(me))
        try:
            os.link(tmp, lock)  # appears whole or not at all: never an empty lock
        except FileExistsError:
            try:
                held = json.loads(lock.read_text())
            except (OSError, ValueError):
                held = {}
            finally:
                tmp.unlink(missing_ok=True)
            if held.get("host") == me["host"] and not _alive(held.get("pid")) or not held:
                log.warning("taking over the stale lock %s of pid %s, which is no longer running", lock, held.get("pid"))
                lock.unlink(missing_ok=True)
                continue
            raise ConfigError(f"{out} is in use by another run (pid {held.get('pid', '?')} on {held.get('host', '?')}, "
                              f"since {held.get('since', '?')}); wait for it or pass output_dir=NEW_DIR (if that run "
                              f"is gone from another machine, delete {lock})") from None
        tmp.unlink(missing_ok=True)
        return


def _alive(pid) -> bool:
    import os

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def train(exp: Experiment, model_path: str, sources: Sources, state, curve=None):
    """Train (resuming from the newest checkpoint) and save final/; returns the trainer and what
    training did (for metrics.json). ``curve``: the learning-curve callback (rlkit.curve), or None."""
    if exp.method == "sft":
        from rlkit.sft import make_trainer
    else:
        from rlkit.grpo import make_trainer
    out = Path(exp.output_dir)
    resume = last_checkpoint(out)
    weights = resume_weights(resume)
    stream = build_stream(exp, sources)
    trainer = make_trainer(exp, model_path, stream, weights=weights)
    if curve is not None:
        trainer.add_callback(curve)
    if state.is_main_process:  # only now that the experiment, its data, model and trainer are known good
        save_resolved(exp, out / "config.yaml")
    sharded = getattr(trainer.accelerator.state, "fsdp_plugin", None) is not None or trainer.is_deepspeed_enabled
    if sharded and getattr(trainer.model, "peft_config", None):
        raise ConfigError(f"{exp.source}: model.lora with FSDP or DeepSpeed: final/ merges the adapters on one "
                          "process, which needs the whole model there; train LoRA with DDP (accelerate/ddp.yaml)")
    if state.is_main_process:
        log.info(global_batch(trainer))
    if resume:
        log.info("resuming from %s%s", resume, " (weights loaded with from_pretrained)" if weights else "")
    t0 = time.time()
    if resume and json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"] >= \
            trainer.args.max_steps:  # killed after the last checkpoint: training again would add a step
        from transformers import TrainerState

        log.info("%s holds the last step: final/ is saved from it", resume)
        with quiet_key_name_warnings(weights is not None):  # full weights came with from_pretrained already
            trainer._load_from_checkpoint(resume)  # the Trainer's own reload (adapters too); no step is taken
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        metrics = {}
    else:
        with quiet_key_name_warnings(weights is not None):
            metrics = trainer.train(resume_from_checkpoint=resume).metrics
    check_weights_finite(exp, trainer.model)
    curve_seconds = curve.eval_seconds if curve is not None else 0.0
    info = {"train_seconds": round(time.time() - t0 - curve_seconds, 1), "train_samples": samples_seen(trainer),
            **({"curve": curve.points, "curve_eval_seconds": round(curve_seconds, 1)} if curve is not None else {}),
            "train_data": load_reports(sources.train), "train_metrics": metrics,
            "builder_skips": dict(stream.skips)}
    if exp.method == "grpo":
        from rlkit.grpo import grpo_diagnostics

        info["grpo_diagnostics"] = grpo_diagnostics(trainer.state.log_history)
    if state.is_main_process:  # before final/ and evaluation: a kill after this loses nothing
        atomic_write_text(out / "train_info.json", json.dumps(strict_json(info), indent=1))
    save_final(trainer, out / "final", state)
    return trainer, info


def check_weights_finite(exp: Experiment, model) -> None:
    """A diverged run (NaN or inf weights) stops before final/ is written; the Trainer itself only logs a
    NaN grad norm and keeps going with a loss of 0."""
    import torch

    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]
    if bad:
        raise ConfigError(f"{exp.source}: training diverged: {len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); "
                          "final/ was not written; lower train.learning_rate or clip gradients harder (train.max_grad_norm)")


def evaluate_run(exp: Experiment, model_path, sources: Sources, model=None, processor=None, extra=None,
                 state=None, evalset: EvalSet | None = None, api: dict | None = None) -> dict:
    """Evaluate on the experiment's eval selection. Under several processes each generates whole
    batches of the selection (batch b on rank b mod world size) and the main process writes the results.
    A model_path ``openai:MODEL`` is a model behind an OpenAI-compatible server (rlkit.api; ``api``:
    predict_api's options)."""
    import gc

    import torch
    from accelerate.utils import gather_object

    state = state or process_state()
    evalset = evalset or build_evalset(exp, sources)
    frame = selection_frame(evalset)
    if isinstance(model_path, str) and model_path.startswith("openai:"):
        from rlkit.api import predict_api

        if state.num_processes > 1:
            raise ConfigError("an API model is evaluated by one process: run it without torchrun / accelerate launch")
        texts, stats = predict_api(model_path, evalset, exp.eval.max_new_tokens, **(api or {}))
        add_predictions(frame, [texts.get(k, "") for k in range(len(evalset))])
        extra = {**(extra or {}), "api": stats}
    elif model_path is not None:
        gc.collect()  # what training left (optimizer state, a sharded model) before the eval model comes
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if model is None:
            from transformers.integrations import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

            if is_deepspeed_zero3_enabled():  # ZeRO-3's config outlives training: it would shard the eval model
                unset_hf_deepspeed_config()
            processor = load_processor(str(model_path), exp.model)
            model = load_model(str(model_path), exp.model, device=state.device)
        if getattr(model, "peft_config", None):
            model = model.merge_and_unload()
        batches = list(range(0, len(evalset), exp.eval.batch_size))[state.process_index::state.num_processes]
        mine = predict(model, processor, evalset, batches, exp.eval.batch_size, exp.eval.max_new_tokens,
                       progress=state.is_main_process)
        texts = dict(gather_object(list(mine.items())) if state.num_processes > 1 else mine)
        add_predictions(frame, [texts.get(k, "") for k in range(len(evalset))])
    # items whose image could not be used (data.skip_invalid): out of the scores, counted in eval_skipped
    bad = dict(gather_object(list(evalset.bad.items()))) if state.num_processes > 1 else evalset.bad
    frame = drop_skipped(frame, evalset, bad)
    tasks = list(exp.prompt_options().task_weights())
    medians = train_medians(sources.train, tasks)
    result = summarize(frame, exp.eval.constant, medians)
    by_task = summarize_tasks(frame, exp.eval.constant, medians) if len(tasks) > 1 else None
    payload = {"eval_skipped": evalset.skipped, "eval_samples": len(frame), "eval_data": load_reports(sources.eval),
               "train_data": load_reports(sources.train),
               "world_size": state.num_processes,
               **(extra or {})}
    if state.is_main_process:
        write_results(exp.output_dir, frame, result, payload, by_task)
    state.wait_for_everyone()
    return {"metrics": result, **({"tasks": by_task} if by_task else {}), **payload}
