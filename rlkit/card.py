"""The run dir's README.md: a model card saying what was trained, how well it does and how to get it again.

TRL writes a generic card there (a text-generation pipeline asked about a time machine); the kit
replaces it once the run is evaluated, from the resolved experiment and metrics.json.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd

from rlkit.camera import Camera
from rlkit.config import ConfigError, Experiment, load_experiment, parse_yaml
from rlkit.evaluate import markdown_table, tasks_table
from rlkit.io import atomic_write_text
from rlkit.prompts import Query, question


def _leaves(d: dict, prefix: str = "") -> dict:
    """Dotted key -> value for every non-mapping value of a nested mapping (an empty mapping has none)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _override(key: str, value) -> str:
    text = value if isinstance(value, str) and parse_yaml(value) == value else json.dumps(value)
    return f"{key}={text}"


def reproduce_command(exp: Experiment) -> str | None:
    """``./run.sh SOURCE key=value ...`` that loads exactly this experiment (the overrides are its
    differences from the source YAML), or None when no such command does (the YAML is gone or
    changed since, or a key of it was dropped)."""
    try:
        plain = _leaves(load_experiment(exp.source).to_dict())
        target = _leaves(exp.to_dict())
        if set(plain) - set(target):
            return None
        overrides = [_override(k, v) for k, v in target.items() if k not in plain or plain[k] != v]
        if load_experiment(exp.source, overrides).to_dict() != exp.to_dict():
            return None
    except (ConfigError, OSError, TypeError, ValueError):
        return None
    return " ".join(shlex.quote(a) for a in ["./run.sh", exp.source, *overrides])


def _example_question(exp: Experiment) -> str:
    """The question for a pixel at the center of a 640 x 480 image (text coordinates and intrinsics
    in it are those of that example)."""
    cam, opts = exp.camera, exp.prompt
    task = next(iter(opts.task_weights()))
    q = Query(task, Camera(500.0, 500.0, 319.5, 239.5, 640, 480), 320, 240, 0.0, second=(400, 300), param=2.0)
    return question(q, reference=opts.reference, strategy=cam.strategy, template=opts.template)


def _front_matter(exp: Experiment) -> list[str]:
    """The Hugging Face Hub's card metadata; base_model only for a Hub id (not a local folder)."""
    hub_id = "/" in exp.model.name and not Path(exp.model.name).exists()
    return ["---", "library_name: transformers", "pipeline_tag: image-text-to-text",
            *([f"base_model: {exp.model.name}"] if hub_id else []),
            "tags:", *(f"- {t}" for t in ("rlkit", "trl", exp.method, "depth-estimation")), "---", ""]


def _what_was_trained(exp: Experiment, metrics: dict, eval_counts: dict[str, int]) -> list[str]:
    method, start = exp.method.upper(), f"`{exp.model.name}`"
    if exp.base:
        start += f", after the base stage `{exp.base}` (its `final/`)"
    lines = [f"- **Model**: starts from {start}; "
             + (f"LoRA {json.dumps(exp.model.lora)}, merged into `final/`" if exp.model.lora else "full fine-tune")]
    how = f"with rewards {', '.join(f'`{r}`' for r in exp.rewards)}" if exp.method == "grpo" else "on the answers"
    if exp.reward_kwargs:
        how += f" ({json.dumps(exp.reward_kwargs)})"
    if metrics.get("train_samples"):
        how += f"; {metrics['train_samples']:,} training samples"
    if metrics.get("train_seconds"):
        how += f" in {metrics['train_seconds']:.0f} s"
    lines.append(f"- **Method**: {method} {how}; seed {exp.seed}")
    cam = exp.camera
    focal = f", f_uni {cam.f_uni:g} px" if cam.strategy == "unify_focal" else ""
    crops = f", crops {list(cam.crop_width)} x {list(cam.crop_height)} px" if cam.crop_width else ""
    lines.append(f"- **Camera**: {cam.strategy}{focal}{crops}")
    opts = exp.prompt
    marker = f" ({opts.marker.shape} marker)" if opts.reference == "marker" else ""
    tasks = ", ".join(f"{t} ({w:g})" for t, w in opts.task_weights().items()) if opts.tasks else opts.task
    lines.append(f"- **Prompt**: task {tasks}, template {opts.template}, pixel reference {opts.reference}{marker};"
                 f" e.g. \"{_example_question(exp)}\"")
    lines += ["", "| split | dataset | file | records |", "|---|---|---|---|"]
    for split, specs in (("train", exp.data.train), ("eval", exp.data.eval)):
        report = metrics.get(f"{split}_data", {})
        for spec in specs:
            records = str(report.get(spec.label, {}).get("loaded", "?"))
            if split == "eval" and spec.label in eval_counts:
                records += f" ({eval_counts[spec.label]} eval pixels)"
            lines.append(f"| {split} | {spec.label} | `{spec.path}` | {records} |")
    return lines


