"""The learning curve: held-out evaluation during training, for SFT and GRPO alike.

``eval.during_training: {every_steps: N, samples_per_dataset: M}`` evaluates a fixed held-out subset (M
pixels per eval dataset, drawn with ``eval.seed``: the same pixels for every method and seed) at step 0 (the
starting checkpoint; a resumed run keeps its points up to the checkpoint instead), every N optimizer steps
and at the last step. Each point holds the step, the training
samples seen, the wall seconds spent training (evaluation excluded) and δ1 / AbsRel per eval dataset; it
goes to ``curve.csv`` in the run dir, to TensorBoard (``curve/delta1/<dataset>``, x = step) and, through
train_info.json, to metrics.json under ``curve``. The points use the same greedy generation and batches as
``./run.sh eval``, so a point equals a separate evaluation of that checkpoint on the same subset.

A transformers TrainerCallback: the Trainer's own hook, so both TRL trainers get it unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

from rlkit.builder import EvalSet
from rlkit.evaluate import MODEL, generate_selection, scored_frame, selection_frame, summarize
from rlkit.io import atomic_write_text

log = logging.getLogger(__name__)

CURVE_FILE = "curve.csv"


def samples_per_step(args) -> float:
    """Training samples (image + question) per optimizer step; a GRPO group of completions is one sample."""
    completions = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return completions / getattr(args, "num_generations", 1)


def curve_metrics(frame: pd.DataFrame, constant: float) -> dict[str, float]:
    """δ1 and AbsRel per eval dataset and their average, as ``delta1/<dataset>`` / ``abs_rel/<dataset>``."""
    result = summarize(frame, constant)[MODEL]
    return {f"{m}/{ds}": float(cells[m]) for ds, cells in result.items() for m in ("delta1", "abs_rel")}


class CurveCallback(TrainerCallback):
    """Evaluates ``evalset`` every ``every_steps`` optimizer steps (and at steps 0 and last)."""

    def __init__(self, evalset: EvalSet, every_steps: int, out_dir: str | Path, *, batch_size: int,
                 max_new_tokens: int, constant: float, process):
        """``process``: accelerate's process state (rank and world size), not the Trainer's state."""
        self.evalset, self.every, self.out = evalset, every_steps, Path(out_dir)
        self.batch_size, self.max_new_tokens, self.constant = batch_size, max_new_tokens, constant
        self.process = process
        self.frame = selection_frame(evalset)
        self.points = self._saved_points()
        self.eval_seconds = 0.0
        self.t0 = self.offset = 0.0
        self.writer = None
        self.started = False

    def _saved_points(self) -> list[dict]:
        """The points of an interrupted run (resumed: they are kept up to the checkpoint's step)."""
        path = self.out / CURVE_FILE
        return pd.read_csv(path).to_dict("records") if path.is_file() else []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and "tensorboard" in (args.report_to or []):
            from torch.utils.tensorboard import SummaryWriter

            # beside transformers' own event files (OUTPUT_DIR/runs/<date_host>, or $TENSORBOARD_LOGGING_DIR)
            root = os.getenv("TENSORBOARD_LOGGING_DIR") or str(Path(args.output_dir) / "runs")
            self.writer = SummaryWriter(log_dir=str(Path(root).expanduser() / "curve"))
        self.started = False

    def on_step_begin(self, args, state, control, **kwargs):
        """The start: step 0 evaluated, or a resumed run's points kept up to its checkpoint's step (known only
        here, after on_train_begin); a resumed run adds no point off the every_steps grid."""
        if self.started:
            return
        self.started = True
        self.points = [p for p in self.points if p["step"] <= state.global_step]
        self.offset = self.points[-1]["train_seconds"] if self.points else 0.0  # the time since that point is lost
        self.t0 = time.time()
        if state.global_step == 0:
            self.points = []
            self._evaluate(args, state, kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._evaluate(args, state, kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()

    def _evaluate(self, args, state, kwargs) -> None:
        start = time.time()
        texts = generate_selection(kwargs["model"], kwargs["processing_class"], self.evalset, self.batch_size,
                                   self.max_new_tokens, self.process, progress=False)
        frame = scored_frame(self.frame, self.evalset, texts, self.process)
        seconds = time.time() - start
        self.eval_seconds += seconds
        point = {"step": state.global_step, "samples": round(state.global_step * samples_per_step(args)),
                 "train_seconds": round(self.offset + time.time() - self.t0 - self.eval_seconds, 2),
                 "eval_seconds": round(seconds, 2), **curve_metrics(frame, self.constant)}
        self.points.append(point)
        if self.process.is_main_process:
            atomic_write_text(self.out / CURVE_FILE, pd.DataFrame(self.points).to_csv(index=False))
            if self.writer is not None:
                for key, value in point.items():
                    if "/" in key:
                        self.writer.add_scalar(f"curve/{key}", value, state.global_step)
                self.writer.flush()
            log.info("curve step %d (%d samples): δ1 %s (eval %.1f s)", point["step"], point["samples"],
                     " ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in point.items() if k.startswith("delta1/")),
                     seconds)
