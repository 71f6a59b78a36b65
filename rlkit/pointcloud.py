"""Point clouds: ask the model the distance of a grid of pixels of one image and back-project the answers.

    record (a jsonl line, or an image + intrinsics) -> a uniform grid of pixels as the record's labels
    -> make_sample (the experiment's camera and prompt, no crop) -> answers in batches -> parse_answer
    -> distance along each pixel's ray of the ORIGINAL camera -> points.csv, points.ply, views.png, summary.json

Points are in the camera frame of rlkit.camera: x right, y down, z forward, meters. A ``depth`` answer is the
euclidean distance d, so the point is d times the unit ray of the pixel; an ``axis_depth`` answer is z.

Ground truth (the record's "depth_map" or ``--depth-map``) becomes the grid's labels, which the model never
sees (checked: the question and image do not change with the label); pixels without it get PLACEHOLDER.
Then gt.ply holds the true points of the queried pixels and summary.json the per-point errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from rlkit import camera as cm
from rlkit.builder import ImageCache, Sample, make_sample, to_row
from rlkit.schema import CameraOptions, PromptOptions
from rlkit.errors import ConfigError
from rlkit.io import atomic_write_text, check_out_folder
from rlkit.metrics import depth_metrics
from rlkit.prompts import parse_answer
from rlkit.records import Record, RecordError, decode_line, open_image, parse_record

DEFAULT_POINTS = 10_000  # the paper's point clouds query 10,000 pixels of an image
PLACEHOLDER = 1.0  # the label of a pixel without ground truth; it reaches the answer text only, never the model
# answers that back-project: how the parsed value lies along the pixel's unit ray (scale by 1 or by 1 / ray z)
DISTANCE_TASKS = ("depth", "axis_depth")

AnswerFn = Callable[[list[Sample]], list[str]]  # built samples -> the model's texts, in order


def grid_pixels(width: int, height: int, n: int) -> tuple[np.ndarray, tuple[int, int]]:
    """About ``n`` pixels on a uniform grid over a width x height image: (M, 2) integer (x, y), rows top to
    bottom, and (columns, rows). The grid is nx x ny cells with nx / ny closest to the image's aspect; each
    cell gives the pixel that holds its center (the image spans [-0.5, width - 0.5) in rlkit.camera's
    convention, so cell i of nx holds pixel floor((i + 0.5) * width / nx))."""
    nx = min(width, max(1, round(math.sqrt(n * width / height))))
    ny = min(height, max(1, round(n / nx)))
    xs = np.floor((np.arange(nx) + 0.5) * width / nx).astype(np.int64)
    ys = np.floor((np.arange(ny) + 0.5) * height / ny).astype(np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1), (nx, ny)


def back_project(cam: cm.Camera, pixels: np.ndarray, values: np.ndarray, task: str = "depth") -> np.ndarray:
    """(N, 3) camera-frame points (x right, y down, z forward) of pixels at the given distances: a ``depth``
    value is euclidean (along the unit ray), an ``axis_depth`` value is z. NaN values give NaN points."""
    rays = cm.ray_directions(cam, pixels)
    values = np.asarray(values, dtype=np.float64)
    scale = values if task == "depth" else values / rays[:, 2]
    return rays * scale[:, None]


def load_depth_map(path: str | Path, camera: cm.Camera, source: str) -> np.ndarray:
    """An image's euclidean depth map, (height, width) float64 meters, NaN where unknown.

    .npz: the array "depth" (rlkit.synth writes float32 meters, inf for sky); .npy: meters; .png: 16-bit
    millimetres, 0 = unknown. Values that are not finite and positive are unknown.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{source}: field 'depth_map': file not found: {path}")
    if path.suffix not in (".npz", ".npy", ".png"):
        raise RecordError(f"{source}: field 'depth_map': {path}: expected .npz, .npy or a 16-bit .png")
    try:
        depth = _read_depth_file(path, source)
    except RecordError:
        raise
    except Exception as e:  # noqa: BLE001 - a cut or foreign file: numpy, zipfile, pickle and PIL raise many kinds
        raise RecordError(f"{source}: field 'depth_map': {path} cannot be read as a depth map "
                          f"({type(e).__name__}: {e})") from None
    if depth.shape != (camera.height, camera.width):
        raise RecordError(f"{source}: field 'depth_map': {path} has shape {depth.shape}, the image "
                          f"({camera.height}, {camera.width}) (height, width)")
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)


