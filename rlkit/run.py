"""The plan that runs an experiment, one named step after another:

    check_run_dir -> check_experiment -> render_scenes -> train_base_stage -> load_sources -> ensure_model
    -> build_stream / build_evalset / build_curve -> train -> evaluate_run

``run``, ``eval``, ``data preview``, the benchmarks and the sweeps all take their steps from here. The run
folder's mechanics (lock, resume, final/) are rlkit.rundir's; evaluation is rlkit.evaluate's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

from rlkit.builder import EvalSet, Source, TrainStream, load_source
from rlkit.card import write_model_card
from rlkit.checkpoints import check_model_folder
from rlkit.config import ConfigError, Experiment, check_trainer_fields, load_experiment, save_resolved, shared_selection
from rlkit.evaluate import evaluate_run, load_reports, strict_json
from rlkit.io import atomic_write_text
from rlkit.models import peft_config, process_state, ensure_model_path
from rlkit.rundir import (check_run_dir, code_version, disk_full_said, last_checkpoint, quiet_key_name_warnings,
                          resume_weights, run_dir_lock, save_final)
from rlkit.schema import ModelConfig, SynthConfig

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
        for split, n in s.splits():
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


def ensure_model(exp: Experiment, state=None) -> str:
    """The checkpoint training starts from: the base stage's final model, or model.name (the tiny
    default is built once, on the main process first)."""
    if exp.base:
        return str(Path(base_experiment(exp).output_dir) / "final")
    with state.main_process_first() if state is not None else contextlib.nullcontext():
        return ensure_model_path(exp.model)


@dataclasses.dataclass
class Sources:
    """The experiment's loaded datasets, loaded once per command."""

    train: list[Source]
    eval: list[Source]


def missing_data_file(exp: Experiment, section: str) -> str | None:
    """The first data.<section> file that does not exist (those data.synth renders excepted), said as
    ``data.train[0].path: file not found: PATH``; None when every one exists."""
    s = exp.data.synth
    rendered = set() if s is None else {s.jsonl(family, split).resolve() for family in s.families
                                        for split, _ in s.splits()}
    for i, spec in enumerate(getattr(exp.data, section)):
        path = Path(spec.path)
        if not path.is_file() and path.resolve() not in rendered:
            return f"data.{section}[{i}].path: file not found: {path}"
    return None


def missing_train_data(exp: Experiment) -> str | None:
    """Why the training labels cannot be read (for the median baseline of an evaluation), or None."""
    return "data.train is empty" if not exp.data.train else missing_data_file(exp, "train")


def load_sources(exp: Experiment, splits: tuple[str, ...] = ("train", "eval")) -> Sources:
    load = lambda specs: [load_source(s, seed=exp.seed, skip_invalid=exp.data.skip_invalid) for s in specs]  # noqa: E731
    return Sources(train=load(exp.data.train) if "train" in splits else [],
                   eval=load(exp.data.eval) if "eval" in splits else [])


def build_stream(exp: Experiment, sources: Sources) -> TrainStream:
    """The endless training stream, exactly as the trainer gets it (label shuffling and image cache too)."""
    return TrainStream(sources.train, exp.camera, exp.prompt, seed=exp.seed,
                       cache_images=exp.data.cache_images, shuffle_labels=exp.data.shuffle_labels,
                       label_scale=exp.data.label_scale,
                       skip_invalid=exp.data.skip_invalid)


def build_evalset(exp: Experiment, sources: Sources, samples_per_dataset: int | None = None) -> EvalSet:
    """The eval selection (``samples_per_dataset``: another size than eval.samples_per_dataset, e.g. the
    learning curve's subset; the same eval.seed draws it)."""
    evalset = EvalSet(sources.eval, exp.camera, exp.prompt,
                      samples_per_dataset or exp.eval.samples_per_dataset, exp.eval.seed,
                      cache_images=exp.data.cache_images, skip_invalid=exp.data.skip_invalid,
                      shared_with=shared_selection(exp))
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
                         constant=exp.eval.constant, process=state)


def samples_seen(trainer) -> int:
    """Training samples (image + question) consumed; a GRPO group of completions is one sample."""
    from rlkit.curve import samples_per_step

    return round(trainer.state.global_step * samples_per_step(trainer.args))


def global_batch(trainer) -> str:
    a = trainer.args
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size
    group = getattr(a, "num_generations", None)
    samples = f"{per_step // group} samples ({per_step} completions, groups of {group})" if group else \
        f"{per_step} samples"
    return (f"global batch: {samples} per optimizer step = per_device_train_batch_size "
            f"{a.per_device_train_batch_size} x gradient_accumulation_steps {a.gradient_accumulation_steps} "
            f"x {a.world_size} process(es)")


