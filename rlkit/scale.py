"""``./run.sh scale SWEEP.yaml --model qwen2.5-vl-3b``: take a sweep's winning arm to the paper's full run.

The winner is the arm with the best mean held-out δ1 (average over eval datasets) at the mini scale, and it wins
only if it is ahead of every other arm by more than two standard errors of the seed-paired difference; when none
is, nothing is written unless ``--arm`` names the arm to take anyway. The arm's settings are translated to paper
scale over the paper recipe of the chosen model:

- ``camera.f_uni`` and the crop ranges scale with the recipe's values over the sweep experiment's own
  (the miniature's f_uni 50 stands for the paper's 1000, its crops 100-140 for 1000-1400);
- a marker of the recipe's shape becomes the recipe's marker (listed when the miniature's size or outline
  differed); another shape keeps its miniature size, listed;
- camera strategy, resize and crop rule, prompt wording, method, rewards and reward arguments are copied;
- everything else (training lengths and rates, data, model sizes) keeps the recipe's value and is listed.

The result, ``experiments/paper/winner_<sweep>.yaml`` (``arm_<sweep>_<arm>.yaml`` for an arm taken with ``--arm``
that is not the winner), extends the recipe; it is loaded and validated here without a GPU, and the launch commands
are printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import yaml

from rlkit.config import ConfigError, deep_merge, load_experiment
from rlkit.io import atomic_write_text
from rlkit.sweep import Sweep, _overrides, arm_experiment, load_sweep, paired_winner

PAPER = Path("experiments/paper")
# --model -> (SFT recipe, FSDP2 accelerate config); GRPO winners use the GRPO recipe with this model's name
MODELS = {
    "qwen2.5-vl-3b": ("qwen2_5_vl_3b_sft.yaml", "fsdp2_qwen2_5_vl.yaml"),
    "qwen2.5-vl-7b": ("qwen2_5_vl_7b_sft.yaml", "fsdp2_qwen2_5_vl.yaml"),
    "pixtral-12b": ("pixtral_12b_sft.yaml", "fsdp2_pixtral.yaml"),
}
GRPO_RECIPE = "qwen2_5_vl_3b_grpo.yaml"  # the paper's one GRPO recipe; other models set model.name over it
COPIED = ("method", "rewards", "reward_kwargs", "camera.strategy", "camera.resize", "camera.crop",
          "prompt.reference", "prompt.template", "prompt.task", "prompt.tasks")


def results(sweep: Sweep, scale: str, csv: str | Path | None = None) -> pd.DataFrame:
    """The sweep's per-seed rows: its results.csv under the sweeps dir, else the committed figure csv."""
    paths = [Path(csv)] if csv else [sweep.results_path(scale), Path("analysis/figures") / f"{sweep.figure}.csv"]
    for path in paths:
        if path.is_file():
            df = pd.read_csv(path)
            return df[df["scale"] == scale] if "scale" in df else df
    raise ConfigError(f"{sweep.source}: no results at {' or '.join(map(str, paths))}; run the sweep first "
                      f"(./run.sh {sweep.source} --jobs 2)")


def _scaled_range(value, mini, paper) -> list[int]:
    return [int(round(v * p / m)) for v, m, p in zip(value, mini, paper)]


def _kind(shape: str) -> str:
    return shape.removeprefix("official_")


def translate(sweep: Sweep, arm: str, recipe: Path) -> tuple[dict, list[str]]:
    """The winning arm's overrides at paper scale (dotted keys) and the ones left at the recipe's value."""
    mini = arm_experiment(sweep, "mini", arm, sweep.seeds[0], shared=False)
    plain = load_experiment(sweep.experiment, _overrides(sweep.scales.get("mini") or {}))  # without the arm
    paper = load_experiment(recipe)
    out, kept = {}, []
    for key, value in sweep.arms[arm].items():
        if key in ("x", "series"):
            continue
        if key == "camera.f_uni":
            out[key] = round(value * paper.camera.f_uni / plain.camera.f_uni, 3)
        elif key in ("camera.crop_width", "camera.crop_height"):
            name = key.split(".")[1]
            out[key] = _scaled_range(value, getattr(plain.camera, name), getattr(paper.camera, name))
        elif key == "prompt.marker":
            if _kind(mini.prompt.marker.shape) == _kind(paper.prompt.marker.shape):
                # the recipe's own marker of that kind (the kit's arrow or the official one), sized for its images
                m, r = mini.prompt.marker, paper.prompt.marker
                if (m.size, m.outline) != (r.size, r.outline):
                    kept.append(f"{key}: the recipe's {r.shape} (size {r.size}) in place of the miniature's {value}")
                continue
            out[key] = value
            kept.append(f"{key}: {value} (a miniature marker size: check it at paper image sizes)")
        elif key in COPIED:
            out[key] = value
        else:
            kept.append(f"{key}: {value} (not translated: the recipe's value is kept)")
    return out, kept


