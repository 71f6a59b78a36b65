"""Benchmarks (``./run.sh bench NAME``): each prints a markdown table and appends it to benchmarks/NAME.md."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def machine() -> str:
    import os

    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.machine()}, {os.cpu_count()} cores, {dev}, torch {torch.__version__}"


def record(name: str, table: str, note: str = "") -> None:
    cmd = "./run.sh bench " + " ".join(shlex.quote(a) for a in [name, *sys.argv[sys.argv.index(name) + 1:]]) \
        if name in sys.argv else f"./run.sh bench {name}"
    text = (f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — {machine()}\n\n`{cmd}`\n\n{table}\n"
            + (f"\n{note}\n" if note else ""))
    print(text)
    BENCH_DIR.mkdir(exist_ok=True)
    with (BENCH_DIR / f"{name}.md").open("a") as f:
        f.write(text)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- data


def _reference_sample(rec, rng, f_uni, crop_w, crop_h):
    """A straightforward pipeline: decode, resize the whole image, crop, per-pixel marker writes."""
    from PIL import Image

    img = Image.open(rec.image).convert("RGB")
    w, h = round(rec.camera.width * f_uni / rec.camera.fx), round(rec.camera.height * f_uni / rec.camera.fy)
    img = img.resize((w, h), Image.BILINEAR)
    cw, ch = min(int(rng.integers(*crop_w)), w), min(int(rng.integers(*crop_h)), h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    arr = np.array(img.crop((x0, y0, x0 + cw, y0 + ch)))
    x, y = int(rng.integers(0, cw - 5)), int(rng.integers(0, ch - 5))
    for i in range(5):
        for j in range(5):
            if i == j or i == 0 or j == 0:
                arr[y + i, x + j] = (255, 0, 0)
    return Image.fromarray(arr)


def bench_data(argv: list[str]) -> None:
    import torch
    from torch.utils.data import DataLoader

    from rlkit.builder import CameraOptions, DatasetSpec, PromptOptions, TrainStream, load_source, train_dataset
    from rlkit.synth import CameraRange, generate_split

    p = argparse.ArgumentParser(prog="bench data")
    p.add_argument("--samples", type=int, default=400, help="samples per measurement")
    p.add_argument("--images", type=int, default=200, help="distinct 640x480 source images")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the parallel row")
    p.add_argument("--data", default=".cache/bench_data", help="where the 640x480 sources are rendered")
    a = p.parse_args(argv)

    path = Path(a.data) / "indoor_train.jsonl"
    if not path.exists():
        generate_split(a.data, "indoor", "train", a.images, points_per_image=8,
                       camera=CameraRange(width=(640, 640), aspect=(0.75, 0.75), hfov_deg=(50, 90)))
    src = load_source(DatasetSpec(str(path)))
    cam = CameraOptions(f_uni=1000.0, crop_width=(1000, 1400), crop_height=(700, 1200))
    # cache off: every sample decodes its PNG, as with a large dataset
    stream = TrainStream([src], cam, PromptOptions(), seed=0, cache_images=0)

    rows = []
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for i in range(a.samples // 4):
        _reference_sample(src.records[i % len(src.records)], rng, 1000.0, (1000, 1401), (700, 1201))
    ref = a.samples // 4 / (time.perf_counter() - t)
    rows.append(["reference (full resize, per-pixel marker)", 1, f"{ref:.1f}", "1.00x"])

    t = time.perf_counter()
    for i in range(a.samples):
        stream.sample(i)
    single = a.samples / (time.perf_counter() - t)
    rows.append(["rlkit builder, single process", 1, f"{single:.1f}", f"{single / ref:.2f}x"])

    ds = train_dataset(stream, num_shards=max(1, a.workers))
    loader = DataLoader(ds, batch_size=None, num_workers=a.workers)
    it = iter(loader)
    next(it)  # workers started
    t = time.perf_counter()
    for _ in range(a.samples):
        next(it)
    par = a.samples / (time.perf_counter() - t)
    rows.append([f"rlkit builder, DataLoader ({a.workers} workers)", a.workers, f"{par:.1f}",
                 f"{par / ref:.2f}x"])
    del it, loader
    torch.set_num_threads(torch.get_num_threads())
    table = _table(["pipeline (640x480 PNG, f_uni 1000, crops 1000-1400 x 700-1200, 5-px arrow)",
                    "processes", "samples/s", "vs reference"], rows)
    record("data", table, "Excludes the model's image processor. Sources: procedural indoor scenes, PNG.")


# ---------------------------------------------------------------- train

# Qwen/Qwen2.5-VL-3B-Instruct's public config values, for a random-init model of the exact architecture
QWEN25VL_3B = {
    "text_config": dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                        num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                         "mrope_section": [16, 24, 24]}, tie_word_embeddings=True),
    "vision_config": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                          window_size=112, fullatt_block_indexes=[7, 15, 23, 31], patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2),
    "tie_word_embeddings": True,
}


def _qwen3b_random(out_dir: Path, text_layers: int = 36, vision_layers: int = 32) -> str:
    """A random-init model with Qwen2.5-VL-3B's architecture (every dimension exact; layer counts may be
    cut to fit a CPU's memory) and the tiny kit tokenizer's processor."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from rlkit.tiny import tiny_path

    out_dir = out_dir.with_name(f"{out_dir.name}-t{text_layers}-v{vision_layers}")
    if (out_dir / "config.json").exists():
        return str(out_dir)
    tiny = tiny_path(".cache/models")
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny)
    tok = processor.tokenizer
    arch = {"text_config": {**QWEN25VL_3B["text_config"], "num_hidden_layers": text_layers},
            # window attention everywhere but every 8th block, as in the full tower (the last of each 8)
            "vision_config": {**QWEN25VL_3B["vision_config"], "depth": vision_layers,
                              "fullatt_block_indexes": [i for i in range(vision_layers) if i % 8 == 7]
                              or [vision_layers - 1]},
            "tie_word_embeddings": True}
    cfg = Qwen2_5_VLConfig(**arch, image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                           video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                           vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                           vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return str(out_dir)


def _flops_per_token(model) -> float:
    """6 x parameters (forward + backward), the usual MFU convention."""
    return 6.0 * sum(p.numel() for p in model.parameters())


def bench_train(argv: list[str]) -> None:
    import resource

    import torch

    from rlkit.config import experiment_from_dict, load_experiment
    from rlkit.run import build_stream, load_sources, render_scenes, resolve_model, train_base_stage

    p = argparse.ArgumentParser(prog="bench train")
    p.add_argument("--experiment", default="experiments/sft_synthetic.yaml", help="experiment whose data/camera/prompt are used")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps (after 3 warm-up steps)")
    p.add_argument("--arch", choices=["tiny", "qwen2.5-vl-3b"], default="tiny",
                   help="qwen2.5-vl-3b: random init, exact 3B architecture, paper image sizes, bf16 (GPU)")
    p.add_argument("--batch", type=int, default=None, help="per-device batch size (default: the experiment's)")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    p.add_argument("--attn", default=None, help="model.attn_implementation, e.g. flash_attention_2 (GPU)")
    p.add_argument("--text-layers", type=int, default=36, help="qwen2.5-vl-3b: LM layers (36 in the real model)")
    p.add_argument("--vision-layers", type=int, default=32, help="qwen2.5-vl-3b: vision blocks (32 in the real model)")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU peak bf16 TFLOP/s for MFU (H100 SXM: 989)")
    a = p.parse_args(argv)

    exp = load_experiment(a.experiment)
    d = exp.to_dict()
    d["output_dir"] = ".cache/bench_train"
    d["train"] = {**d["train"], "max_steps": a.steps + a.warmup, "save_strategy": "no", "report_to": "none",
                  "logging_steps": 1000, "disable_tqdm": True}
    if a.batch:
        d["train"]["per_device_train_batch_size"] = a.batch
    if a.attn:
        d["model"]["attn_implementation"] = a.attn
    if a.arch == "qwen2.5-vl-3b":
        # the paper's image sizes: f_uni 1000, crops 1000-1400 x 700-1200
        d["camera"] = {**d["camera"], "f_uni": 1000, "crop_width": [1000, 1400], "crop_height": [700, 1200],
                       "multiple_of": 28}
        d["model"] = {**d["model"], "name": _qwen3b_random(Path(".cache/models/qwen2.5-vl-3b-random"),
                                                            a.text_layers, a.vision_layers),
                      "min_pixels": 28 * 28 * 4, "max_pixels": 1400 * 1200, "tiny": {}}
        d["train"]["gradient_checkpointing"] = True
        # scenes large enough that unified images fill the paper's largest crops (1400 x 1200)
        out = "data/synth_bench_paper"
        d["data"] = {**d["data"], "synth": {**(d["data"]["synth"] or {}), "out": out, "train_images": 16,
                                            "eval_images": 0, "width": [640, 800], "hfov": [90, 95]},
                     "train": [{"path": f"{out}/{f}_train.jsonl", "name": f} for f in ("indoor", "outdoor")]}
    exp = experiment_from_dict(d, source=a.experiment)
    render_scenes(exp)
    train_base_stage(exp)
    from rlkit.sft import make_trainer

    trainer = make_trainer(exp, resolve_model(exp), build_stream(exp, load_sources(exp, ("train",))))
    times, tokens = [], []

    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            tokens.append(state.num_input_tokens_seen)

    trainer.add_callback(Timer())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    batch = exp.train.get("per_device_train_batch_size", 8) * exp.train.get("gradient_accumulation_steps", 1)
    timed = times[a.warmup:]
    sps = batch * len(timed) / sum(timed)
    rows = [["samples/s", f"{sps:.3g}"], ["s/step", f"{sum(timed) / len(timed):.3f}"], ["batch", batch]]
    if torch.cuda.is_available():
        rows.append(["peak GPU memory (GiB)", f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"])
        tok_s = (tokens[-1] - (tokens[a.warmup - 1] if a.warmup else 0)) / sum(timed) if tokens and tokens[-1] else float("nan")
        rows.append(["tokens/s", f"{tok_s:.0f}"])
        if a.peak_tflops:
            mfu = tok_s * _flops_per_token(trainer.model) / (a.peak_tflops * 1e12)
            rows.append(["MFU (6N flops/token)", f"{100 * mfu:.1f}%"])
    rows.append(["peak process RSS (GiB)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}"])
    n_params = sum(p.numel() for p in trainer.model.parameters())
    table = _table([f"SFT, {a.arch} ({n_params / 1e6:.2f}M params), {a.experiment}", "value"], rows)
    layers = f"; {a.text_layers} LM layers, {a.vision_layers} vision blocks" if a.arch != "tiny" else ""
    record("train", table, f"{a.steps} timed steps after {a.warmup} warm-up steps; images and crops from the "
                           f"experiment's camera section{layers}.")


BENCHES = {"data": bench_data, "train": bench_train}


def main(name: str, argv: list[str]) -> None:
    if name not in BENCHES:
        raise SystemExit(f"unknown benchmark {name!r}; choose from {sorted(BENCHES)}")
    BENCHES[name](argv)
