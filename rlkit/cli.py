"""Command line: ``python -m rlkit COMMAND ...`` (``run.sh`` calls this)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rlkit.errors import ConfigError

log = logging.getLogger("rlkit")


def _positive(s: str) -> int:
    n = int(s)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {s!r}")
    return n


def _pair(kind):
    def parse(s: str):
        parts = s.replace(",", " ").split()
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two values 'A,B', got {s!r}")
        return tuple(kind(p) for p in parts)
    return parse


def cmd_data_synth(a) -> None:
    from rlkit.config import ConfigError
    from rlkit.schema import SynthConfig
    from rlkit.run import render_synth

    try:
        cfg = SynthConfig(out=a.out, families=a.families, train_images=a.train_images, eval_images=a.eval_images,
                          val_images=a.val_images, points=a.points, seed=a.seed, width=list(a.width), hfov=list(a.hfov),
                          indoor_lamp=a.indoor_lamp, indoor_color_jitter=a.indoor_color_jitter, pairs=a.pairs)
    except ValueError as e:
        raise ConfigError(f"data synth: {e}") from None
    for path in render_synth(cfg):
        print(path)


def cmd_data_preview(a) -> None:
    """Exactly what a model gets: the plan's own train stream (crops, shuffled labels) or eval set."""
    import numpy as np

    from rlkit.config import ConfigError, apply_overrides, experiment_from_dict, load_experiment
    from rlkit.preview import save_preview
    from rlkit.run import build_evalset, build_stream, check_experiment, load_sources, render_scenes

    if a.experiment:
        exp = load_experiment(a.experiment, a.overrides)
    elif a.data:  # the kit's defaults (the paper's camera and marker), with key=value overrides
        files = [{"path": p} for p in a.data]
        exp = experiment_from_dict(apply_overrides({"data": {"train": files, "eval": files}}, a.overrides),
                                   source="data preview --data")
    else:
        raise ConfigError("data preview needs --experiment EXP.yaml or --data A.jsonl ...")
    from rlkit.io import check_out_file

    check_out_file(a.out)  # before any sample is built
    check_experiment(exp, training=False)
    render_scenes(exp)
    if a.seed is not None:
        exp.seed = exp.eval.seed = a.seed
    if a.mode == "train":
        stream = build_stream(exp, load_sources(exp, ("train",)))
        samples = [stream.sample(i) for i in range(a.n)]
    else:
        exp.eval.samples_per_dataset = a.n
        ev = build_evalset(exp, load_sources(exp, ("eval",)))
        samples = [ev.sample(int(k)) for k in np.linspace(0, len(ev) - 1, a.n).astype(int)]
    print(save_preview(samples, a.out))


def cmd_data_render(a) -> None:
    """The exact model inputs of an experiment's eval selection or first N train samples, as files."""
    from rlkit.config import load_experiment
    from rlkit.io import check_out_folder
    from rlkit.preview import write_samples
    from rlkit.run import build_evalset, build_stream, check_experiment, load_sources, render_scenes

    exp = load_experiment(a.experiment, a.overrides)
    check_out_folder(a.out)  # before any sample is built
    check_experiment(exp, training=False)
    render_scenes(exp)
    if a.split == "train":
        stream = build_stream(exp, load_sources(exp, ("train",)))
        samples = [stream.sample(i) for i in range(a.n or 100)]
    else:
        ev = build_evalset(exp, load_sources(exp, ("eval",)))
        samples = [ev.sample(k) for k in range(min(a.n or len(ev), len(ev)))]
    print(write_samples(samples, a.out))


def cmd_data_check(a) -> None:
    """A full pass over a jsonl: every line validated (bad ones counted, not fatal) and every image opened
    whole and sized against its intrinsics; counts per reason, and exit 2 naming the first bad file:line."""
    from rlkit.records import RecordError
    from rlkit.store import check_images, open_records

    if not Path(a.file).is_file():
        raise ConfigError(f"data check {a.file}: {'a folder' if Path(a.file).is_dir() else 'no such file'}; "
                          "give a jsonl file")
    store = open_records(a.file, root=a.root, skip_invalid=True, allow_outside_root=a.allow_outside_root)
    reasons, examples = check_images(store, workers=a.workers)
    lines, repaired = store.report["skipped"], store.report["repaired"]
    print(f"{a.file}: {store.report['loaded'] + sum(lines.values())} lines, {sum(lines.values())} bad; "
          f"{len(store)} images opened, {sum(reasons.values())} bad")
    for name, n in sorted(lines.items()):
        print(f"  bad line, field '{name}': {n}")
    for reason, n in sorted(reasons.items()):
        print(f"  {reason}: {n}")
    for name, n in sorted(repaired.items()):
        print(f"  repaired ({name}): {n}")
    if lines or reasons:
        print("first problems:")
        for msg in [*store.errors, *examples]:
            print(f"  {msg}")
        raise RecordError(f"{a.file}: {sum(lines.values())} bad lines, {sum(reasons.values())} bad images")