def _read_depth_file(path: Path, source: str) -> np.ndarray:
    """The array of a .npz ('depth'), .npy or 16-bit .png depth file as float64 (no pickles: a depth map is data)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "depth" not in z:
                raise RecordError(f"{source}: field 'depth_map': {path} holds no array 'depth' (it has {list(z)})")
            return np.asarray(z["depth"], dtype=np.float64)
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    with Image.open(path) as img:
        if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise RecordError(f"{source}: field 'depth_map': {path} is a {img.mode} PNG, not 16-bit millimetres")
        return np.asarray(img, dtype=np.float64) / 1000.0


def grid_record(rec: Record, pixels: np.ndarray, gt: np.ndarray | None) -> Record:
    """The record with the grid pixels as its labels: the true euclidean and principal-axis distances where
    ``gt`` (a depth map) knows them, else PLACEHOLDER. The old labels' per-label keys are dropped."""
    known = np.zeros(len(pixels), dtype=bool) if gt is None else np.isfinite(gt[pixels[:, 1], pixels[:, 0]])
    depth = np.full(len(pixels), PLACEHOLDER)
    if gt is not None:
        depth[known] = gt[pixels[known, 1], pixels[known, 0]]
    axis = np.where(known, depth * cm.ray_directions(rec.camera, pixels)[:, 2], PLACEHOLDER)
    extras = {k: v for k, v in rec.extras.items() if not isinstance(v, np.ndarray)}
    return dataclasses.replace(rec, pixels=pixels.astype(np.float64), depth=depth,
                               extras={**extras, "axis_depth": axis})


def check_label_unseen(rec: Record, label: int, cam_opts: CameraOptions, prompt_opts: PromptOptions,
                       images: ImageCache) -> None:
    """The model's input (question and image) must not change with the label (PLACEHOLDER or the truth)."""
    moved = dataclasses.replace(rec, depth=rec.depth + 1.0,
                                extras={**rec.extras, "axis_depth": rec.extras["axis_depth"] + 1.0})
    a, b = (make_sample(r, label, cam_opts, prompt_opts, images) for r in (rec, moved))
    if a.question != b.question or a.image.tobytes() != b.image.tobytes():
        raise ConfigError(f"prompt template {prompt_opts.template!r} with camera strategy {cam_opts.strategy!r} "
                          "shows the label to the model; a point cloud has no labels to show")


def model_answers(model_path: str, exp, max_new_tokens: int) -> AnswerFn:
    """Greedy answers of a checkpoint, generated as evaluation does (rlkit.evaluate.generate_answers)."""
    from rlkit.evaluate import generate_answers
    from rlkit.models import load_model, load_processor
    from rlkit.models import process_state

    processor = load_processor(model_path, exp.model)
    model = load_model(model_path, exp.model, device=process_state().device)
    if getattr(model, "peft_config", None):
        model = model.merge_and_unload()
    model.eval()

    def answer(samples: list[Sample]) -> list[str]:
        rows = [to_row(s) for s in samples]  # prompt and image only: the row's answer columns stay here
        return generate_answers(model, processor, [r["prompt"] for r in rows], [r["images"][0] for r in rows],
                                max_new_tokens)

    return answer


def ask_grid(grec: Record, cam_opts: CameraOptions, prompt_opts: PromptOptions, answer_fn: AnswerFn,
             images: ImageCache, batch_size: int, progress: bool = True) -> tuple[list, list[str], Counter]:
    """Every label of the grid record built like an eval sample and answered in batches (one batch of samples
    held at a time). Returns per pixel the answer text (None where skipped) and the skip reason ('' where
    asked), and the seconds spent building samples and answering."""
    from tqdm import tqdm

    texts, skip, seconds = [None] * grec.num_labels, [""] * grec.num_labels, Counter()
    batch: list[tuple[int, Sample]] = []
    checked = False
    with tqdm(total=grec.num_labels, desc="point cloud", unit="px", disable=not progress) as bar:
        for k in range(grec.num_labels):
            t = time.perf_counter()
            s = make_sample(grec, k, cam_opts, prompt_opts, images)
            if isinstance(s, Sample) and not checked:  # on the first pixel asked
                check_label_unseen(grec, k, cam_opts, prompt_opts, images)
                checked = True
            seconds["build"] += time.perf_counter() - t
            if isinstance(s, str):  # the marker cannot be drawn whole there: skipped, never moved
                skip[k] = s
                bar.update(1)
            else:
                batch.append((k, s))
            if batch and (len(batch) == batch_size or k == grec.num_labels - 1):
                t = time.perf_counter()
                answers = answer_fn([s for _, s in batch])
                seconds["generate"] += time.perf_counter() - t
                if len(answers) != len(batch):
                    raise RuntimeError(f"the answer function gave {len(answers)} texts for {len(batch)} samples")
                for (i, _), text in zip(batch, answers):
                    texts[i] = text
                bar.update(len(batch))
                batch.clear()
    return texts, skip, seconds


