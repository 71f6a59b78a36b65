"""Command line: ``python -m rlkit COMMAND ...`` (``run.sh`` calls this)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("rlkit")


def _pair(kind):
    def parse(s: str):
        parts = s.replace(",", " ").split()
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two values 'A,B', got {s!r}")
        return tuple(kind(p) for p in parts)
    return parse


def _non_negative(s: str) -> float:
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def cmd_data_synth(a) -> None:
    from rlkit.synth import CameraRange, Rooms, generate_split

    cam = CameraRange(width=a.width, hfov_deg=a.hfov)
    rooms = Rooms(lamp=a.indoor_lamp, color_jitter=a.indoor_color_jitter)
    for family in a.families:
        for split, n in (("train", a.train_images), ("eval", a.eval_images)):
            if n > 0:
                path = generate_split(a.out, family, split, n, seed=a.seed, points_per_image=a.points, camera=cam,
                                      rooms=rooms)
                print(path)


def cmd_data_preview(a) -> None:
    import numpy as np

    from rlkit.builder import CameraOptions, DatasetSpec, PromptOptions, TrainStream, EvalSet, load_source
    from rlkit.markers import MarkerStyle
    from rlkit.preview import save_preview

    if a.experiment:  # exactly what that experiment's model gets
        from rlkit.config import load_experiment
        from rlkit.run import ensure_synth

        exp = load_experiment(a.experiment)
        ensure_synth(exp)
        specs = exp.train_specs() if a.mode == "train" else exp.eval_specs()
        sources = [load_source(s, seed=exp.seed, skip_invalid=exp.data.skip_invalid) for s in specs]
        cam, prompt = exp.camera_options(), exp.prompt_options()
        a.seed = exp.seed if a.seed is None else a.seed
    elif a.data:
        sources = [load_source(DatasetSpec(p)) for p in a.data]
        cam = CameraOptions(strategy=a.strategy, f_uni=a.f_uni, crop_width=a.crop_width, crop_height=a.crop_height)
        prompt = PromptOptions(template=a.template, reference=a.reference,
                               marker=MarkerStyle(shape=a.marker, size=a.marker_size))
    else:
        raise SystemExit("data preview needs --experiment EXP.yaml or --data A.jsonl ...")
    a.seed = 0 if a.seed is None else a.seed
    if a.mode == "train":
        stream = TrainStream(sources, cam, prompt, seed=a.seed)
        samples = [stream.sample(i) for i in range(a.n)]
    else:
        ev = EvalSet(sources, cam, prompt, num_per_dataset=a.n, seed=a.seed)
        pick = np.linspace(0, len(ev) - 1, a.n).astype(int)
        samples = [ev.sample(int(k)) for k in pick]
    print(save_preview(samples, a.out))


def cmd_run(a) -> None:
    from rlkit.config import load_experiment
    from rlkit.run import run_experiment
    from rlkit.sweep import is_sweep_file, load_sweep, run_sweep

    if is_sweep_file(a.experiment):
        if a.overrides:
            raise SystemExit("a sweep takes no key=value overrides; put them in its scales: or arms:")
        run_sweep(load_sweep(a.experiment, a.sweeps_dir), a.scale, arms=a.arms, seeds=a.seeds, jobs=a.jobs)
    else:
        if a.arms or a.seeds is not None or a.jobs != 1:
            raise SystemExit("--arms, --seeds and --jobs are for sweep files (a YAML with arms:)")
        run_experiment(load_experiment(a.experiment, a.overrides))


def cmd_eval(a) -> None:
    from rlkit.builder import load_source
    from rlkit.config import load_experiment
    from rlkit.run import check_inputs, evaluate_run

    exp = load_experiment(a.experiment, a.overrides)
    check_inputs(exp)
    model = None if a.model == "none" else (a.model or str(Path(exp.output_dir) / "final"))
    if model is not None and a.model is None and not Path(model).is_dir():
        raise SystemExit(f"{model} does not exist: train first (./run.sh {a.experiment}) or pass --model")
    # never the run dir itself: its metrics.json marks a finished training run
    exp.output_dir = a.out or str(Path(exp.output_dir) / ("eval-baselines" if model is None else "eval"))
    train_sources = [load_source(s, seed=exp.seed, skip_invalid=exp.data.skip_invalid) for s in exp.train_specs()]
    evaluate_run(exp, model, train_sources)


def vllm_pixel_args(model) -> list[str]:
    """vLLM's image processor bounds, set to training's (vLLM reads only the checkpoint's: vllm#15364)."""
    bounds = {k: getattr(model, k) for k in ("min_pixels", "max_pixels") if getattr(model, k) is not None}
    return ["--mm-processor-kwargs", json.dumps(bounds)] if bounds else []


def cmd_serve(a) -> None:
    """TRL's vLLM server with the experiment's starting model (for train.vllm_mode: server)."""
    import importlib.util
    import os

    from rlkit.config import load_experiment
    from rlkit.models import resolve_model_path
    from rlkit.run import base_experiment

    if importlib.util.find_spec("vllm") is None:
        raise SystemExit("vLLM is not installed; install it with: pip install -e '.[vllm]'  (GPU machines only)")
    exp = load_experiment(a.experiment, a.overrides)
    if exp.base:  # serve never trains: the base stage must be finished first
        model = Path(base_experiment(exp).output_dir) / "final"
        if not (model / "config.json").exists():
            raise SystemExit(f"{model} does not exist yet: run the base stage first (./run.sh {exp.base})")
        model = str(model)
    else:
        model = resolve_model_path(exp.model)
    trl_cli = Path(sys.executable).with_name("trl")
    cmd = [str(trl_cli), "vllm-serve", "--model", model, *a.serve_args, *vllm_pixel_args(exp.model)]
    log.info("exec %s", " ".join(cmd))
    os.execv(cmd[0], cmd)


def cmd_bench(a) -> None:
    from rlkit import bench

    bench.main(a.name, a.args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make or look at datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="render procedural scenes into DepthLMBench jsonl + PNGs")
    s.add_argument("--out", default="data/synth", help="output folder")
    s.add_argument("--families", nargs="+", default=["indoor", "outdoor"], help="scene families")
    s.add_argument("--train-images", type=int, default=2000, help="train images per family")
    s.add_argument("--eval-images", type=int, default=200, help="eval images per family")
    s.add_argument("--points", type=int, default=16, help="labeled pixels per image")
    s.add_argument("--seed", type=int, default=0, help="base seed (train and eval scenes never share a seed)")
    s.add_argument("--width", type=_pair(int), default=(160, 320), help="image width range 'MIN,MAX' in pixels")
    s.add_argument("--hfov", type=_pair(float), default=(45.0, 95.0), help="horizontal field of view range, degrees")
    s.add_argument("--indoor-lamp", type=_non_negative, default=0.0,
                   help="light rooms from the camera (a flash): meters at which a facing surface is half lit; 0: no lamp")
    s.add_argument("--indoor-color-jitter", type=_non_negative, default=1.0,
                   help="scale the room-to-room spread of paint colors (1: full spread; 0: fixed paints)")
    s.set_defaults(func=cmd_data_synth)

    v = data.add_parser("preview", help="write a PNG grid of built samples (what the model sees)")
    v.add_argument("--experiment", help="take data, camera and prompt from this experiment YAML")
    v.add_argument("--data", nargs="+", help="DepthLMBench jsonl files (without --experiment)")
    v.add_argument("--out", default="preview.png", help="output PNG")
    v.add_argument("--n", type=int, default=8, help="number of samples")
    v.add_argument("--mode", choices=["train", "eval"], default="train", help="train: random crops; eval: no crop")
    v.add_argument("--strategy", default="unify_focal", help="camera strategy")
    v.add_argument("--f-uni", type=float, default=1000.0, help="unified focal length in pixels")
    v.add_argument("--crop-width", type=_pair(int), default=(1000, 1400), help="train crop width range")
    v.add_argument("--crop-height", type=_pair(int), default=(700, 1200), help="train crop height range")
    v.add_argument("--template", default="sft", help="sft or grpo")
    v.add_argument("--reference", default="marker", help="marker or text")
    v.add_argument("--marker", default="arrow", help="arrow, cross, circle or square")
    v.add_argument("--marker-size", type=int, default=5, help="marker size in pixels")
    v.add_argument("--seed", type=int, default=None, help="sampling seed (default: the experiment's, else 0)")
    v.set_defaults(func=cmd_data_preview)

    r = sub.add_parser("run", help="train and evaluate one experiment (also: ./run.sh EXPERIMENT.yaml)")
    r.add_argument("experiment", help="experiment YAML")
    r.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.learning_rate=1e-4")
    r.add_argument("--scale", default="mini", help="sweeps: which scales: entry to run (mini on a CPU, paper on GPUs)")
    r.add_argument("--sweeps-dir", default="runs/sweeps", help="sweeps: where run dirs and results.csv go")
    r.add_argument("--arms", nargs="+", help="sweeps: run only these arms")
    r.add_argument("--seeds", nargs="+", type=int, help="sweeps: run only these seeds")
    r.add_argument("--jobs", type=int, default=1,
                   help="sweeps: runs side by side in separate processes, each with CPU threads / jobs threads")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("eval", help="evaluate a checkpoint (default: the run's final/) on the experiment's eval data")
    e.add_argument("experiment", help="experiment YAML (its data, camera, prompt and eval sections are used)")
    e.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    e.add_argument("--model", help="checkpoint folder or Hugging Face id; 'none' scores only the baselines")
    e.add_argument("--out", help="where predictions.csv and metrics.json go (default: OUTPUT_DIR/eval, "
                                 "or OUTPUT_DIR/eval-baselines with --model none)")
    e.set_defaults(func=cmd_eval)

    v = sub.add_parser("serve", help="start TRL's vLLM server with the experiment's model (GRPO server mode)")
    v.add_argument("experiment", help="experiment YAML")
    v.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    v.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                   help="arguments for trl vllm-serve, e.g. --serve-args --tensor_parallel_size 2")
    v.set_defaults(func=cmd_serve)

    b = sub.add_parser("bench", help="benchmarks: data, train")
    b.add_argument("name", help="which benchmark")
    b.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    from rewards import RewardLoadError
    from rlkit.config import ConfigError
    from rlkit.records import RecordError
    from rlkit.sweep import SweepFailed

    try:
        args.func(args)
    except (ConfigError, RecordError, RewardLoadError) as e:  # the user's input: the message says it all
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SweepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