def _curve_and_diagnostics(metrics: dict) -> list[str]:
    """The learning curve (eval.during_training) and GRPO's diagnostics, when the run has them."""
    lines = []
    if metrics.get("curve"):
        curve = pd.DataFrame(metrics["curve"])
        cols = ["step", "samples", "train_seconds"] + [c for c in curve if c.startswith(("delta1/", "abs_rel/"))]
        lines += ["## Learning curve", "", f"Held-out δ1 and AbsRel during training on a fixed subset "
                  f"(`curve.csv`; {metrics.get('curve_eval_seconds', 0):.0f} s of evaluation, not counted in the "
                  "training time):", "", curve[cols].to_markdown(index=False, floatfmt=".3f"), ""]
    if metrics.get("grpo_diagnostics"):
        rows = [{"metric": k, "first 10% of steps": v["first"], "last 10%": v["last"]}
                for k, v in metrics["grpo_diagnostics"].items()]
        lines += ["## GRPO diagnostics", "", "Means over the first and last tenth of the logged steps (TensorBoard has "
                  "every step): `reward_std` and `frac_reward_zero_std` are the rewards' spread within groups, "
                  "`answers/distinct_per_group` the distinct answers among a prompt's completions.", "",
                  pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"), ""]
    return lines


def model_card(exp: Experiment, metrics: dict, eval_counts: dict[str, int] | None = None) -> str:
    """The card's markdown. ``metrics``: what metrics.json holds; ``eval_counts``: eval pixels per dataset."""
    out = Path(exp.output_dir)
    final = str(out / "final")
    lines = [*_front_matter(exp), f"# {out.name}: metric depth by {exp.method.upper()}", "",
             f"`{exp.model.name}` trained with rlkit (the DepthLM recipe) to answer how far a marked pixel is "
             "from the camera, in meters" + (" (and the other tasks below)." if exp.prompt.tasks else "."), "", "## What was trained", "",
             *_what_was_trained(exp, metrics, eval_counts or {}), "", "## Evaluation", "",
             f"Greedy answers on {metrics.get('eval_samples', '?')} eval pixels; a failed parse counts as wrong. "
             "Datasets as columns, their average last (the DepthLM paper's Table 1); the baselines need no model.", ""]
    if metrics.get("tasks"):  # several tasks: each against its own baselines first (the paper's Table 3 layout)
        lines += ["Per task (each task's average over the datasets, against its own baselines):", ""]
        lines += [tasks_table(metrics["tasks"], m) for m in ("delta1", "abs_rel")] + ["", "All tasks pooled:", ""]
    for metric in ("delta1", "abs_rel"):
        lines += [markdown_table(metrics["metrics"], metric), ""]
    lines += _curve_and_diagnostics(metrics)
    command = reproduce_command(exp) or \
        f"./run.sh {shlex.quote(str(out / 'config.yaml'))} output_dir=NEW_DIR  # config.yaml in this folder"
    lines += ["## Reproduce", "", "```bash", command, "```", "", "## Load", "", "```python",
              "from transformers import AutoModelForImageTextToText, AutoProcessor", "",
              f"model = AutoModelForImageTextToText.from_pretrained({final!r})",
              f"processor = AutoProcessor.from_pretrained({final!r})", "```", "",
              "Images go in as in training, with the camera transform and marker above (`./run.sh data preview "
              f"--experiment {shlex.quote(str(out / 'config.yaml'))} --mode eval` shows them); "
              "`rlkit.prompts.parse_answer` reads the number from the answer.", ""]
    return "\n".join(lines)


def write_model_card(exp: Experiment, metrics: dict) -> Path:
    """README.md in the run dir, over TRL's."""
    out = Path(exp.output_dir)
    preds = out / "predictions.csv"
    counts = pd.read_csv(preds, usecols=["dataset"])["dataset"].value_counts().to_dict() if preds.exists() else None
    path = out / "README.md"
    atomic_write_text(path, model_card(exp, metrics, counts))
    return path