def check_experiment(exp: Experiment, training: bool = True, sections: tuple[str, ...] = ("train", "eval")) -> None:
    """What can fail on the user's input, checked before any scene is rendered or step trained: the base
    stage and the model folder, the data files of ``sections`` (those data.synth renders excepted; ``eval`` reads
    the training labels only where they exist), the reward plugins (imported only by commands that train with
    them), then what needs TRL, transformers and peft (seconds to import): the trainer arguments and LoRA."""
    if training:
        if not exp.data.train:
            raise ConfigError(f"{exp.source}: data.train is empty (list jsonl files, or set data.synth)")
        check_base_chain(exp)
        if exp.base and exp.model != ModelConfig() and exp.model != base_experiment(exp).model:
            raise ConfigError(f"{exp.source}: model.* differs from that of base {exp.base}, whose final checkpoint "
                              "this run starts from; set the model in the base experiment (or in base_overrides)")
        if not exp.base:  # a base stage's final/ does not exist yet
            try:
                check_model_folder(exp.model.name, "model.name")
            except ConfigError as e:
                raise ConfigError(f"{exp.source}: {e}") from None
    for section in sections:
        missing = missing_data_file(exp, section)
        if missing:
            raise ConfigError(f"{exp.source}: {missing}")
    if not training:
        return
    if exp.method == "grpo":
        from rlkit.rewards import RewardLoadError, load_rewards

        try:
            load_rewards(exp.rewards, exp.reward_kwargs)
        except RewardLoadError as e:
            raise ConfigError(f"{exp.source}: rewards: {e}") from None
    check_trainer_fields(exp)
    args = exp.trl_config()
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
    try:
        peft_config(exp.model)
    except ConfigError as e:
        raise ConfigError(f"{exp.source}: {e}") from None


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


def run_experiment(exp: Experiment) -> dict:
    """Every step of the plan, in order; a finished run dir (metrics.json) is not run again."""
    out = Path(exp.output_dir)
    eval_changed = check_run_dir(exp, out)
    check_experiment(exp)
    if (out / "metrics.json").exists() and not eval_changed:
        log.info("%s is finished (metrics.json exists); delete it to run again", out)
        return json.loads((out / "metrics.json").read_text())
    state = process_state()
    with run_dir_lock(out, state), disk_full_said(out):
        with state.main_process_first():
            render_scenes(exp)
        train_base_stage(exp)
        sources = load_sources(exp)
        model_path = ensure_model(exp, state)
        evalset = build_evalset(exp, sources)  # before training: an eval set with no drawable pixel fails now
        final, info_path = out / "final", out / "train_info.json"
        model = processor = None
        if not (final / "config.json").exists():
            trainer, info = train(exp, model_path, sources, state, curve=build_curve(exp, sources, state))
            if state.num_processes == 1:
                model, processor = trainer.model, trainer.processing_class
            del trainer  # several processes evaluate a reloaded final/, never a (possibly sharded) training model
        info = json.loads(info_path.read_text()) if info_path.exists() else rebuilt_train_info(exp, out)
        result = evaluate_run(exp, final, sources, evalset, model=model, processor=processor, extra=info,
                              state=state)
        if state.is_main_process:  # README.md: the model card, over TRL's template
            write_model_card(exp, result)
            if eval_changed:  # after metrics.json: a crash between the two only evaluates once more
                save_resolved(exp, out / "config.yaml")
        return result


def rebuilt_train_info(exp: Experiment, out: Path) -> dict:
    """What training did, when final/ exists without train_info.json (killed between the two, or the file lost):
    the samples from the newest checkpoint's step; the seconds and builder skips are not known."""
    from rlkit.curve import CURVE_FILE, samples_per_step

    ckpt = last_checkpoint(out)
    if ckpt is None:
        return {}
    state = json.loads((Path(ckpt) / "trainer_state.json").read_text())
    log.warning("%s is missing: training info rebuilt from %s (train_seconds and builder_skips unknown)",
                out / "train_info.json", ckpt)
    info = {"train_samples": round(state["global_step"] * samples_per_step(exp.trl_config())), "train_seconds": None,
            "builder_skips": None, "train_info": f"rebuilt from {Path(ckpt).name}/trainer_state.json"}
    if (out / CURVE_FILE).is_file():
        import pandas as pd

        info["curve"] = pd.read_csv(out / CURVE_FILE).to_dict("records")
    if exp.method == "grpo":
        from rlkit.grpo import grpo_diagnostics

        info["grpo_diagnostics"] = grpo_diagnostics(state.get("log_history", []))
    return info


def train(exp: Experiment, model_path: str, sources: Sources, state, curve=None):
    """Train (resuming from the newest checkpoint) and save final/; returns the trainer and what
    training did (for metrics.json). ``curve``: the learning-curve callback (rlkit.curve), or None."""
    if exp.method == "sft":
        from rlkit.sft import make_trainer
    else:
        from rlkit.grpo import make_trainer
    out = Path(exp.output_dir)
    code = code_version() if state.is_main_process else None  # what this session trains with, read before it does
    resume = last_checkpoint(out)
    weights = resume_weights(resume)
    stream = build_stream(exp, sources)
    trainer = make_trainer(exp, model_path, stream, weights=weights)
    if curve is not None:
        trainer.add_callback(curve)
    if state.is_main_process:  # only now that the experiment, its data, model and trainer are known good
        save_resolved(exp, out / "config.yaml")
    sharded = getattr(trainer.accelerator.state, "fsdp_plugin", None) is not None or trainer.is_deepspeed_enabled
    if sharded and curve is not None:  # its greedy generation would run on the sharded training model, rank by rank
        raise ConfigError(f"{exp.source}: eval.during_training with FSDP or DeepSpeed: the learning curve generates "
                          "with the training model on each rank; run it with DDP (accelerate/ddp.yaml), or set "
                          "eval.during_training=null")
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
    curve_seconds = curve.eval_seconds if curve is not None else 0.0  # this session's: train_seconds is too
    info = {"train_seconds": round(time.time() - t0 - curve_seconds, 1), "train_samples": samples_seen(trainer),
            **({"curve": curve.points, "curve_eval_seconds": round(curve_seconds, 1)} if curve is not None else {}),
            "train_data": load_reports(sources.train), "train_metrics": metrics,
            "builder_skips": dict(stream.skips), "code": code}
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


