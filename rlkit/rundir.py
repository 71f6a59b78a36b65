"""The run folder: one run at a time in it (a lock), one configuration per folder, complete checkpoints and
resume, final/ written whole, and a full disk said in one line.

A run dir holds config.yaml (resolved), checkpoint-*/ (resumable), final/ (the trained model and processor),
curve.csv (eval.during_training), predictions.csv, metrics.json and README.md (the model card, rlkit.card).
metrics.json marks the end of a run; a run dir that has it is finished and is not run again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import yaml

from rlkit.config import ConfigError, Experiment, experiment_from_dict, parse_yaml
from rlkit.errors import DiskFull, disk_full

log = logging.getLogger(__name__)


def code_version() -> dict:
    """The code a run was trained with, for train_info.json / metrics.json and the sweeps' csvs: the kit's git
    commit (``dirty`` when tracked files differ from it), or only the package version where the kit is not a git
    checkout of its own (an installed wheel, or a folder inside another repository)."""
    import os
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        kit = version("rlkit")
    except PackageNotFoundError:
        kit = None
    root = Path(__file__).resolve().parent.parent
    # no index.lock taken beside the user's own git, and never another repository named by the environment
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")} | {"GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30, check=True,
                              env=env).stdout.decode("utf-8", "replace").strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            raise ValueError("the kit is not this repository's top")
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
                "version": kit}
    except (OSError, ValueError, subprocess.SubprocessError):  # no git, or not a checkout of the kit
        return {"commit": None, "dirty": None, "version": kit}


def check_run_dir(exp: Experiment, out: Path) -> bool:
    """A run dir belongs to one training config: refuse to resume or skip into it with another. A config.yaml
    with nothing trained beside it (no checkpoint, final/ or metrics.json: a run killed before its first save,
    or while config.yaml was written) binds nothing; the run replaces it once it holds the folder's lock.
    The final evaluation's settings bind nothing: True when only they changed (the run evaluates again)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{exp.source}: output_dir {out} is a file, not a folder")
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"{exp.source}: output_dir {out} is a link to {out.readlink()}, which does not exist")
    saved = out / "config.yaml"
    if not saved.exists():
        return False

    def normal(e: Experiment) -> dict:
        return parse_yaml(yaml.safe_dump(e.to_dict(), sort_keys=False))

    try:  # through the loader, so a field config.yaml lacks is compared at its default
        old, new = normal(experiment_from_dict(parse_yaml(saved.read_text()), str(saved))), normal(exp)
    except (OSError, UnicodeDecodeError, ConfigError, TypeError, ValueError, yaml.YAMLError):
        old, new = None, {}
    if old == new:
        return False
    if not _trained_anything(out):
        log.warning("%s differs from this run's configuration (or is cut short) and nothing was trained in %s: "
                    "it is replaced", saved, out)
        return False
    if old is not None and _training_part(old) == _training_part(new):
        log.info("only final-eval settings differ from %s: %s is evaluated again with them", saved, out)
        return True
    raise ConfigError(f"{out} holds a run of a different configuration ({saved}); "
                      "pass output_dir=NEW_DIR, or delete the folder to start over")


# what only the final evaluation reads; eval.seed and eval.during_training also choose the learning curve's subset
# and cadence during training, so they bind the folder like training settings
FINAL_EVAL_ONLY = ("samples_per_dataset", "batch_size", "max_new_tokens", "constant", "shared_with")


def _training_part(config: dict) -> dict:
    """The settings that bind a run folder: all but the final evaluation's (which the learning curve, when on,
    also uses: then they bind too)."""
    def eval_part(v: dict) -> dict:
        return v if v.get("during_training") else {f: x for f, x in v.items() if f not in FINAL_EVAL_ONLY}

    return {k: (eval_part(v) if k == "eval" and isinstance(v, dict) else v) for k, v in config.items()}


def _trained_anything(out: Path) -> bool:
    return any(out.glob("checkpoint-*")) or (out / "final").exists() or (out / "metrics.json").exists()


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