def nested(dotted: dict) -> dict:
    tree: dict = {}
    for key, value in dotted.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _kit_conventions(method: str) -> dict:
    """The settings of _paper_kit.yaml (and _paper_kit_grpo.yaml for GRPO) themselves, without what they extend."""
    names = ["_paper_kit.yaml"] + (["_paper_kit_grpo.yaml"] if method == "grpo" else [])
    merged: dict = {}
    for name in names:
        own = yaml.safe_load((PAPER / name).read_text())
        own.pop("extends", None)
        merged = deep_merge(merged, own)
    return merged


def _write_validated(out: Path, header: list[str], kept: list[str], body: dict):
    """Write the experiment only if it loads and validates (through a temp file beside it, for its extends path)."""
    notes = ["# Left at the recipe's value or not translated:", *[f"#   {k}" for k in kept]] if kept else []
    text = "\n".join(header + notes) + "\n" + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    tmp = out.with_name(f".{out.stem}.tmp.yaml")
    atomic_write_text(tmp, text)
    try:
        exp = load_experiment(tmp)  # loads and validates (no GPU, no download)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return exp


def scale_winner(sweep_path: str | Path, model: str = "qwen2.5-vl-3b", out: str | Path | None = None,
                 csv: str | Path | None = None, sweeps_dir: str | Path = "runs/sweeps",
                 arm: str | None = None) -> Path | None:
    """Write the paper experiment of the sweep's winning arm; None (and a message) when no arm wins.
    ``arm``: write that arm's experiment whatever the comparison says (the paired table goes in its header)."""
    if model not in MODELS:
        raise ConfigError(f"--model {model!r} is not one of {sorted(MODELS)}")
    sweep = load_sweep(sweep_path, sweeps_dir)
    if arm is not None and arm not in sweep.arms:
        raise ConfigError(f"--arm {arm!r} is not an arm of {sweep.source}; choose from {list(sweep.arms)}")
    best, table, clear = paired_winner(results(sweep, "mini", csv))
    lines = [f"  {best} − {r.arm}: {r.difference:+.3f} ± {r.se:.3f} (SE, {r.seeds} seeds)"
             for r in table.itertuples()]
    verdict = f"'{best}' wins" if clear else f"no arm wins beyond 2 standard errors (best mean: {best})"
    if not clear and arm is None:
        source = f" --results {csv}" if csv else ""
        print(f"{sweep.name}: {verdict}; nothing written.\n" + "\n".join(lines)
              + f"\nto scale an arm anyway: ./run.sh scale {sweep_path} --model {model}{source} --arm {best}")
        return None
    pick = arm or best
    chosen = pick != best or not clear  # taken with --arm, not won
    if chosen:
        verdict += f"; '{pick}' chosen with --arm"
    sft_recipe, accel = MODELS[model]
    method = sweep.arms[pick].get("method", load_experiment(sweep.experiment).method)
    recipe = PAPER / (GRPO_RECIPE if method == "grpo" else sft_recipe)
    accel = "ddp.yaml" if method == "grpo" else accel  # as the GRPO recipe launches (vLLM colocated or a server)
    settings, kept = translate(sweep, pick, recipe)
    if method == "grpo":
        paper_model = load_experiment(PAPER / sft_recipe).model
        settings |= {"model.name": paper_model.name, "model.max_pixels": paper_model.max_pixels}
    # an arm taken with --arm is not the winner: its own file, never over a winner's
    out = Path(out or PAPER / (f"arm_{sweep.name}_{pick}.yaml" if chosen else f"winner_{sweep.name}.yaml"))
    header = [f"# {sweep.name}'s arm '{pick}' at paper scale ({model}): {verdict}; written by",
              f"#   ./run.sh scale {sweep_path} --model {model}" + (f" --arm {arm}" if arm else ""),
              "# Paired over seeds at the mini scale (held-out δ1, average over eval datasets):",
              *[f"#{x}" for x in lines]]
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"extends": os.path.relpath(recipe.resolve(), out.parent.resolve()), **nested(settings)}
    try:
        exp = _write_validated(out, header, kept, body)
    except ConfigError as e:  # e.g. text coordinates or another camera strategy: the official template refuses them
        if "'official'" not in str(e):
            raise ConfigError(f"the arm '{pick}' at paper scale does not validate: {e}") from None
        kit = _kit_conventions(method)
        kept.append(f"the kit's conventions ({'_paper_kit_grpo.yaml' if method == 'grpo' else '_paper_kit.yaml'}) "
                    f"in place of the official code's, which refuse this arm: {str(e).split(': ', 1)[-1]}")
        body = {"extends": body["extends"], **deep_merge(kit, nested(settings))}
        exp = _write_validated(out, header, kept, body)
    print(f"{sweep.name}: {verdict}\n" + "\n".join(lines))
    print(f"wrote {out} (extends {recipe}; f_uni {exp.camera.f_uni:g}, crops {list(exp.camera.crop_width)} x "
          f"{list(exp.camera.crop_height)}, marker {exp.prompt.marker.shape})")
    if kept:
        print("not translated:\n" + "\n".join(f"  {k}" for k in kept))
    print("launch:\n"
          f"  accelerate launch --config_file {PAPER / 'accelerate' / accel} --num_processes 8 -m rlkit {out}\n"
          f"  sbatch --nodes 4 {PAPER / 'slurm.sh'} {out} {PAPER / 'accelerate' / accel}")
    return out
