"""Benchmarks (``./run.sh bench NAME``): each prints a markdown table and appends it to benchmarks/NAME.md.

A harness beside the kit, not part of it: run from a checkout (run.sh runs ``python benchmarks/bench.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
_IMPORT_ME = f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); "  # a child process imports this file as ``bench``


def machine() -> str:
    import os

    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{platform.machine()}, {os.cpu_count()} cores, {dev}, torch {torch.__version__}"


def record(name: str, table: str, note: str = "", print_only: bool = False) -> None:
    """Print the table and append it to benchmarks/NAME.md with the command and the machine (``print_only``:
    --no-record, nothing written)."""
    if print_only:
        print(f"{table}\n\n{note}" if note else table)
        return
    cmd = "./run.sh bench " + " ".join(shlex.quote(a) for a in [name, *sys.argv[sys.argv.index(name) + 1:]]) \
        if name in sys.argv else f"./run.sh bench {name}"
    text = (f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — {machine()}\n\n`{cmd}`\n\n{table}\n"
            + (f"\n{note}\n" if note else ""))
    print(text)
    BENCH_DIR.mkdir(exist_ok=True)
    with (BENCH_DIR / f"{name}.md").open("a") as f:
        f.write(text)


def _table(header: list[str], rows: list[list]) -> str:
    """A markdown table of cells already formatted (kept as written, not re-parsed as numbers)."""
    return pd.DataFrame(rows, columns=header).to_markdown(index=False, disable_numparse=True)


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
    from torch.utils.data import DataLoader

    from rlkit.builder import TrainStream, load_source, train_dataset
    from rlkit.schema import CameraOptions, DatasetSpec, PromptOptions
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

    from rlkit.tiny import ensure_tiny_model

    out_dir = out_dir.with_name(f"{out_dir.name}-t{text_layers}-v{vision_layers}")
    if (out_dir / "config.json").exists():
        return str(out_dir)
    tiny = ensure_tiny_model(".cache/models")
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
    from rlkit.run import build_stream, load_sources, render_scenes, ensure_model, train_base_stage

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
    p.add_argument("--method", choices=["sft", "grpo"], default="sft",
                   help="grpo: GRPO steps (8 completions per prompt, transformers generation) on the same model")
    p.add_argument("--no-checkpointing", action="store_true", help="gradient checkpointing off (3B: on by default)")
    p.add_argument("--liger", action="store_true", help="TRL's use_liger_kernel (fused linear + cross-entropy)")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/train.md")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="experiment overrides, e.g. "
                   "data.synth.train_images=8 (a quick smoke run)")
    a = p.parse_args(argv)

    exp = load_experiment(a.experiment, a.set)
    if a.method == "grpo":
        exp = load_experiment("experiments/grpo_negl1.yaml", ["base=null", "eval.during_training=null", *a.set])
    d = exp.to_dict()
    d["output_dir"] = ".cache/bench_train"
    d["train"] = {**d["train"], "max_steps": a.steps + a.warmup, "save_strategy": "no", "report_to": "none",
                  "logging_steps": 1000, "disable_tqdm": True,
                  # real tokens for tokens/s and MFU (transformers 5 counts none by default)
                  "include_num_input_tokens_seen": "non_padding"}
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
        d["train"]["gradient_checkpointing"] = not a.no_checkpointing
        # scenes large enough that unified images fill the paper's largest crops (1400 x 1200)
        out = "data/synth_bench_paper"
        d["data"] = {**d["data"], "synth": {**(d["data"]["synth"] or {}), "out": out, "train_images": 16,
                                            "eval_images": 0, "width": [640, 800], "hfov": [90, 95]},
                     "train": [{"path": f"{out}/{f}_train.jsonl", "name": f} for f in ("indoor", "outdoor")]}
    if a.no_checkpointing:
        d["train"]["gradient_checkpointing"] = False
    if a.liger:
        d["train"]["use_liger_kernel"] = True
    if a.method == "grpo":  # a group of 8 per prompt; the batch counts completions
        d["train"].update({"per_device_train_batch_size": a.batch or 8, "num_generations": 8})
    exp = experiment_from_dict(d, source=a.experiment)
    render_scenes(exp)
    train_base_stage(exp)
    if a.method == "grpo":
        from rlkit.grpo import make_trainer
    else:
        from rlkit.sft import make_trainer

    trainer = make_trainer(exp, ensure_model(exp), build_stream(exp, load_sources(exp, ("train",))))
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
    batch //= exp.completions_per_sample()  # GRPO: prompts (samples), each with its group of completions
    timed = times[a.warmup:]
    sps = batch * len(timed) / sum(timed)
    rows = [["samples/s", f"{sps:.3g}"], ["s/step", f"{sum(timed) / len(timed):.3f}"], ["batch", batch]]
    seen = tokens[-1] - (tokens[a.warmup - 1] if a.warmup else 0) if tokens else 0
    tok_s = seen / sum(timed) if seen else float("nan")
    rows.append(["tokens/s", f"{tok_s:.0f}"])
    if torch.cuda.is_available():
        rows.append(["peak GPU memory (GiB)", f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"])
        if a.peak_tflops:
            mfu = tok_s * _flops_per_token(trainer.model) / (a.peak_tflops * 1e12)
            rows.append(["MFU (6N flops/token)", f"{100 * mfu:.1f}%"])
    rows.append(["peak process RSS (GiB)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}"])
    n_params = sum(p.numel() for p in trainer.model.parameters())
    switches = f"attention {exp.model.attn_implementation or 'default'}, gradient checkpointing " \
               f"{'on' if exp.train.get('gradient_checkpointing') else 'off'}, liger {'on' if a.liger else 'off'}"
    table = _table([f"{a.method.upper()}, {a.arch} ({n_params / 1e6:.2f}M params), {switches}", "value"], rows)
    layers = f"; {a.text_layers} LM layers, {a.vision_layers} vision blocks" if a.arch != "tiny" else ""
    note = (f"{a.steps} timed steps after {a.warmup} warm-up steps; images and crops from the experiment's camera "
            f"section{layers}. MFU: tokens/s (non-padding tokens, image tokens after merging) x 6 x parameters / "
            "peak bf16 FLOP/s (the vision tower's per-patch work is counted per merged token: an underestimate).")
    record("train", table, note, print_only=a.no_record)


# ---------------------------------------------------------------- records


def write_fake_records(path: Path, images: int, labels: int, seed: int = 0) -> None:
    """A DepthLMBench jsonl of ``images`` lines x ``labels`` labels: 640x480 cameras, image paths that do not
    exist (nothing here opens an image), written 100k lines at a time."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for start in range(0, images, 100_000):
            m = min(100_000, images - start)
            coords = np.stack([rng.integers(0, 640, (m, labels)), rng.integers(0, 480, (m, labels))], -1).tolist()
            depth = np.round(rng.uniform(0.5, 80.0, (m, labels)), 3).tolist()
            fx = np.round(rng.uniform(400.0, 800.0, m), 2).tolist()
            f.writelines(f'{{"image": "rgb/{start + i:09d}.png", "intrinsics": [{fx[i]}, {fx[i]}, 319.5, 239.5, 640, '
                         f'480], "pixel_coords": {coords[i]}, "depth": {depth[i]}}}\n' for i in range(m))


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM: ru_maxrss would start from the RSS of the parent that spawned it)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _rss_split() -> tuple[int, int]:
    """(private, file-backed) resident bytes: a memory map's pages are file-backed, shared by every process
    that maps the file and dropped by the kernel under pressure."""
    with open("/proc/self/status") as f:
        kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("RssAnon", "RssFile")}
    return kb["RssAnon"] * 1024, kb["RssFile"] * 1024