def point_cloud(rec: Record, cam_opts: CameraOptions, prompt_opts: PromptOptions, answer_fn: AnswerFn,
                out: str | Path, *, points: int = DEFAULT_POINTS, batch_size: int = 32,
                depth_map: np.ndarray | None = None, depth_map_source: str | None = None,
                fallback: float = 2.0, progress: bool = True) -> dict:
    """Query a grid of about ``points`` pixels of the record's image, write the clouds into ``out`` and return
    summary.json's content. ``depth_map``: the image's euclidean depth (load_depth_map), for gt.ply and the
    errors; ``fallback``: the answer a failed parse is scored as (metrics.depth_metrics)."""
    from rlkit.evaluate import strict_json

    task = prompt_opts.task
    if task not in DISTANCE_TASKS:
        raise ConfigError(f"prompt task {task!r} answers no distance; a point cloud needs one of {DISTANCE_TASKS}")
    t0 = time.perf_counter()
    cam = rec.camera
    pixels, (nx, ny) = grid_pixels(cam.width, cam.height, points)
    grec = grid_record(rec, pixels, depth_map)
    images = ImageCache(1)
    image = np.asarray(images.get(grec))
    colors = image[pixels[:, 1], pixels[:, 0]]
    texts, skip, timing = ask_grid(grec, cam_opts, prompt_opts, answer_fn, images, batch_size, progress)

    queried = np.array([t is not None for t in texts])
    values = np.array([np.nan if t is None else (parse_answer(t, task) or np.nan) for t in texts])
    xyz = back_project(cam, pixels, values, task)
    frame = _frame(pixels, skip, texts, values, xyz, colors)
    answered = np.isfinite(values)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_ply(out / "points.ply", xyz[answered], colors[answered])
    clouds = [("model", xyz[answered], colors[answered])]

    summary = {
        "image": str(rec.image), "source": rec.source, "intrinsics": cam.as_list(), "task": task,
        "grid": [nx, ny],
        "counts": {"grid": len(pixels), "queried": int(queried.sum()), "skipped": dict(Counter(r for r in skip if r)),
                   "unparsable": int((queried & ~answered).sum()), "answered": int(answered.sum())},
    }
    if depth_map is not None:
        gt_values = grec.depth if task == "depth" else grec.extras["axis_depth"]
        has_gt = np.isfinite(depth_map[pixels[:, 1], pixels[:, 0]])
        gt_values = np.where(has_gt, gt_values, np.nan)
        frame["gt"] = gt_values
        frame["abs_err"] = np.abs(values - gt_values)
        gt_xyz = back_project(cam, pixels, gt_values, task)
        keep = queried & has_gt
        write_ply(out / "gt.ply", gt_xyz[keep], colors[keep])
        clouds.append(("ground truth", gt_xyz[keep], colors[keep]))
        summary["ground_truth"] = ground_truth_stats(values[keep], gt_values[keep], fallback, depth_map_source)
    frame.to_csv(out / "points.csv", index=False)
    save_views(clouds, out / "views.png", image, depth_map)
    seconds = time.perf_counter() - t0
    summary["seconds"] = {"build": round(timing["build"], 2), "generate": round(timing["generate"], 2),
                          "total": round(seconds, 2)}
    summary["queried_per_second"] = round(int(queried.sum()) / max(timing["generate"], 1e-9), 2)
    atomic_write_text(out / "summary.json", json.dumps(strict_json(summary), indent=1, allow_nan=False))
    return summary


def ground_truth_stats(pred: np.ndarray, gt: np.ndarray, fallback: float, source: str | None) -> dict:
    """Errors over the queried pixels that have ground truth: the absolute error of each answered one (for a
    euclidean distance this is also the 3D distance between the predicted and the true point, both on the
    same ray) and the eval metrics, where an unparsable answer counts as wrong (rlkit.metrics)."""
    err = np.abs(pred - gt)
    err = err[np.isfinite(err)]
    stats = {"source": source, "pixels": len(gt), "answered": len(err)}
    if len(err):
        stats["abs_err_m"] = {"mean": float(err.mean()), "median": float(np.median(err)),
                              "p90": float(np.percentile(err, 90)), "max": float(err.max())}
    stats["metrics"] = depth_metrics(np.where(np.isfinite(pred), pred, np.nan), gt, fallback=fallback)
    return stats