def cmd_data_convert(a) -> None:
    """A DepthLMBench jsonl (and its images) from a public dataset's RGB images, depth maps and intrinsics
    (rlkit.convert); prints which depth it read and which it wrote, as OUT.convert.json records."""
    import dataclasses
    import math
    import shlex

    from rlkit.convert import convert, describe, open_adapter

    listing = open_adapter(a.adapter, a.source, depth_kind=a.depth_kind, scale=a.scale,
                           intrinsics=tuple(a.intrinsics) if a.intrinsics else None, split_file=a.split_file,
                           split=a.split, nyu_depths=a.nyu_depths, sunrgbd_depth=a.sunrgbd_depth, height=a.height)
    over = {}
    if a.min_depth is not None:
        over["min_depth"] = a.min_depth
    if a.max_depth is not None:
        over["max_depth"] = None if math.isinf(a.max_depth) else a.max_depth
    if a.invalid_value:
        over["invalid_values"] = (*listing.spec.invalid_values, *a.invalid_value)
    spec = dataclasses.replace(listing.spec, **over)
    crop = None if a.no_crop else (tuple(a.crop) if a.crop else listing.crop)
    # the command as parsed (main() may be called with a list): every option that was given
    words = ["./run.sh", "data", "convert", a.adapter, a.source]
    for key, value in sorted(vars(a).items()):
        if key in ("adapter", "source", "func", "command", "data_command") or value is None or value is False \
                or value == []:
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, (list, tuple)) else [] if value is True else [value]
        words += [flag, *map(str, values)] if key not in ("exclude", "invalid_value") else \
            [w for v in values for w in (flag, str(v))]
    summary = convert(listing.entries, a.out, spec, labels=a.labels, seed=a.seed, margin=a.margin, crop=crop,
                      images_dir=a.images_dir, depth_maps=a.depth_maps, exclude=tuple(a.exclude or ()),
                      limit=a.limit, overwrite=a.overwrite,
                      info={"command": shlex.join(words), "adapter": a.adapter,
                            "source": str(Path(a.source).resolve())})
    print(describe(summary))


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
    from rlkit.config import load_experiment
    from rlkit.api import is_api_model
    from rlkit.evaluate import evaluate_run
    from rlkit.run import build_evalset, check_experiment, load_sources, missing_train_data

    exp = load_experiment(a.experiment, a.overrides)
    check_experiment(exp, training=False, sections=("eval",))
    missing = missing_train_data(exp)
    if missing:  # the released model's Table 1 needs only eval files: the median-of-train-labels baseline is skipped
        log.warning("the median (train labels) baseline is unavailable (%s); the constant baseline is reported", missing)
    model = None if a.model == "none" else (a.model or str(Path(exp.output_dir) / "final"))
    if model is not None and a.model is None and not Path(model).is_dir():
        raise ConfigError(f"{model} does not exist: train first (./run.sh {a.experiment}) or pass --model")
    api_model = is_api_model(model)  # a model behind an API: no folder (rlkit.api)
    if model is not None and not api_model:  # what the folder lacks, before any data is read
        from rlkit.checkpoints import check_model_folder

        check_model_folder(model, "--model")
    if a.out and Path(a.out).resolve() == Path(exp.output_dir).resolve():
        raise ConfigError(f"--out {a.out} is the run dir itself, whose metrics.json marks a finished training run; "
                          "pass another folder")
    if a.out and any((Path(a.out) / name).exists() for name in ("config.yaml", "final", "train_info.json")):
        raise ConfigError(f"--out {a.out} holds a training run (config.yaml, final/ or train_info.json): its "
                          "metrics.json would be replaced; pass another folder")
    api = {k: v for k, v in (("api_base", a.api_base), ("concurrency", a.api_concurrency), ("cache_dir", a.api_cache),
                             ("timeout", a.api_timeout), ("max_retries", a.api_retries)) if v is not None}
    if api and not api_model:
        raise ConfigError("--api-base, --api-concurrency, --api-cache, --api-timeout and --api-retries are for "
                          "--model openai:NAME")
    sources = load_sources(exp, ("eval",) if missing else ("train", "eval"))
    # never the run dir itself: its metrics.json marks a finished training run
    sub = "eval-baselines" if model is None else "eval"
    if api_model:  # eval-openai-gpt-4o
        sub = "eval-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in model)
    exp.output_dir = a.out or str(Path(exp.output_dir) / sub)
    evaluate_run(exp, model, sources, build_evalset(exp, sources), api=api)