def _records_child(mode: str, path: str, samples: int) -> None:
    """One measurement in a fresh process (its own peak RSS): prints a JSON line."""
    import json
    import resource

    out, pick = {}, None
    t0 = time.perf_counter()
    if mode == "convert":
        from rlkit.store import open_records

        open_records(path)
    elif mode == "store":
        from rlkit.builder import TrainStream, load_source
        from rlkit.schema import CameraOptions, DatasetSpec, PromptOptions

        src = load_source(DatasetSpec(path))
        stream = TrainStream([src], CameraOptions(), PromptOptions())
        pick = stream.pick
    elif mode == "records":
        from rlkit.records import load_records

        records, _ = load_records(path, check_images=False)

        def pick(rng):  # what TrainStream.sample did on a list of Records
            rng.choice(1, p=[1.0])
            rec = records[int(rng.integers(len(records)))]
            return int(rng.integers(rec.num_labels))
    elif mode == "pandas":
        import pandas

        df = pandas.read_json(path, lines=True)
        depth = df["depth"]

        def pick(rng):
            rng.choice(1, p=[1.0])
            return int(rng.integers(len(depth.iat[int(rng.integers(len(df)))])))
    out["seconds"] = time.perf_counter() - t0
    out["rss"] = _rss_now()
    if pick is not None:
        t = time.perf_counter()
        for i in range(samples):
            pick(np.random.default_rng([0, i]))  # a generator per sample, as TrainStream.sample makes
        out["rate"] = samples / (time.perf_counter() - t)
    if mode == "store":
        from rlkit.builder import select_eval
        from rlkit.evaluate import train_medians

        t = time.perf_counter()
        train_medians([src], ["depth"])
        out["median_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        select_eval([src], CameraOptions(), PromptOptions(), 8192)
        out["select_seconds"] = time.perf_counter() - t
    out["peak"] = _peak_rss()
    out["anon"], out["file"] = _rss_split()
    # conversion processes (forked: their count starts from this process's RSS at the fork, an upper bound)
    out["workers_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(out))


def _child(cmd: list[str], env: dict) -> tuple[float, str]:
    """Run a command; (wall seconds, stdout)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, env=env)
        proc.wait()
        wall = time.perf_counter() - t
        out.seek(0)
        text = out.read()
    if proc.returncode:
        raise SystemExit(f"bench records: {' '.join(cmd)} failed (exit {proc.returncode})")
    return wall, text


def bench_records(argv: list[str]) -> None:
    import json
    import shutil
    import tempfile

    p = argparse.ArgumentParser(prog="bench records")
    p.add_argument("--images", type=int, default=100_000, help="jsonl lines (images)")
    p.add_argument("--labels", type=int, default=20, help="labels per image")
    p.add_argument("--samples", type=int, default=20_000, help="picks timed for the sampling rate")
    p.add_argument("--baselines-up-to", type=int, default=1_000_000,
                   help="run today's loader and pandas only up to this many images (their memory grows with N)")
    p.add_argument("--eval", action="store_true",
                   help="also time './run.sh eval EXP.yaml --model none' with the file as train and eval data, "
                        "first converting, then from the cache")
    p.add_argument("--dir", help="work folder (default: a temporary one, deleted after)")
    a = p.parse_args(argv)

    work = Path(a.dir or tempfile.mkdtemp(prefix="bench_records-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        path = work / f"fake_{a.images}x{a.labels}.jsonl"
        t = time.perf_counter()
        write_fake_records(path, a.images, a.labels)
        log_line = f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s"
        print(log_line, file=sys.stderr)
        env = {**os.environ, "RLKIT_RECORDS_CACHE": str(work / "cache")}
        shutil.rmtree(work / "cache", ignore_errors=True)

        def measure(mode: str) -> dict:
            code = _IMPORT_ME + f"from bench import _records_child; _records_child({mode!r}, {str(path)!r}, {a.samples})"
            wall, text = _child([sys.executable, "-c", code], env)
            return {"wall": wall, **json.loads(text.strip().splitlines()[-1])}  # its own peak, not its workers'

        gb = lambda b: f"{b / 1e9:.2f}"  # noqa: E731
        rows = []
        idle = measure("idle")
        split = lambda m: f"{gb(m['anon'])} / {gb(m['file'])}"  # noqa: E731
        rows.append(["a process with the imports only", "—", "—", gb(idle["peak"]), split(idle), "—"])
        conv = measure("convert")
        workers = f", each of its conversion processes {gb(conv['workers_peak'])}" if conv["workers_peak"] else ""
        rows.append(["store: first conversion (validate + write)", f"{conv['seconds']:.1f}", "—",
                     gb(conv["peak"]) + workers, split(conv), "—"])
        st = measure("store")
        rows.append(["store: later load (memory map) + sampling", f"{st['seconds']:.2f}", gb(st["rss"]), "—", "—",
                     f"{st['rate']:,.0f}"])
        rows.append(["store: + median of all labels (train_medians)", f"{st['median_seconds']:.2f}", "—", "—", "—",
                     "—"])
        rows.append(["store: + eval selection, 8192 labels (select_eval)", f"{st['select_seconds']:.2f}", "—",
                     gb(st["peak"]), split(st), "—"])
        if a.images <= a.baselines_up_to:
            old = measure("records")
            rows.append(["today's records.load_records (no image stat)", f"{old['seconds']:.1f}", gb(old["rss"]),
                         gb(old["peak"]), split(old), f"{old['rate']:,.0f}"])
            pdm = measure("pandas")
            rows.append(["official code: pd.read_json(lines=True)", f"{pdm['seconds']:.1f}", gb(pdm["rss"]),
                         gb(pdm["peak"]), split(pdm), f"{pdm['rate']:,.0f}"])
        if a.eval:
            exp = work / "exp.yaml"
            entry = [{"path": str(path), "name": "fake"}]
            exp.write_text(json.dumps({"output_dir": str(work / "run"), "data": {"train": entry, "eval": entry}}))
            for label, cache in (("first: converts", "cache-eval"), ("again: cached", "cache-eval")):
                if label.startswith("first"):
                    shutil.rmtree(work / cache, ignore_errors=True)
                args = ["eval", str(exp), "--model", "none", "--out", str(work / "eval")]
                code = ("import sys; from rlkit.cli import main; code = main(" + repr(args) + "); "
                        + _IMPORT_ME + "from bench import _peak_rss; print(_peak_rss()); sys.exit(code)")
                wall, text = _child([sys.executable, "-c", code], {**env, "RLKIT_RECORDS_CACHE": str(work / cache)})
                peak = int(text.strip().splitlines()[-1])
                rows.append([f"`eval EXP.yaml --model none` ({label})", f"{wall:.1f}", "—", gb(peak), "—", "—"])
        store_size = sum(f.stat().st_size for f in (work / "cache").rglob("*") if f.is_file())
        table = _table([f"{a.images:,} images x {a.labels} labels ({path.stat().st_size / 1e9:.2f} GB jsonl)",
                        "seconds", "RSS after load (GB)", "peak RSS (GB)", "private / file-backed RSS at the end (GB)",
                        "picks/s"], rows)
        record("records", table,
               f"Each row is a separate process (peak RSS: its own VmHWM; file-backed pages are the store's "
               f"memory map, shared by all processes that map it). Store on disk: "
               f"{store_size / 1e9:.2f} GB. picks/s: choose dataset, image and label as TrainStream does, no image "
               f"decoded. Image paths are fake, so today's loader ran without its per-image stat "
               f"(check_images=False); on real data it also stats every image at load.")
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- attention


def bench_attention(argv: list[str]) -> None:
    """Every attention implementation this machine has against transformers' SDPA, on the same random-init
    Qwen2.5-VL-3B-dimension weights and batch at a paper image size: seconds of forward + backward (whole model,
    and the vision tower alone), max |Δ logits| and max |Δ grad| against SDPA. Exit 1 beyond the tolerance."""
    import importlib.util

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rlkit.attention import NAME, switch_to_varlen

    p = argparse.ArgumentParser(prog="bench attention")
    p.add_argument("--text-layers", type=int, default=2, help="LM layers (36 in the real model)")
    p.add_argument("--vision-layers", type=int, default=2, help="vision blocks (32 in the real model)")
    p.add_argument("--width", type=int, default=1400, help="image width (the paper's largest train crop: 1400)")
    p.add_argument("--height", type=int, default=1176, help="image height (1200 rounded to 28 px: 1176)")
    p.add_argument("--repeats", type=int, default=2, help="timed forward + backward passes after one warm-up")
    p.add_argument("--tolerance", type=float, help="max |Δ| allowed (default 1e-4 in float32, 5e-2 in bf16)")
    p.add_argument("--impls", default=None, help="comma-separated implementations (default: sdpa, the kit's varlen "
                   "and flash_attention_2 where installed; eager holds whole attention matrices: 20+ GB at paper "
                   "sizes, ask for it on small images)")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/attention.md")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    tol = a.tolerance if a.tolerance is not None else (5e-2 if cuda else 1e-4)
    path = _qwen3b_random(Path(".cache/models/qwen2.5-vl-3b-random"), a.text_layers, a.vision_layers)
    processor = AutoProcessor.from_pretrained(path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (a.height, a.width, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How far is the point?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "3.25"}]}]
    batch = processor(images=[image], text=[processor.apply_chat_template(messages, tokenize=False)],
                      return_tensors="pt", max_pixels=a.width * a.height, min_pixels=28 * 28)
    device = "cuda" if cuda else "cpu"
    batch = {k: v.to(device) for k, v in batch.items()}
    impls = a.impls.split(",") if a.impls else \
        ["sdpa", NAME] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") and cuda else [])
    if impls[0] != "sdpa":
        impls = ["sdpa", *[i for i in impls if i != "sdpa"]]  # the reference comes first

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def run(impl: str):
        torch.manual_seed(0)
        load_as = "sdpa" if impl == NAME else impl
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation=load_as, dtype=dtype).to(device)
        if impl == NAME:
            switch_to_varlen(model)
        times, vision = [], []
        for i in range(a.repeats + 1):
            model.zero_grad(set_to_none=True)
            sync()
            t = time.perf_counter()
            out = model(**batch, labels=batch["input_ids"])
            out.loss.backward()
            sync()
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            feats = model.model.visual(batch["pixel_values"].to(dtype), grid_thw=batch["image_grid_thw"])
            feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
            (feats[0] if isinstance(feats, (tuple, list)) else feats).float().square().mean().backward()
            sync()
            vision.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
        out = model(**batch, labels=batch["input_ids"])
        out.loss.backward()
        grads = {n: q.grad.float().cpu() for n, q in model.named_parameters() if q.grad is not None}
        return out.logits.detach().float().cpu(), grads, float(np.median(times[1:])), float(np.median(vision[1:]))

    ref = None
    rows, worst = [], 0.0
    for impl in impls:
        try:
            logits, grads, secs, vis = run(impl)
        except Exception as e:  # noqa: BLE001 - an implementation this machine cannot run is a row, not a crash
            rows.append([impl, "—", "—", "—", "—", f"not run: {type(e).__name__}: {str(e).splitlines()[0][:80]}"])
            continue
        if ref is None:
            ref = (logits, grads, secs, vis)
        dl = float((logits - ref[0]).abs().max())
        dg = max(float((grads[n] - ref[1][n]).abs().max()) for n in ref[1])
        if impl != "sdpa":
            worst = max(worst, dl, dg)
        rows.append([impl, f"{secs:.2f}", f"{vis:.2f}", f"{dl:.2e}", f"{dg:.2e}",
                     "ok" if max(dl, dg) <= tol else f"beyond tolerance {tol:g}"])
    tokens = int(batch["image_grid_thw"].prod(-1).sum())
    table = _table(["implementation", "model fwd+bwd (s)", "vision tower fwd+bwd (s)", "max abs Δ logits vs sdpa",
                    "max abs Δ grad vs sdpa", "within tolerance"], rows)
    note = (f"Random-init Qwen2.5-VL-3B dimensions with {a.text_layers} LM and {a.vision_layers} vision layers, one "
            f"{a.width} x {a.height} image ({tokens} patches), {str(dtype).replace('torch.', '')}, median of "
            f"{a.repeats} passes after a warm-up; tolerance {tol:g}.")
    record("attention", table, note, print_only=a.no_record)
    if worst > tol:
        raise SystemExit(1)


# ---------------------------------------------------------------- hostile


def bench_hostile(argv: list[str]) -> None:
    """Hostile inputs through the real command line, each classified mechanically (tests/hostile_battery.py)."""
    import dataclasses
    import json
    import shutil
    import tempfile
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(ROOT / "tests"))  # the battery lives with the tests (tests/test_hostile_battery.py runs it)
    import hostile_battery as hostile

    p = argparse.ArgumentParser(prog="bench hostile")
    p.add_argument("--jobs", type=int, default=2, help="cases run side by side (each command uses one thread)")
    p.add_argument("-k", dest="match", help="only the cases whose 'kind: name' contains this text")
    p.add_argument("--work", help="work folder, kept (default: a temporary one, deleted after)")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/hostile.md")
    a = p.parse_args(argv)

    work = Path(a.work or tempfile.mkdtemp(prefix="bench_hostile-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        data = hostile.make_data(work / "data")
        todo = [(i, c) for i, c in enumerate(hostile.cases()) if not a.match or a.match in f"{c.kind}: {c.name}"]
        todo.sort(key=lambda ic: not ic[1].heavy)  # the trainings first; the quick ones fill the gaps
        results = []
        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            futures = [pool.submit(hostile.run_case, c, i, work / "cases", data, work / "records-cache")
                       for i, c in todo]
            for n, f in enumerate(futures, 1):
                case, res, secs = f.result()
                results.append((case, res, secs))
                print(f"[{n}/{len(todo)}] {secs:5.1f}s  {case.kind}: {case.name}: {res.outcome}"
                      + (f" — {res.line[:160]}" if res.outcome not in hostile.GOOD else ""), file=sys.stderr)
        wall = time.perf_counter() - t0
        order = {c.name: i for i, c in enumerate(hostile.cases())}
        results.sort(key=lambda r: order.get(r[0].name, 0))
        kinds = list(dict.fromkeys(c.kind for c, _, _ in results))
        counts = Counter((r.outcome, c.kind) for c, r, _ in results)
        rows = [[o, *[str(counts[o, k] or "") for k in kinds], str(sum(counts[o, k] for k in kinds))]
                for o in hostile.OUTCOMES if any(counts[o, k] for k in kinds)]
        rows.append(["**cases**", *[str(sum(1 for c, _, _ in results if c.kind == k)) for k in kinds],
                     str(len(results))])
        table = _table(["outcome", *kinds, "total"], rows)
        bad = [(c, r) for c, r, _ in results if r.outcome not in hostile.GOOD]
        if bad:
            cell = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
            table += "\n\n" + _table(["kind", "case", "outcome", "first line of the error (or why)"],
                                     [[c.kind, cell(c.name), r.outcome, cell(r.line[:400])] for c, r in bad])
        for c, r in bad:  # the evidence, on stdout only
            print(f"\n### {c.kind}: {c.name} — {r.outcome}\n$ python -m rlkit {r.command}\n{r.line}\n{r.output}")
        (work / "results.json").write_text(json.dumps(
            [{"kind": c.kind, "case": c.name, "seconds": round(s, 1), **dataclasses.asdict(r)} for c, r, s in results],
            indent=1))
        note = (f"{len(results)} cases, each through `python -m rlkit` in a subprocess (one thread each, {a.jobs} "
                f"side by side), {wall / 60:.1f} min wall. Outcomes are assigned mechanically; see tests/hostile_battery.py's "
                "docstring for the rules and each case's expectation.")
        record("hostile", table, note, print_only=a.no_record)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


def bench_samples_hash(argv: list[str]) -> None:
    """sha256 of an experiment's first N train samples and its eval selection (images, question, answer, query):
    a refactor that must not change the data compares these before and after (issue: one pipeline, same bytes)."""
    import hashlib

    from rlkit.config import load_experiment
    from rlkit.run import build_evalset, build_stream, load_sources, render_scenes

    ap = argparse.ArgumentParser(prog="./run.sh bench samples_hash")
    ap.add_argument("--experiment", default="experiments/sft_synthetic.yaml")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--eval", type=int, default=128, help="eval samples per dataset")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    exp = load_experiment(a.experiment, a.overrides)
    render_scenes(exp)
    sources = load_sources(exp)

    def digest(samples) -> str:
        h = hashlib.sha256()
        for s in samples:
            for im in s.images:
                h.update(np.asarray(im).tobytes())
            h.update((s.question + s.answer + repr(s.query)).encode())
        return h.hexdigest()

    stream, evalset = build_stream(exp, sources), build_evalset(exp, sources, a.eval)
    print(f"train {a.train} {digest(stream.sample(i) for i in range(a.train))}")
    print(f"eval {len(evalset)} {digest(evalset.sample(k) for k in range(len(evalset)))}")


BENCHES = {"data": bench_data, "train": bench_train, "records": bench_records, "hostile": bench_hostile,
           "attention": bench_attention, "samples_hash": bench_samples_hash}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in BENCHES:
        raise SystemExit(f"usage: ./run.sh bench NAME [options]; NAME is one of {sorted(BENCHES)}")
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    BENCHES[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