def _frame(pixels, skip, texts, values, xyz, colors):
    import pandas as pd

    return pd.DataFrame({
        "x": pixels[:, 0], "y": pixels[:, 1], "skipped": skip,
        "text": ["" if t is None else t for t in texts], "value": values,
        "X": xyz[:, 0], "Y": xyz[:, 1], "Z": xyz[:, 2],
        "r": colors[:, 0], "g": colors[:, 1], "b": colors[:, 2],
    })


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """A binary little-endian PLY: one vertex (x y z float, red green blue uchar) per point."""
    from plyfile import PlyData, PlyElement

    v = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                  ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, name in enumerate("xyz"):
        v[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        v[name] = rgb[:, i]
    PlyData([PlyElement.describe(v, "vertex")], text=False, byte_order="<").write(str(path))


def save_views(clouds: list[tuple[str, np.ndarray, np.ndarray]], out: Path, image: np.ndarray,
               depth_map: np.ndarray | None) -> None:
    """One row per cloud: the image (or the true depth map), then the cloud from the front (from behind the
    camera, raised and turned a little so that depth shows) and from the top; points in their pixel's color,
    on the same axes in every row so that the rows compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    everything = np.concatenate([c[1] for c in clouds] + [np.zeros((1, 3))])  # the camera is in view too
    lo, hi = everything.min(0), everything.max(0)
    pad = np.maximum(hi - lo, 1e-3) * 0.05
    lo, hi = lo - pad, hi + pad
    fig = plt.figure(figsize=(10.5, 3.4 * len(clouds)))
    grid = fig.add_gridspec(len(clouds), 3, width_ratios=(0.8, 1.1, 1.1))
    for row, (name, xyz, rgb) in enumerate(clouds):
        ax = fig.add_subplot(grid[row, 0])
        if row == 0 or depth_map is None:
            ax.imshow(image)
            ax.set_title(f"image ({image.shape[1]}x{image.shape[0]})", fontsize=9)
        else:
            shown = ax.imshow(depth_map, cmap="viridis")
            fig.colorbar(shown, ax=ax, fraction=0.035, label="m")
            ax.set_title("true distance", fontsize=9)
        ax.axis("off")
        size = float(np.clip(3000 / max(len(xyz), 1), 0.3, 6))
        for col, (view, elev, azim) in enumerate((("front", 20, -65), ("top", 90, -90))):
            ax = fig.add_subplot(grid[row, 1 + col], projection="3d")
            ax.set_proj_type("ortho")
            # plotted as (x, z, -y): right, forward, up; the camera is the black cross at the origin
            ax.scatter(xyz[:, 0], xyz[:, 2], -xyz[:, 1], c=rgb / 255.0, s=size, depthshade=False, linewidths=0)
            ax.scatter([0], [0], [0], c="k", marker="x", s=30)
            ax.set(xlim=(lo[0], hi[0]), ylim=(lo[2], hi[2]), zlim=(-hi[1], -lo[1]))
            ax.set_box_aspect((hi[0] - lo[0], hi[2] - lo[2], hi[1] - lo[1]))
            ax.view_init(elev=elev, azim=azim)
            ax.set_xlabel("x (m)", fontsize=7, labelpad=-8)
            ax.set_ylabel("z (m)", fontsize=7, labelpad=-8)
            ax.set_zlabel("" if view == "top" else "-y (m)", fontsize=7, labelpad=-8)
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_major_locator(MaxNLocator(4))
            if view == "top":  # seen end-on
                ax.set_zticks([])
            ax.tick_params(labelsize=6, pad=-3)
            ax.set_title(f"{name}, {view}: {len(xyz)} points", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.03, wspace=0.05, hspace=0.15)
    fig.savefig(out, dpi=72)
    plt.close(fig)


# ---------------------------------------------------------------- the command


def load_record_line(spec: str) -> Record:
    """FILE.jsonl:LINE (LINE counted from 1, as error messages name lines) -> that line's record, read and
    validated alone: the lines before it are only counted, the rest of the file is never read."""
    path, _, line = spec.rpartition(":")
    if not path or not line.isdigit() or int(line) < 1:
        raise ConfigError(f"--record {spec!r}: expected FILE.jsonl:LINE (lines counted from 1)")
    p, n = Path(path), int(line)
    if not p.is_file():
        raise ConfigError(f"--record: file not found: {p}")
    raw, count = None, 0
    with p.open("rb") as f:
        for count, text in enumerate(f, start=1):
            if count == n:
                raw = text
                break
    if raw is None or not raw.strip():
        why = "is empty" if raw is not None else f"does not exist ({p} has {count} lines)"
        raise ConfigError(f"--record {spec!r}: line {n} {why}")
    source = f"{p}:{n}"
    record, _ = parse_record(decode_line(raw, source, first=n == 1), root=p.parent, dataset=p.stem, source=source)
    return record


def image_record(image: str, intrinsics: list[float]) -> Record:
    """A record for an image outside any jsonl: its camera from FX FY CX CY and the image's size."""
    path = Path(image)
    if not path.is_file():
        raise ConfigError(f"--image: file not found: {path}")
    fx, fy, cx, cy = intrinsics
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy) and math.isfinite(cx) and math.isfinite(cy)):
        raise ConfigError(f"--intrinsics: focal lengths must be positive and all values finite, got {intrinsics}")
    try:
        with Image.open(path) as img:
            img.load()  # decoded whole here: a cut file fails now, not after the model is loaded
            width, height = img.size
    except Exception as e:  # noqa: BLE001 - PIL raises UnidentifiedImageError, OSError, SyntaxError, EOFError...
        raise ConfigError(f"--image {path}: not an image PIL can read ({type(e).__name__}: {e})") from None
    return Record(path.resolve(), cm.Camera(fx, fy, cx, cy, width, height), np.zeros((0, 2)), np.zeros(0),
                  path.stem, str(path))