def vllm_pixel_args(model) -> list[str]:
    """vLLM's image processor size arguments, set to training's (vLLM reads only the checkpoint's: vllm#15364);
    the family table says how model.min_pixels/max_pixels read for this model."""
    from rlkit.models import FAMILIES, family_from_name

    family = family_from_name(model.name) or FAMILIES["qwen2_5_vl"]
    kwargs = family.image_size_kwargs(model, model.name)
    return ["--mm-processor-kwargs", json.dumps(kwargs)] if kwargs else []


def cmd_sweeps(a) -> None:
    """Every ablation sweep, then every figure (rlkit.sweep.run_all)."""
    from rlkit.sweep import run_all

    run_all(a.scale, a.jobs, a.only, a.folder, a.sweeps_dir, a.figures)


def cmd_scale(a) -> None:
    """A sweep's winning arm as a paper experiment (rlkit.scale)."""
    from rlkit.scale import scale_winner

    scale_winner(a.sweep, a.model, a.out, a.results, a.sweeps_dir, a.arm)


def cmd_serve(a) -> None:
    """TRL's vLLM server with the experiment's starting model (for train.vllm_mode: server)."""
    import importlib.util
    import os

    from rlkit.config import load_experiment
    from rlkit.models import ensure_model_path
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
        model = ensure_model_path(exp.model)
    trl_cli = Path(sys.executable).with_name("trl")
    cmd = [str(trl_cli), "vllm-serve", "--model", model, *a.serve_args, *vllm_pixel_args(exp.model)]
    log.info("exec %s", " ".join(cmd))
    os.execv(cmd[0], cmd)