def pointcloud_command(a) -> dict:
    """``./run.sh pointcloud EXPERIMENT.yaml ...`` (rlkit.cli)."""
    from rlkit.config import load_experiment

    exp = load_experiment(a.experiment, a.overrides)
    if a.points < 1:
        raise ConfigError(f"--points must be >= 1, got {a.points}")
    if a.record and (a.image or a.intrinsics):
        raise ConfigError("--record takes its image and camera from the jsonl line: drop --image/--intrinsics")
    if a.record:
        rec = load_record_line(a.record)
    elif a.image and a.intrinsics:
        rec = image_record(a.image, a.intrinsics)
    else:
        raise ConfigError("pointcloud needs --record FILE.jsonl:LINE, or --image IMG with --intrinsics FX FY CX CY")
    check_out_folder(a.out)  # every input and output checked before the model loads and the grid is asked
    open_image(rec.image, source=rec.source, width=rec.camera.width, height=rec.camera.height).close()
    gt_path = a.depth_map or rec.extras.get("depth_map")
    depth_map = None if gt_path is None else load_depth_map(gt_path, rec.camera,
                                                            "--depth-map" if a.depth_map else rec.source)
    model = a.model or str(Path(exp.output_dir) / "final")
    if a.model is None and not Path(model).is_dir():
        raise ConfigError(f"{model} does not exist: train first (./run.sh {a.experiment}) or pass --model")
    from rlkit.checkpoints import check_model_folder

    check_model_folder(model, "--model")  # what the folder lacks, before the model loads
    answer_fn = model_answers(model, exp, exp.eval.max_new_tokens)
    summary = point_cloud(rec, exp.camera, exp.prompt, answer_fn, a.out, points=a.points,
                          batch_size=exp.eval.batch_size, depth_map=depth_map,
                          depth_map_source=None if gt_path is None else str(gt_path), fallback=exp.eval.constant)
    print(report(summary, a.out))
    return summary


def report(summary: dict, out) -> str:
    c = summary["counts"]
    skipped = ", ".join(f"{n} {why}" for why, n in c["skipped"].items()) or "none"
    lines = [f"{out}: {c['grid']} grid pixels ({summary['grid'][0]} x {summary['grid'][1]}): {c['queried']} queried, "
             f"skipped {skipped}; {c['answered']} answered with a number (points.ply vertices), "
             f"{c['unparsable']} unparsable; {summary['seconds']['total']} s"]
    gt = summary.get("ground_truth")
    if gt is not None:
        m, e = gt["metrics"], gt.get("abs_err_m")
        err = (f"abs error mean {e['mean']:.3f} m, median {e['median']:.3f} m, p90 {e['p90']:.3f} m, "
               f"max {e['max']:.3f} m; " if e else "")
        lines.append(f"ground truth ({gt['pixels']} queried pixels with depth): {err}"
                     f"delta1 {m['delta1']:.3f}, abs_rel {m['abs_rel']:.3f}")
    return "\n".join(lines)