def cmd_pointcloud(a) -> None:
    from rlkit.pointcloud import pointcloud_command

    pointcloud_command(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_run_and_eval(sub)
    _add_outputs_and_tools(sub)
    return p


def _add_data_commands(sub) -> None:
    """data synth | preview | render | check | convert."""
    from rlkit.schema import SynthConfig

    data = sub.add_parser("data", help="make or look at datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="render procedural scenes into DepthLMBench jsonl + PNGs")
    d = SynthConfig()  # the defaults, stated once there
    s.add_argument("--out", default=d.out, help="output folder")
    s.add_argument("--families", nargs="+", default=d.families, help="scene families")
    s.add_argument("--train-images", type=int, default=d.train_images, help="train images per family")
    s.add_argument("--eval-images", type=int, default=d.eval_images, help="eval images per family")
    s.add_argument("--val-images", type=int, default=d.val_images,
                   help="validation images per family ({family}_val.jsonl: for tuning, never the eval scenes)")
    s.add_argument("--points", type=int, default=d.points, help="labeled pixels per image")
    s.add_argument("--seed", type=int, default=d.seed, help="base seed (train, eval and validation scenes never share a seed)")
    s.add_argument("--width", type=_pair(int), default=d.width, help="image width range 'MIN,MAX' in pixels")
    s.add_argument("--hfov", type=_pair(float), default=d.hfov, help="horizontal field of view range, degrees")
    s.add_argument("--indoor-lamp", type=float, default=d.indoor_lamp,
                   help="light rooms from the camera (a flash): meters at which a facing surface is half lit; 0: no lamp")
    s.add_argument("--indoor-color-jitter", type=float, default=d.indoor_color_jitter,
                   help="scale the room-to-room spread of paint colors (1: full spread; 0: fixed paints)")
    s.add_argument("--pairs", action="store_true", default=d.pairs,
                   help="also render each scene from a moved camera (the camera_motion task's \"pair\" views)")
    s.set_defaults(func=cmd_data_synth)

    v = data.add_parser("preview", help="write a PNG grid of built samples (what the model sees)")
    v.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. camera.f_uni=500 prompt.marker.shape=cross")
    v.add_argument("--experiment", help="take data, camera and prompt from this experiment YAML")
    v.add_argument("--data", nargs="+", help="DepthLMBench jsonl files (without --experiment: the kit's defaults)")
    v.add_argument("--out", default="preview.png", help="output PNG")
    v.add_argument("--n", type=_positive, default=8, help="number of samples")
    v.add_argument("--mode", choices=["train", "eval"], default="train", help="train: random crops; eval: no crop")
    v.add_argument("--seed", type=int, default=None, help="sampling seed (default: the experiment's)")
    v.set_defaults(func=cmd_data_preview)

    v = data.add_parser("render", help="write the exact model inputs: one PNG per sample + samples.jsonl")
    v.add_argument("experiment", help="experiment YAML")
    v.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    v.add_argument("--split", choices=["eval", "train"], default="eval",
                   help="eval: the eval selection (uncropped); train: the first N samples of the train stream")
    v.add_argument("--out", required=True, help="output folder")
    v.add_argument("--n", type=_positive, default=None, help="samples (eval: default all selected; train: default 100)")
    v.set_defaults(func=cmd_data_render)

    v = data.add_parser("check", help="validate every line and open every image of a jsonl; counts per reason")
    v.add_argument("file", help="DepthLMBench jsonl")
    v.add_argument("--root", help="image folder (default: the jsonl's folder)")
    v.add_argument("--allow-outside-root", action="store_true",
                   help="image paths may leave the root (../, absolute), as a dataset's allow_outside_root")
    v.add_argument("--workers", type=int, default=1, help="processes opening images side by side")
    v.set_defaults(func=cmd_data_check)

    from rlkit.convert import ADAPTERS

    v = data.add_parser("convert", help="a DepthLMBench jsonl (+ its images) from a dataset's RGB images, depth maps "
                                        "and intrinsics; see the README's 'Converting public datasets'")
    v.add_argument("adapter", choices=sorted(ADAPTERS),
                   help="; ".join(f"{k}: SOURCE is {ad.source}" for k, ad in ADAPTERS.items()))
    v.add_argument("source", help="the dataset (see adapter)")
    v.add_argument("--out", required=True, help="the jsonl to write; images go below its folder (--images-dir)")
    v.add_argument("--labels", type=int, default=100, help="labeled pixels per image (fewer where fewer are valid)")
    v.add_argument("--seed", type=int, default=0, help="label seed (each image's labels: this seed and its name)")
    v.add_argument("--margin", type=int, default=10,
                   help="no label closer than this many pixels (of the original image) to its border, so a marker "
                        "fits around it; the default marker needs 5 px at f_uni 1000, i.e. 5*fx/1000 here")
    v.add_argument("--depth-kind", choices=["z", "euclidean"],
                   help="generic (required): the depth files hold camera z or euclidean distance")
    v.add_argument("--scale", type=float, help="generic: meters per depth unit (0.001 for millimetres; default 1)")
    v.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                   help="generic, kitti: the camera of manifest rows without one (pixel centers at integers)")
    v.add_argument("--min-depth", type=float, help="drop depths below this many meters (default 0.001)")
    v.add_argument("--max-depth", type=float,
                   help="drop depths above this many meters (adapter default: nyuv2 10, sunrgbd 8, else none; inf: "
                        "none)")
    v.add_argument("--invalid-value", type=float, action="append",
                   help="a raw depth value meaning 'no measurement' (e.g. 65535), compared before --scale; repeatable")
    v.add_argument("--crop", nargs=4, type=int, metavar=("X0", "Y0", "X1", "Y1"),
                   help="keep only this window of every image (X1, Y1 exclusive; nyuv2 default 41 45 602 472)")
    v.add_argument("--no-crop", action="store_true", help="no crop, not even the adapter's default")
    v.add_argument("--exclude", action="append", help="skip images whose name contains this text; repeatable")
    v.add_argument("--limit", type=int, help="convert only the first N images")
    v.add_argument("--images-dir", default="rgb", help="images folder, relative to the jsonl's folder")
    v.add_argument("--depth-maps", action="store_true",
                   help="also write each image's euclidean depth map (NAME.depth.npz, the line's depth_map, read by "
                        "pointcloud)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    v.add_argument("--split-file", help="nyuv2: splits.mat (trainNdxs, testNdxs)")
    v.add_argument("--split", choices=["train", "val", "test"],
                   help="nyuv2: which split of --split-file (train, test); ddad: which scenes of ddad.json (default "
                        "val)")
    v.add_argument("--nyu-depths", choices=["depths", "rawDepths"],
                   help="nyuv2: the in-painted depths (default) or the raw Kinect ones")
    v.add_argument("--sunrgbd-depth", choices=["depth", "depth_bfx"],
                   help="sunrgbd: the sensor's depth (default) or the refined depth_bfx")
    v.add_argument("--height", type=int, help="eth3d: rows of the undistorted images (default 1280)")
    v.set_defaults(func=cmd_data_convert)


def _add_run_and_eval(sub) -> None:
    """run (a sweep file too), eval."""
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
    e.add_argument("--model", help="checkpoint folder or Hugging Face id; 'none' scores only the baselines; "
                                   "openai:MODEL a model behind an OpenAI-compatible server (key: $OPENAI_API_KEY)")
    e.add_argument("--out", help="where predictions.csv and metrics.json go (default: OUTPUT_DIR/eval, "
                                 "OUTPUT_DIR/eval-baselines with --model none, OUTPUT_DIR/eval-openai-MODEL)")
    e.add_argument("--api-base", help="openai:MODEL: the server's URL, e.g. http://localhost:8000/v1 (default: OpenAI)")
    e.add_argument("--api-concurrency", type=int, help="openai:MODEL: requests in flight at once (default 8)")
    e.add_argument("--api-cache", help="openai:MODEL: response cache folder, shared across runs (default .cache/api)")
    e.add_argument("--api-timeout", type=float, help="openai:MODEL: seconds a request waits per try (default 60)")
    e.add_argument("--api-retries", type=int, help="openai:MODEL: retries of a failed request (default 2; a stalled "
                                                   "server costs at most about timeout x (1 + retries) per request)")
    e.set_defaults(func=cmd_eval)


def _add_outputs_and_tools(sub) -> None:
    """pointcloud, sweeps, scale, serve."""
    from rlkit.pointcloud import DEFAULT_POINTS

    c = sub.add_parser("pointcloud", help="ask a checkpoint the distance of a grid of pixels of one image: a 3D point "
                                          "cloud (points.csv, points.ply, views.png, summary.json)")
    c.add_argument("experiment", help="experiment YAML (its camera, prompt, model and eval sections are used)")
    c.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    c.add_argument("--model", help="checkpoint folder or Hugging Face id (default: the run's final/)")
    c.add_argument("--record", help="FILE.jsonl:LINE: the image, camera and depth map (if any) of that jsonl line")
    c.add_argument("--image", help="an image outside any jsonl (with --intrinsics)")
    c.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                   help="--image's camera in pixels (pixel centers at integers, as in the jsonl)")
    c.add_argument("--depth-map", help="the image's euclidean depth: .npz ('depth') or .npy in meters, or a 16-bit "
                                       ".png in millimetres; writes gt.ply and the errors (default: the record's)")
    c.add_argument("--points", type=int, default=DEFAULT_POINTS, help="about this many pixels, on a uniform grid")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=cmd_pointcloud)

    v = sub.add_parser("sweeps", help="run every ablation sweep (finished runs are skipped), redraw every figure, "
                                      "print the total time and one reading per figure")
    v.add_argument("--jobs", type=int, default=1, help="runs side by side (2 on a 2-core CPU)")
    v.add_argument("--scale", default="mini")
    v.add_argument("--only", nargs="+", help="only these sweeps (file stems, e.g. focal_length)")
    v.add_argument("--folder", default="experiments/ablations")
    v.add_argument("--sweeps-dir", default="runs/sweeps")
    v.add_argument("--figures", default="analysis/figures", help="where the figures, tables and per-seed csvs go")
    v.set_defaults(func=cmd_sweeps)

    from rlkit.scale import MODELS

    v = sub.add_parser("scale", help="take a sweep's winning arm (by the seed-paired δ1) to the paper recipe of a model: "
                                     "writes experiments/paper/winner_<sweep>.yaml and prints how to launch it")
    v.add_argument("sweep", help="sweep YAML (experiments/ablations/NAME.yaml)")
    v.add_argument("--model", default="qwen2.5-vl-3b", choices=sorted(MODELS))
    v.add_argument("--out", help="where the experiment goes (default experiments/paper/winner_<sweep>.yaml)")
    v.add_argument("--results", help="the per-seed rows (default: the sweep's results.csv under --sweeps-dir, else "
                                     "analysis/figures/<figure>.csv)")
    v.add_argument("--arm", help="scale this arm whatever the paired comparison says (e.g. when no arm wins beyond "
                                 "2 standard errors): written as arm_<sweep>_<arm>.yaml unless it is the winner, the "
                                 "comparison in the file's header")
    v.add_argument("--sweeps-dir", default="runs/sweeps")
    v.set_defaults(func=cmd_scale)

    v = sub.add_parser("serve", help="start TRL's vLLM server with the experiment's model (GRPO server mode)")
    v.add_argument("experiment", help="experiment YAML")
    v.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    v.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                   help="arguments for trl vllm-serve, e.g. --serve-args --tensor_parallel_size 2")
    v.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["run", *argv]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and \
            all("=" in e and not e.startswith("-") for e in extra):  # key=value overrides after the options
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from rlkit.rewards import RewardLoadError
    from rlkit.config import ConfigError
    from rlkit.errors import DiskFull
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
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
