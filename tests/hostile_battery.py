"""A battery of hostile inputs, run through the real command line (``./run.sh bench hostile``).

Each case builds its own folder under one work dir (a small procedural dataset is rendered once and
shared), runs ``python -m rlkit ...`` in a subprocess and classifies what happened, mechanically:

- ``clear error``: exit 2, the last stderr line is the only one starting ``error: `` (or argparse's
  ``rlkit CMD: error: `` after its usage lines), no traceback, and it names what the case says it must (the
  file:line and field of a bad jsonl line, the key of a bad config, ...);
- ``counted skip``: exit 0 with ``data.skip_invalid: true``, a skip logged, and the count in metrics.json
  (train_data / eval_data ``skipped``, builder_skips or eval_skipped);
- ``accepted`` / ``recovered``: exit 0 where the input is valid (a BOM, an fx == 0 repair) or where a re-run
  after a fault must finish (a kill, a stale lock), with the case's check of the result passing;
- ``raw traceback``: a non-zero exit with a Python traceback (origin: the deepest frame, and the kit's own);
- ``unclear error``: a non-zero exit without traceback that is not one ``error:`` line naming the file/key;
- ``refused valid input``: an error where a skip or success was expected;
- ``silent wrong``: exit 0 where an error or a counted skip was expected, a count missing from metrics.json,
  metrics.json that is not strict JSON (NaN/Infinity tokens), or a result the case's check rejects;
- ``stuck``: a re-run of the same command after the fault (with the fault gone) does not succeed;
- ``training info lost``: the re-run finishes but metrics.json lacks what training did (train_samples ...);
- ``hang``: no exit within the time limit; ``not run``: the case could not be staged here (the reason says why).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent

CLEAR, SKIP, ACCEPTED, RECOVERED = "clear error", "counted skip", "accepted", "recovered"
TRACE, UNCLEAR, REFUSED, SILENT = "raw traceback", "unclear error", "refused valid input", "silent wrong"
STUCK, LOST, HANG, NOT_RUN = "stuck", "training info lost", "hang", "not run"
OUTCOMES = [CLEAR, SKIP, ACCEPTED, RECOVERED, TRACE, UNCLEAR, REFUSED, SILENT, STUCK, LOST, HANG, NOT_RUN]
GOOD = {CLEAR, SKIP, ACCEPTED, RECOVERED}

TIMEOUT = 300  # seconds per command


# ---------------------------------------------------------------- running and classifying


@dataclasses.dataclass
class Proc:
    args: list
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False


@dataclasses.dataclass
class Result:
    outcome: str
    line: str = ""  # the error line, the traceback's exception line and origin, or why
    output: str = ""  # the stderr tail of the command that decided the outcome
    command: str = ""


@dataclasses.dataclass
class Case:
    kind: str
    name: str
    fn: Callable[["Ctx"], Result]
    heavy: bool = False  # trains a model (scheduled first, so the light cases fill the gaps)


FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (.+)$')


def _short_path(p: str) -> str:
    if "site-packages/" in p:
        return p.split("site-packages/", 1)[1]
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return p


def traceback_summary(err: str) -> str:
    """The last traceback's exception line, where it was raised, and the kit's deepest frame."""
    i = err.rfind("Traceback (most recent call last):")
    block = err[i:].splitlines()
    frames = [(k, m) for k, line in enumerate(block) if (m := FRAME.match(line))]
    if not frames:
        return block[-1] if block else "?"
    last_k = frames[-1][0]
    exc = next((line for line in block[last_k + 1:] if line and not line.startswith((" ", "\t"))), "?")
    where = lambda m: f"{_short_path(m.group(1))}:{m.group(2)} in {m.group(3)}"  # noqa: E731
    origin = where(frames[-1][1])
    kit = [m for _, m in frames if _short_path(m.group(1)).startswith("rlkit/")]
    text = f"{exc[:300]} — raised at {origin}"
    if kit and where(kit[-1]) != origin:
        text += f"; kit frame {where(kit[-1])}"
    return text


def _tail(text: str, n: int = 25) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(line[:400] for line in lines[-n:])


ARGPARSE_ERROR = re.compile(r"^rlkit(?: [\w-]+)*: error: ")  # argparse's usage error: "rlkit data preview: error: ..."


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ") or ARGPARSE_ERROR.match(line)]


def strict_metrics(path: Path) -> tuple[dict | None, str | None]:
    """metrics.json as strict JSON (NaN/Infinity tokens rejected): (data, None) or (None, why not)."""
    if not path.is_file():
        return None, f"{path.name} missing"
    text = path.read_text()

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    try:
        return json.loads(text, parse_constant=refuse), None
    except ValueError as e:
        return None, f"{path} is not strict JSON: {e}"


def classify(p: Proc, expect: str, needles=(), check: Callable[[], str | None] | None = None,
             rc_error: int = 2) -> Result:
    """``expect``: 'error' (a clear error naming every needle), 'skip' or 'ok' (exit 0 and ``check()``
    returns None; a string is why the result is wrong)."""
    cmd = " ".join(str(a) for a in p.args)
    if p.timed_out:
        return Result(HANG, f"no exit within {TIMEOUT} s", _tail(p.err), cmd)
    errors = _error_lines(p.err)
    tb = "Traceback (most recent call last)" in p.err
    if p.rc != 0 and tb:
        return Result(TRACE, traceback_summary(p.err), _tail(p.err), cmd)
    if p.rc == 0:
        if expect == "error":
            return Result(SILENT, "exit 0 where an error was expected", _tail(p.err, 12), cmd)
        why = check() if check else None
        if why:
            return Result(SILENT, why, _tail(p.err, 12), cmd)
        return Result(SKIP if expect == "skip" else ACCEPTED, "", "", cmd)
    last = next((line for line in reversed(p.err.splitlines()) if line.strip()), "")
    one_line = p.rc == rc_error and len(errors) == 1 and last == errors[0]
    line = errors[-1] if errors else f"exit {p.rc}: {last[:300]}"
    if expect != "error":
        return Result(REFUSED, line, _tail(p.err, 12), cmd)
    missing = [n for n in needles if n not in line]
    if one_line and not missing:
        return Result(CLEAR, line, "", cmd)
    why = [] if one_line else [f"exit {p.rc}, {len(errors)} 'error:' line(s)"]
    if missing:
        why.append(f"does not name {missing}")
    return Result(UNCLEAR, f"{line} [{'; '.join(why)}]", _tail(p.err, 12), cmd)


class Ctx:
    """One case's folder, the shared dataset, and the command line."""

    def __init__(self, work: Path, data: Path, cache: Path):
        self.work, self.data, self.cache = work, data, cache
        work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RLKIT_RECORDS_CACHE": str(cache)}
        self.env.pop("WORLD_SIZE", None)
        self.procs: list[subprocess.Popen] = []
        self.run_dir = work / "run"  # the experiments' output_dir

    def argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "rlkit", *map(str, args)]

    def cli(self, *args, timeout: int = TIMEOUT) -> Proc:
        t = time.perf_counter()
        argv = self.argv(*args)
        try:
            r = subprocess.run(argv, cwd=self.work, env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return Proc(argv[3:], None, (e.stdout or b"").decode(errors="replace"),
                        (e.stderr or b"").decode(errors="replace"), time.perf_counter() - t, True)
        return Proc(argv[3:], r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"),
                    time.perf_counter() - t)

    def popen(self, *args) -> subprocess.Popen:
        with open(self.work / f"bg{len(self.procs)}.err", "wb") as err:
            p = subprocess.Popen(self.argv(*args), cwd=self.work, env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=err, start_new_session=True)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # ------------------------------------------------------------ experiments and data

    def link_images(self) -> None:
        if not (self.work / "rgb").exists():
            (self.work / "rgb").symlink_to(self.data / "rgb")

    def exp_dict(self, **over) -> dict:
        d = {
            "method": "sft",
            "output_dir": str(self.run_dir),
            "model": {"name": "tiny-qwen2.5-vl", "cache_dir": str(ROOT / ".cache" / "models")},
            "data": {"train": [{"path": str(self.data / "indoor_train.jsonl"), "name": "indoor"}],
                     "eval": [{"path": str(self.data / "indoor_eval.jsonl"), "name": "indoor"}]},
            "camera": {"f_uni": 60, "crop_width": [56, 84], "crop_height": [56, 84], "multiple_of": 28},
            "train": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "save_steps": 1,
                      "logging_steps": 1, "report_to": "none", "disable_tqdm": True},
            "eval": {"samples_per_dataset": 4, "batch_size": 4, "max_new_tokens": 4},
        }
        return _merge(d, over)

    def exp(self, name: str = "exp.yaml", **over) -> Path:
        path = self.work / name
        path.write_text(yaml.safe_dump(self.exp_dict(**over), sort_keys=False))
        return path

    def grpo(self, rewards, reward_kwargs=None, name: str = "exp.yaml", **over) -> Path:
        return self.exp(name, **_merge({
            "method": "grpo", "rewards": rewards, "reward_kwargs": reward_kwargs or {},
            "train": {"max_steps": 2, "num_generations": 2, "max_completion_length": 4, "beta": 0.0}}, over))

    def lines(self, split: str) -> list[bytes]:
        return (self.data / f"indoor_{split}.jsonl").read_bytes().splitlines()

    def template(self) -> dict:
        return json.loads(self.lines("eval")[0])

    def write_jsonl(self, name: str, lines: list[bytes]) -> Path:
        self.link_images()
        path = self.work / name
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    def metrics(self, sub: str | None = None) -> tuple[dict | None, str | None]:
        return strict_metrics(self.run_dir / sub / "metrics.json" if sub else self.run_dir / "metrics.json")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _line(row) -> bytes:
    return row if isinstance(row, bytes) else json.dumps(row).encode()


def _skipped_in(report: dict | None, key: str) -> int:
    return int(((report or {}).get("skipped") or {}).get(key, 0))


# ---------------------------------------------------------------- kind 1: bad jsonl lines


def _drop(key):
    return lambda r: {k: v for k, v in r.items() if k != key}


def _set(**kv):
    return lambda r: {**r, **kv}


def _intr(i, v):
    def f(r):
        intr = list(r["intrinsics"])
        intr[i] = v
        return {**r, "intrinsics": intr}
    return f


def _intr2(fx, fy):
    return lambda r: {**r, "intrinsics": [fx, fy, *r["intrinsics"][2:]]}


def _first_depth(v):
    return lambda r: {**r, "depth": [v, *r["depth"][1:]]}


def _first_pixel(x, y):
    return lambda r: {**r, "pixel_coords": [[x(r) if callable(x) else x, y], *r["pixel_coords"][1:]]}


def _raw(b: bytes):
    return lambda r: b


# (case, the bad line from the template line, the field the error must name)
ROWS = [
    ("missing key 'image'", _drop("image"), "image"),
    ("missing key 'intrinsics'", _drop("intrinsics"), "intrinsics"),
    ("missing key 'pixel_coords'", _drop("pixel_coords"), "pixel_coords"),
    ("missing key 'depth'", _drop("depth"), "depth"),
    ("image is a number", _set(image=42), "image"),
    ("intrinsics is a string", _set(intrinsics="60 60 32 24 64 48"), "intrinsics"),
    ("depth holds strings", lambda r: {**r, "depth": [str(d) for d in r["depth"]]}, "depth"),
    ("pixel_coords flat [x, y]", lambda r: {**r, "pixel_coords": r["pixel_coords"][0]}, "pixel_coords"),
    ("line is a JSON array", lambda r: [r], "<line>"),
    ("depth NaN", _first_depth(float("nan")), "depth"),
    ("depth Infinity", _first_depth(float("inf")), "depth"),
    ("depth negative", _first_depth(-3.0), "depth"),
    ("depth zero", _first_depth(0.0), "depth"),
    ("depth huge (1e300)", _first_depth(1e300), "depth"),
    ("depth huge integer (10**400)", _first_depth(10 ** 400), "depth"),
    ("focal zero (fx = fy = 0)", _intr2(0.0, 0.0), "intrinsics"),
    ("focal negative", _intr2(-60.0, -60.0), "intrinsics"),
    ("focal tiny (1e-9)", _intr2(1e-9, 1e-9), "intrinsics"),
    ("focal NaN", _intr2(float("nan"), float("nan")), "intrinsics"),
    ("width zero", _intr(4, 0), "intrinsics"),
    ("height fractional", _intr(5, 47.5), "intrinsics"),
    ("width huge integer (10**9)", _intr(4, 10 ** 9), "intrinsics"),
    ("intrinsics of 4 values", lambda r: {**r, "intrinsics": r["intrinsics"][:4]}, "intrinsics"),
    ("pixel x = width (outside)", _first_pixel(lambda r: r["intrinsics"][4], 5), "pixel_coords"),
    ("pixel negative", _first_pixel(-1, 5), "pixel_coords"),
    ("pixel NaN", _first_pixel(float("nan"), 5), "pixel_coords"),
    ("pixel huge integer (10**30)", _first_pixel(10 ** 30, 5), "pixel_coords"),
    ("depth and pixel_coords lengths differ", lambda r: {**r, "depth": r["depth"][:-1]}, "depth"),
    ("no labels ([] and [])", _set(pixel_coords=[], depth=[]), "depth"),
    ("axis_depth wrong length", lambda r: {**r, "axis_depth": r["axis_depth"][:-1]}, "axis_depth"),
    ("depth_map not a string", _set(depth_map=5), "depth_map"),
    ("invalid JSON (cut line)", lambda r: json.dumps(r).encode()[:40], "<json>"),
    ("invalid UTF-8", lambda r: json.dumps(r).encode().replace(b'"rgb/', b'"rgb\xff/', 1), "<utf-8>"),
    ("BOM on a later line", lambda r: b"\xef\xbb\xbf" + json.dumps(r).encode(), "<json>"),
    ("duplicate key", lambda r: json.dumps(r).encode()[:-1] + b', "depth": [1.0]}', "depth"),
    ("nesting 100k deep", _raw(b"[" * 100_000 + b"]" * 100_000), "<json>"),
    ("NUL in image path", _set(image="rgb/indoor_eval/000000\x00.png"), "image"),
    ("../ path escaping the root", lambda r: {**r, "image": "../../../../../../etc/hostname"}, "image"),
    ("absolute image path", _set(image="/etc/hostname"), "image"),
]

# valid lines: exit 0, every line loaded, nothing skipped (repairs counted)
OK_ROWS = [
    ("BOM on the first line", lambda lines: [b"\xef\xbb\xbf" + lines[0], *lines[1:]], {}),
    ("fx == 0 (use fy; a counted repair)", lambda lines: [_line(_intr(0, 0)(json.loads(lines[0]))), *lines[1:]],
     {"fx0_as_fy": 1}),
    ("CRLF line endings", lambda lines: [line + b"\r" for line in lines], {}),
    ("blank lines between rows", lambda lines: [x for line in lines for x in (line, b"", b"   ")], {}),
    ("fractional pixel coordinates", lambda lines: [_line(_first_pixel(3.4, 5.6)(json.loads(lines[0]))),
                                                    *lines[1:]], {}),
]


def row_case(make, field: str, skip: bool, split: str = "eval", command: str = "eval"):
    """The bad line as line 2 of a copy of the eval (or train) file; ``eval --model none`` (or a 2-step
    training): an error naming file:2 and the field, or with skip_invalid a count in metrics.json."""
    def fn(ctx: Ctx) -> Result:
        lines = ctx.lines(split)
        bad = _line(make(ctx.template() if split == "eval" else json.loads(lines[0])))
        path = ctx.write_jsonl(f"bad_{split}.jsonl", [lines[0], bad, *lines[1:]])
        data = {split: [{"path": str(path), "name": "indoor"}], "skip_invalid": skip}
        exp = ctx.exp(data=data)
        p = ctx.cli("eval", exp, "--model", "none") if command == "eval" else ctx.cli(exp)
        if not skip:
            return classify(p, "error", [f"{path}:2", f"field '{field}'"])

        def check():
            m, why = ctx.metrics("eval-baselines" if command == "eval" else None)
            if why:
                return why
            section = f"{split}_data"
            if section not in m:
                return f"metrics.json has no {section}: the {split} file's skipped line is not counted there"
            n = _skipped_in(m[section].get("indoor"), field)
            if n != 1:
                return f"metrics.json {section}.indoor.skipped['{field}'] = {n}, expected 1 ({m[section]})"
            if "skipped" not in p.err:
                return "the skip is not in the log"
            return None
        return classify(p, "skip", check=check)
    return fn


def ok_rows_case(transform, repaired: dict):
    def fn(ctx: Ctx) -> Result:
        lines = ctx.lines("eval")
        path = ctx.write_jsonl("eval.jsonl", transform(lines))
        exp = ctx.exp(data={"eval": [{"path": str(path), "name": "indoor"}]})
        p = ctx.cli("eval", exp, "--model", "none")

        def check():
            m, why = ctx.metrics("eval-baselines")
            if why:
                return why
            rep = m.get("eval_data", {}).get("indoor", {})
            if rep.get("loaded") != len(lines) or rep.get("skipped") or rep.get("repaired", {}) != repaired:
                return f"eval_data.indoor = {rep}; expected {len(lines)} loaded, none skipped, repaired {repaired}"
            return None
        return classify(p, "ok", check=check)
    return fn


def all_bad_case(skip: bool):
    """Every line bad: even with skip_invalid there is nothing to evaluate, which must be an error."""
    def fn(ctx: Ctx) -> Result:
        bad = [_line(_first_depth(-1.0)(json.loads(line))) for line in ctx.lines("eval")]
        path = ctx.write_jsonl("eval.jsonl", bad)
        exp = ctx.exp(data={"eval": [{"path": str(path), "name": "indoor"}], "skip_invalid": skip})
        return classify(ctx.cli("eval", exp, "--model", "none"), "error", [str(path)])
    return fn


def empty_file_case(ctx: Ctx) -> Result:
    path = ctx.work / "eval.jsonl"
    path.write_bytes(b"")
    exp = ctx.exp(data={"eval": [{"path": str(path), "name": "indoor"}]})
    return classify(ctx.cli("eval", exp, "--model", "none"), "error", [str(path)])


def preview_row_case(make, field: str):
    """The kit's defaults (``data preview --data``) on a file with a bad line 2."""
    def fn(ctx: Ctx) -> Result:
        lines = ctx.lines("eval")
        path = ctx.write_jsonl("bad.jsonl", [lines[0], _line(make(ctx.template())), *lines[1:]])
        p = ctx.cli("data", "preview", "--data", path, "--n", 2, "--out", ctx.work / "p.png")
        return classify(p, "error", [f"{path}:2", f"field '{field}'"])
    return fn


# ---------------------------------------------------------------- kind 1: bad images


def _png_bytes(ctx: Ctx) -> bytes:
    return (ctx.data / ctx.template()["image"]).read_bytes()


# (case, how to stage the bad image -> the row's changes, the skip reason, the field the error names)
IMAGES = [
    ("missing image file", lambda ctx: {"image": "bad/missing.png"}, "image_missing", "image"),
    ("0-byte PNG", lambda ctx: _stage(ctx, b""), "image_truncated", "image"),
    ("text file named .png", lambda ctx: _stage(ctx, b"this is not an image\n" * 20), "image_not_an_image", "image"),
    ("truncated PNG", lambda ctx: _stage(ctx, _png_bytes(ctx)[: len(_png_bytes(ctx)) // 2]), "image_truncated",
     "image"),
    ("image size differs from intrinsics",
     lambda ctx: {**_stage(ctx, _png_bytes(ctx)), **_bigger(ctx)}, "image_size_mismatch", "intrinsics"),
    ("size differs, image file shared with a good line",  # the same PNG as line 1, other intrinsics
     lambda ctx: _bigger(ctx), "image_size_mismatch", "intrinsics"),
    ("smaller size, image file shared with a good line", lambda ctx: _smaller(ctx), "image_size_mismatch",
     "intrinsics"),
    ("image path is a folder", lambda ctx: _stage(ctx, None), "image_unreadable", "image"),
]


def _resized(ctx: Ctx, dw: int, dh: int) -> dict:
    """Intrinsics dw x dh pixels off the image's size; the labels moved one pixel right (so that none
    coincides with a label of line 1, which may share the image), those that stay inside kept."""
    r = ctx.template()
    w, h = r["intrinsics"][4] + dw, r["intrinsics"][5] + dh
    keep = [k for k, (x, y) in enumerate(r["pixel_coords"]) if x + 1 <= w - 1 and y <= h - 1]
    return {"intrinsics": [*r["intrinsics"][:4], w, h],
            "pixel_coords": [[r["pixel_coords"][k][0] + 1, r["pixel_coords"][k][1]] for k in keep],
            "depth": [r["depth"][k] for k in keep], "axis_depth": [r["axis_depth"][k] for k in keep]}


def _bigger(ctx: Ctx) -> dict:
    return _resized(ctx, 8, 6)


def _smaller(ctx: Ctx) -> dict:
    return _resized(ctx, -8, -6)


def _scored_bad_items(ctx: Ctx, bad: dict) -> int:
    """Rows of predictions.csv that are labels of the bad line (and of no good line): items scored, not skipped."""
    import csv

    good = set()
    for line in ctx.lines("eval"):
        r = json.loads(line)
        img = str((ctx.data / r["image"]).resolve())
        good |= {(img, float(x), float(y)) for x, y in r["pixel_coords"]}
    img = str((ctx.work / bad["image"]).resolve())
    keys = {(img, float(x), float(y)) for x, y in bad["pixel_coords"]} - good
    with open(ctx.run_dir / "predictions.csv", newline="") as f:
        return sum((r["image"], float(r["x"]), float(r["y"])) in keys for r in csv.DictReader(f))


def _stage(ctx: Ctx, content: bytes | None) -> dict:
    (ctx.work / "bad").mkdir(exist_ok=True)
    target = ctx.work / "bad" / "x.png"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    return {"image": "bad/x.png"}


def image_case(stage, reason: str, field: str, mode: str):
    """The bad image's line as line 2 of both the train and the eval file (eval selects every label).
    mode 'render': ``data render --split eval``; 'train': a 2-step SFT run whose train file is the bad line
    alone; 'train-skip' with skip_invalid: the count in builder_skips or eval_skipped."""
    def fn(ctx: Ctx) -> Result:
        change = stage(ctx)
        paths = {}
        bad = _line({**ctx.template(), **change})
        for split in ("train", "eval"):
            lines = ctx.lines(split)
            paths[split] = ctx.write_jsonl(f"{split}.jsonl", [lines[0], bad, *lines[1:]])
        if mode == "train":  # the bad line alone: the train stream meets it at its first sample
            paths["train"] = ctx.write_jsonl("train.jsonl", [bad])
        skip = mode == "train-skip"
        exp = ctx.exp(data={"train": [{"path": str(paths["train"]), "name": "indoor"}],
                            "eval": [{"path": str(paths["eval"]), "name": "indoor"}], "skip_invalid": skip},
                      eval={"samples_per_dataset": 64, "batch_size": 16})
        if mode == "render":
            p = ctx.cli("data", "render", exp, "--split", "eval", "--out", ctx.work / "render")
            return classify(p, "error", [f"{paths['eval']}:2", f"field '{field}'"])
        p = ctx.cli(exp)
        if not skip:
            return classify(p, "error", [f"{paths['train']}:1", f"field '{field}'"])

        def check():
            m, why = ctx.metrics()
            if why:
                return why
            n = int((m.get("builder_skips") or {}).get(reason, 0)) + \
                int(((m.get("eval_skipped") or {}).get("indoor") or {}).get(reason, 0))
            if n < 1:
                return (f"'{reason}' counted nowhere in metrics.json (builder_skips {m.get('builder_skips')}, "
                        f"eval_skipped {m.get('eval_skipped')})")
            scored = _scored_bad_items(ctx, json.loads(bad))
            if scored:
                return (f"{scored} eval items of the bad line were scored, not skipped (eval_skipped "
                        f"{m.get('eval_skipped')}): its image was taken as it is")
            if "skipped" not in p.err:
                return "the skip is not in the log"
            return None
        return classify(p, "skip", check=check)
    return fn


# ---------------------------------------------------------------- kind 2: config


def config_case(overrides=(), over: dict | None = None, needles=None, raw: str | None = None,
                command: str = "run", extra_files: dict | None = None):
    """An experiment with a bad value (or raw YAML text): a clear error naming the file and the key."""
    def fn(ctx: Ctx) -> Result:
        for name, text in (extra_files or {}).items():
            (ctx.work / name).write_text(text.replace("{work}", str(ctx.work)).replace("{data}", str(ctx.data)))
        exp = ctx.work / "exp.yaml"
        if raw is not None:
            exp.write_text(raw.replace("{work}", str(ctx.work)).replace("{data}", str(ctx.data)))
        else:
            exp = ctx.exp(**(over or {}))
        want = [n.replace("{exp}", str(exp)).replace("{work}", str(ctx.work)) for n in (needles or [])]
        args = ("eval", exp, *overrides, "--model", "none") if command == "eval" else (exp, *overrides)
        return classify(ctx.cli(*args), "error", want)
    return fn


_DATA = ("data:\n  train: [{{path: {data}/indoor_train.jsonl, name: indoor}}]\n"
         "  eval: [{{path: {data}/indoor_eval.jsonl, name: indoor}}]\n")
_BASE = ("output_dir: {work}/run\nmodel: {{cache_dir: " + str(ROOT / ".cache" / "models") + "}}\n" + _DATA
         + "camera: {{f_uni: 60, crop_width: [56, 84], crop_height: [56, 84], multiple_of: 28}}\n"
           "eval: {{samples_per_dataset: 4, batch_size: 4, max_new_tokens: 4}}\n")
_TRAIN = "train: {{max_steps: 2, per_device_train_batch_size: 2, report_to: none, save_steps: 1}}\n"


def _yaml(text: str) -> str:
    return (_BASE + text).replace("{{", "{").replace("}}", "}")


CONFIGS = [
    ("unknown top-level key", config_case(["seeed=1"], needles=["{exp}", "seeed"])),
    ("unknown key in model", config_case(["model.nmae=x"], needles=["{exp}", "nmae"])),
    ("unknown key in model.tiny", config_case(["model.tiny.layerz=2"], needles=["{exp}", "layerz"])),
    ("unknown key in model.lora", config_case(["model.lora={rr: 4}"], needles=["{exp}", "model.lora", "rr"])),
    ("unknown key in data", config_case(["data.skip_invalidd=true"], needles=["{exp}", "skip_invalidd"])),
    ("unknown key in a dataset entry", config_case(over={"data": {"eval": [{"path": "x.jsonl", "nmae": "a"}]}},
                                                   needles=["{exp}", "nmae"])),
    ("unknown key in data.synth", config_case(["data.synth={imgs: 3}"], needles=["{exp}", "imgs"])),
    ("unknown key in camera", config_case(["camera.f_unii=50"], needles=["{exp}", "f_unii"])),
    ("unknown key in prompt", config_case(["prompt.tempalte=sft"], needles=["{exp}", "tempalte"])),
    ("unknown key in prompt.marker", config_case(["prompt.marker.colour=[1,2,3]"], needles=["{exp}", "colour"])),
    ("unknown key in train (TRL field)", config_case(["train.learnign_rate=0.1"], needles=["{exp}", "learnign_rate"])),
    ("unknown key in eval", config_case(["eval.sample_per_dataset=3"], needles=["{exp}", "sample_per_dataset"])),
    ("seed: x", config_case(["seed=x"], needles=["{exp}", "seed"])),
    ("learning_rate: abc", config_case(["train.learning_rate=abc"], needles=["{exp}", "learning_rate"])),
    ("skip_invalid: 'false'", config_case(["data.skip_invalid='false'"], needles=["{exp}", "skip_invalid"])),
    ("multiple_of: 0", config_case(["camera.multiple_of=0"], needles=["{exp}", "multiple_of"])),
    ("dtype: float8", config_case(["model.dtype=float8"], needles=["{exp}", "dtype"])),
    ("marker color of 2 values", config_case(["prompt.marker.color=[255, 0]"], needles=["{exp}", "color"])),
    ("marker size 0", config_case(["prompt.marker.size=0"], needles=["{exp}", "size"])),
    ("f_uni: abc", config_case(["camera.f_uni=abc"], needles=["{exp}", "f_uni"])),
    ("f_uni: .nan", config_case(["camera.f_uni=.nan"], needles=["{exp}", "f_uni"])),
    ("f_uni: .inf", config_case(["camera.f_uni=.inf"], needles=["{exp}", "f_uni"])),
    ("f_uni: -1", config_case(["camera.f_uni=-1"], needles=["{exp}", "f_uni"])),
    ("crop ranges reversed", config_case(["camera.crop_width=[84, 56]"], needles=["{exp}", "crop_width"])),
    ("camera.strategy unknown", config_case(["camera.strategy=fisheye"], needles=["{exp}", "strategy"])),
    ("method: ppo", config_case(["method=ppo"], needles=["{exp}", "method"])),
    ("dataset weight -1", config_case(over={"data": {"train": [{"path": "x.jsonl", "weight": -1}]}},
                                      needles=["{exp}", "weight"])),
    ("eval.samples_per_dataset: 0", config_case(["eval.samples_per_dataset=0"],
                                                needles=["{exp}", "samples_per_dataset"])),
    ("per_device_train_batch_size: 0", config_case(["train.per_device_train_batch_size=0"],
                                                   needles=["{exp}", "per_device_train_batch_size"])),
    ("max_steps: -1 (endless stream)", config_case(["train.max_steps=-1"], needles=["{exp}", "max_steps"])),
    ("global_batch_size not dividing", config_case(["global_batch_size=3"], needles=["{exp}", "global_batch_size"])),
    ("rewards: on an SFT run", config_case(["rewards=[neg_l1]"], needles=["{exp}", "rewards"])),
    ("missing data file", config_case(["data.eval=[{path: missing.jsonl}]"], needles=["{exp}", "missing.jsonl"])),
    ("missing experiment file", lambda ctx: classify(ctx.cli(ctx.work / "nope.yaml"), "error",
                                                     [str(ctx.work / "nope.yaml")])),
    ("model.name: no such folder or id", config_case(["model.name=./no-such-model"],
                                                     needles=["{exp}", "no-such-model"])),
    ("base: cycle", config_case(raw=_yaml(_TRAIN + "base: b.yaml\n"),
                                extra_files={"b.yaml": _yaml(_TRAIN + "base: exp.yaml\n")},
                                needles=["{exp}", "base"])),
    ("extends: cycle", config_case(raw="extends: b.yaml\n", extra_files={"b.yaml": "extends: exp.yaml\n"},
                                   needles=["{exp}", "extends"])),
    ("invalid YAML", config_case(raw=_yaml("train: {max_steps: 2\n"), needles=["{exp}:9: invalid YAML"])),  # file:line
    ("duplicate key in YAML", config_case(raw=_yaml(_TRAIN + "seed: 1\nseed: 2\n"), needles=["{exp}", "seed"])),
    ("train.max_steps left out", config_case(raw=_yaml("train: {{report_to: none}}\n"),
                                             needles=["{exp}", "max_steps"])),
    ("top level is a list", config_case(raw="- method: sft\n", needles=["{exp}"])),
    ("override without '='", config_case(["train.learning_rate"], needles=["train.learning_rate"])),
    ("override into a number (seed.x=1)", config_case(["seed.x=1"], needles=["{exp}", "seed"])),
    ("output_dir is an existing file", lambda ctx: _output_dir_file(ctx)),
]


def _output_dir_file(ctx: Ctx) -> Result:
    (ctx.work / "afile").write_text("not a folder\n")
    exp = ctx.exp(output_dir=str(ctx.work / "afile"))
    return classify(ctx.cli(exp), "error", [str(ctx.work / "afile")])


# ---------------------------------------------------------------- kind 3: reward plugins

PLUGIN = '''
def returns_none(completions, **kw):
    return [None for _ in completions]

def returns_nan(completions, **kw):
    return [float("nan") for _ in completions]

def returns_inf(completions, **kw):
    return [float("inf") for _ in completions]

def returns_text(completions, **kw):
    return ["1.0" for _ in completions]

def too_short(completions, **kw):
    return [0.0]

def raises(completions, **kw):
    raise ValueError("plugin bug")

def no_kwargs(completions, depth):
    return [0.0 for _ in completions]

NOT_A_FUNCTION = 3
'''


def _plugins(ctx: Ctx) -> Path:
    (ctx.work / "plug.py").write_text(PLUGIN)
    (ctx.work / "import_error.py").write_text("import no_such_module_rlkit\n\ndef f(completions, **kw):\n"
                                              "    return [0.0 for _ in completions]\n")
    (ctx.work / "exits.py").write_text("import sys\nsys.exit('no')\n\ndef f(completions, **kw):\n"
                                       "    return [0.0 for _ in completions]\n")
    (ctx.work / "syntax.py").write_text("def f(completions, **kw:\n    return [0.0]\n")
    return ctx.work


def reward_case(ref: str, kwargs: dict | None = None, needles=(), at_step: bool = False, extra: dict | None = None):
    """A GRPO experiment with the reward ``ref`` ('{w}' stands for the case folder): a clear error naming
    it, at load, or (at_step) at the first step with no checkpoint written."""
    def fn(ctx: Ctx) -> Result:
        w = str(_plugins(ctx))
        r = ref.replace("{w}", w)
        exp = ctx.grpo([r], {r: kwargs} if kwargs else {}, **(extra or {}))
        p = ctx.cli(exp)
        res = classify(p, "error", [n.replace("{w}", w) for n in needles])
        trained = sorted(q.name for q in ctx.run_dir.glob("checkpoint-*"))
        if res.outcome == CLEAR and at_step and trained:
            return Result(SILENT, f"{res.line} — but trained first: {trained}", "", res.command)
        return res
    return fn


REWARDS = [
    ("missing plugin file", reward_case("{w}/nofile.py:f", needles=["nofile.py"])),
    ("missing function", reward_case("{w}/plug.py:nope", needles=["plug.py", "nope"])),
    ("import error in plugin", reward_case("{w}/import_error.py:f", needles=["import_error.py"])),
    ("sys.exit at import", reward_case("{w}/exits.py:f", needles=["exits.py"])),
    ("module:function, no such module", reward_case("no_such_pkg_rlkit.mod:f", needles=["no_such_pkg_rlkit"])),
    ("unknown registry name", reward_case("neg_l3", needles=["neg_l3"])),
    ("returns None", reward_case("{w}/plug.py:returns_none", needles=["returns_none", "None"], at_step=True)),
    ("returns NaN", reward_case("{w}/plug.py:returns_nan", needles=["returns_nan", "nan"], at_step=True)),
    ("returns inf", reward_case("{w}/plug.py:returns_inf", needles=["returns_inf", "inf"], at_step=True)),
    ("returns strings", reward_case("{w}/plug.py:returns_text", needles=["returns_text"], at_step=True)),
    ("wrong length", reward_case("{w}/plug.py:too_short", needles=["too_short"], at_step=True)),
    ("raises", reward_case("{w}/plug.py:raises", needles=["raises"], at_step=True)),
    ("no **kwargs in the signature", reward_case("{w}/plug.py:no_kwargs", needles=["no_kwargs"], at_step=True)),
    ("neg_l1 clip 0", reward_case("neg_l1", {"clip": 0}, needles=["neg_l1", "clip"])),
    ("neg_l2 scale -1", reward_case("neg_l2", {"scale": -1}, needles=["neg_l2", "scale"])),
    ("delta1 threshold 1", reward_case("delta1", {"threshold": 1}, needles=["delta1", "threshold"])),
    ("unknown reward kwarg", reward_case("neg_l1", {"clipp": 3}, needles=["neg_l1", "clipp"])),
    ("reward_weights of the wrong length", reward_case("neg_l1", needles=["reward_weights"],
                                                       extra={"train": {"reward_weights": [1.0, 2.0, 3.0]}})),
]


def reward_kwargs_not_listed(ctx: Ctx) -> Result:
    exp = ctx.grpo(["neg_l1"], {"neg_l2": {"clip": 3}})
    return classify(ctx.cli(exp), "error", [str(exp), "neg_l2"])


# ---------------------------------------------------------------- kind 4: kills and run folders


def _wait_for(cond, proc: subprocess.Popen | None, timeout: float = 240) -> bool:
    """True once ``cond()`` holds; False if ``proc`` exited or the time ran out first."""
    t = time.time()
    while time.time() - t < timeout:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return cond()
        time.sleep(0.02)
    return False


def rerun_result(ctx: Ctx, exp: Path, samples: int, needle: str | None = None, args=()) -> Result:
    """The same command again: it must finish (else stuck) with training's info in metrics.json (else lost)."""
    p = ctx.cli(exp, *args)
    cmd = " ".join(map(str, p.args))
    if p.timed_out:
        return Result(HANG, f"re-run: no exit within {TIMEOUT} s", _tail(p.err), cmd)
    if p.rc != 0:
        line = traceback_summary(p.err) if "Traceback (most recent" in p.err else \
            (_error_lines(p.err) or [f"exit {p.rc}"])[-1]
        return Result(STUCK, f"re-run exit {p.rc}: {line}", _tail(p.err), cmd)
    m, why = ctx.metrics()
    if why:
        return Result(SILENT, f"re-run: {why}", _tail(p.err, 8), cmd)
    missing = [k for k in ("train_samples", "train_seconds", "train_data", "builder_skips") if k not in m]
    if missing:
        return Result(LOST, f"re-run finished but metrics.json lacks {missing}", _tail(p.err, 8), cmd)
    if m.get("train_samples") != samples:
        steps = sorted(int(q.name.split("-")[1]) for q in ctx.run_dir.glob("checkpoint-*"))
        return Result(SILENT, f"re-run finished with train_samples {m.get('train_samples')}, expected {samples} "
                              f"(checkpoints now: {steps})", _tail(p.err, 8), cmd)
    if needle and needle not in p.err:
        return Result(SILENT, f"re-run finished without '{needle}' in its log", _tail(p.err, 8), cmd)
    if not (ctx.run_dir / "final" / "config.json").exists():
        return Result(SILENT, "re-run finished without final/", _tail(p.err, 8), cmd)
    return Result(RECOVERED, "", "", cmd)


def kill_during_training(sig: int):
    def fn(ctx: Ctx) -> Result:
        exp = ctx.exp(train={"max_steps": 16, "save_steps": 2})
        proc = ctx.popen(exp)
        ok = _wait_for(lambda: (ctx.run_dir / "checkpoint-2" / "trainer_state.json").exists(), proc)
        if proc.poll() is not None:
            return Result(NOT_RUN, f"the run ended (exit {proc.returncode}) before the kill")
        if not ok:
            return Result(NOT_RUN, "no checkpoint-2 appeared in time")
        sent = time.time()
        os.killpg(proc.pid, sig)
        proc.wait()
        final = ctx.run_dir / "final"
        if final.exists() and final.stat().st_mtime < sent:  # a busy machine let training end before the signal
            return Result(NOT_RUN, "training had finished before the signal was sent")
        return rerun_result(ctx, exp, 32, needle="resuming from")
    return fn


def kill_at_start(ctx: Ctx) -> Result:
    """kill -9 right after the run dir's lock is taken (before config.yaml and any step)."""
    exp = ctx.exp()
    proc = ctx.popen(exp)
    if not _wait_for(lambda: (ctx.run_dir / ".rlkit.lock").exists(), proc):
        return Result(NOT_RUN, "no lock appeared before the run ended")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return rerun_result(ctx, exp, 4)


def kill_during_eval(ctx: Ctx) -> Result:
    """kill -9 once train_info.json is written (evaluation running); the re-run keeps training's info."""
    exp = ctx.exp(eval={"samples_per_dataset": 24, "batch_size": 1, "max_new_tokens": 16})
    proc = ctx.popen(exp)
    if not _wait_for(lambda: (ctx.run_dir / "train_info.json").exists(), proc):
        return Result(NOT_RUN, "no train_info.json appeared")
    if proc.poll() is not None:
        return Result(NOT_RUN, f"the run ended (exit {proc.returncode}) before the kill")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (ctx.run_dir / "metrics.json").exists():
        return Result(NOT_RUN, "evaluation finished before the kill")
    return rerun_result(ctx, exp, 4)


_FINISHED: dict = {}  # the one finished 4-step run the run-folder cases copy (trained once per battery)
_FINISHED_LOCK = threading.Lock()


def _finished_run(ctx: Ctx) -> tuple[Path, Result | None]:
    """A finished run (4 steps, checkpoints 2 and 4) in ctx's run dir: a copy of one trained once, with its
    config.yaml's output_dir set to this folder (so it is this experiment's run dir)."""
    over = {"train": {"max_steps": 4, "save_steps": 2}}
    with _FINISHED_LOCK:
        if "dir" not in _FINISHED:
            t = Ctx(ctx.work.parent / "finished-template", ctx.data, ctx.cache)
            p = t.cli(t.exp(**over))
            _FINISHED["dir"] = t.run_dir
            _FINISHED["bad"] = None if p.rc == 0 else Result(
                NOT_RUN, "the first run failed: " + (_error_lines(p.err) or [traceback_summary(p.err)])[-1],
                _tail(p.err), " ".join(map(str, p.args)))
    exp = ctx.exp(**over)
    if _FINISHED["bad"] is not None:
        return exp, _FINISHED["bad"]
    shutil.copytree(_FINISHED["dir"], ctx.run_dir, symlinks=True)
    config = ctx.run_dir / "config.yaml"
    config.write_text(config.read_text().replace(str(_FINISHED["dir"]), str(ctx.run_dir)))
    return exp, None


def _unfinish(ctx: Ctx, keep_final: bool = False, keep_info: bool = False) -> None:
    for name in ("metrics.json", "predictions.csv", "README.md", *(() if keep_info else ("train_info.json",))):
        (ctx.run_dir / name).unlink(missing_ok=True)
    if not keep_final:
        shutil.rmtree(ctx.run_dir / "final", ignore_errors=True)


def checkpoint_fault(fault: str):
    """As if killed while the newest checkpoint (checkpoint-4 of 4) was written."""
    def fn(ctx: Ctx) -> Result:
        exp, bad = _finished_run(ctx)
        if bad:
            return bad
        _unfinish(ctx)
        ck = ctx.run_dir / "checkpoint-4"
        needle = f"passing over incomplete checkpoint {ck}"
        if fault == "no trainer_state.json":
            (ck / "trainer_state.json").unlink()
        elif fault == "half-written trainer_state.json":
            text = (ck / "trainer_state.json").read_text()
            (ck / "trainer_state.json").write_text(text[: len(text) // 2])
        elif fault == "no weights":
            (ck / "model.safetensors").unlink()
        elif fault == "final.tmp left over":  # killed while final/ was written
            (ctx.run_dir / "final.tmp").mkdir()
            (ctx.run_dir / "final.tmp" / "config.json").write_text('{"half')
            needle = None
        return rerun_result(ctx, exp, 8, needle=needle)
    return fn


def lost_between_final_and_info(ctx: Ctx) -> Result:
    """final/ renamed into place, then killed before train_info.json was written (the window between
    save_final and the atomic write): the re-run evaluates; does metrics.json still say what training did?"""
    exp, bad = _finished_run(ctx)
    if bad:
        return bad
    _unfinish(ctx, keep_final=True)
    return rerun_result(ctx, exp, 8)


def truncated_config_yaml(ctx: Ctx) -> Result:
    """Killed while config.yaml was written (it is the first file of a run, before any step): the run dir
    holds a stale lock and half of config.yaml; the same command must start over, not refuse forever."""
    from rlkit.config import load_experiment, save_resolved

    exp = ctx.exp()
    ctx.run_dir.mkdir()
    save_resolved(load_experiment(exp), ctx.run_dir / "config.yaml")
    text = (ctx.run_dir / "config.yaml").read_text()
    (ctx.run_dir / "config.yaml").write_text(text[: len(text) // 2])
    _stale_lock(ctx)
    return rerun_result(ctx, exp, 4)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _stale_lock(ctx: Ctx, content: str | None = None) -> None:
    ctx.run_dir.mkdir(exist_ok=True)
    lock = ctx.run_dir / ".rlkit.lock"
    lock.write_text(content if content is not None else
                    json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": "earlier"}))


def stale_lock(ctx: Ctx) -> Result:
    exp = ctx.exp()
    _stale_lock(ctx)
    return rerun_result(ctx, exp, 4, needle="taking over the stale lock")


def empty_lock(ctx: Ctx) -> Result:
    """Killed between creating the lock file and writing its pid: an empty .rlkit.lock."""
    exp = ctx.exp()
    _stale_lock(ctx, "")
    return rerun_result(ctx, exp, 4)


def other_host_lock(ctx: Ctx) -> Result:
    """A lock of another machine cannot be checked: a clear error naming the lock."""
    exp = ctx.exp()
    _stale_lock(ctx, json.dumps({"pid": 1, "host": "some-other-host", "since": "earlier"}))
    return classify(ctx.cli(exp), "error", [str(ctx.run_dir), ".rlkit.lock"])


def busy_folder(ctx: Ctx) -> Result:
    """A live pid in the lock: a clear error; once that process is gone the same command must run."""
    exp = ctx.exp()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _stale_lock(ctx, json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "since": "now"}))
        res = classify(ctx.cli(exp), "error", [str(ctx.run_dir), str(sleeper.pid)])
    finally:
        sleeper.kill()
        sleeper.wait()
    if res.outcome != CLEAR:
        return res
    again = rerun_result(ctx, exp, 4, needle="taking over the stale lock")
    return res if again.outcome == RECOVERED else again


def second_run_live(ctx: Ctx) -> Result:
    """Two real runs into one folder: the second stops at once and leaves the first's lock alone (the first,
    a long run, is then killed)."""
    exp = ctx.exp(train={"max_steps": 5000, "save_steps": 4})
    first = ctx.popen(exp)
    if not _wait_for(lambda: (ctx.run_dir / "checkpoint-4").exists(), first):
        return Result(NOT_RUN, "the first run never reached checkpoint-4")
    res = classify(ctx.cli(exp), "error", [str(ctx.run_dir)])
    if first.poll() is not None:
        return Result(NOT_RUN, f"the first run ended (exit {first.returncode}) while the second ran; " + res.line)
    try:
        held = json.loads((ctx.run_dir / ".rlkit.lock").read_text())
    except (OSError, ValueError) as e:
        held = {"error": repr(e)}
    if res.outcome == CLEAR and held.get("pid") != first.pid:
        return Result(SILENT, f"after the second run the lock holds {held}, not the first run's pid {first.pid}")
    return res


def changed_config(ctx: Ctx) -> Result:
    exp, bad = _finished_run(ctx)
    if bad:
        return bad
    return classify(ctx.cli(exp, "train.learning_rate=0.01"), "error", [str(ctx.run_dir), "output_dir"])


def changed_config_unfinished(ctx: Ctx) -> Result:
    """A changed config into a run dir with checkpoints but no metrics.json (it would resume)."""
    exp, bad = _finished_run(ctx)
    if bad:
        return bad
    _unfinish(ctx)
    return classify(ctx.cli(exp, "camera.f_uni=50"), "error", [str(ctx.run_dir), "output_dir"])


def image_fixed_after_error(ctx: Ctx) -> Result:
    """Training stops on a missing image; the image is put in place; the same command must then finish."""
    change = {"image": "bad/late.png"}
    paths = {}
    for split in ("train", "eval"):
        lines = ctx.lines(split)
        paths[split] = ctx.write_jsonl(f"{split}.jsonl", [lines[0], _line({**ctx.template(), **change}), *lines[1:]])
    exp = ctx.exp(data={"train": [{"path": str(paths["train"]), "name": "indoor"}],
                        "eval": [{"path": str(paths["eval"]), "name": "indoor"}]},
                  eval={"samples_per_dataset": 64, "batch_size": 16})
    res = classify(ctx.cli(exp), "error", ["field 'image'"])
    if res.outcome != CLEAR:
        return res
    (ctx.work / "bad").mkdir(exist_ok=True)
    shutil.copy(ctx.data / ctx.template()["image"], ctx.work / "bad" / "late.png")
    again = rerun_result(ctx, exp, 4)
    return res if again.outcome == RECOVERED else again


def late_config_error_fixed(ctx: Ctx) -> Result:
    """A bad value that passes the checks and fails at training start (per_device_train_batch_size 0); the
    user fixes it and runs again into the same folder, where no step was trained: it must run."""
    exp = ctx.exp()
    first = ctx.cli(exp, "train.per_device_train_batch_size=0")
    if first.rc == 0:
        return Result(NOT_RUN, "the bad value trained", "", " ".join(map(str, first.args)))
    return rerun_result(ctx, exp, 4)


def disk_full(ctx: Ctx) -> Result:
    if os.geteuid() != 0:
        return Result(NOT_RUN, "mounting a small tmpfs needs root")
    disk = ctx.work / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode:
        return Result(NOT_RUN, f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}")
    try:
        exp = ctx.exp(output_dir=str(disk / "run"), train={"max_steps": 6, "save_steps": 2})
        res = classify(ctx.cli(exp), "error", ["disk is full"], rc_error=1)
        if res.outcome != CLEAR:
            return res
        subprocess.run(["mount", "-o", "remount,size=400m", str(disk)], check=True)
        ctx.run_dir = disk / "run"
        again = rerun_result(ctx, exp, 12)
        return res if again.outcome == RECOVERED else again
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ---------------------------------------------------------------- kind 5: two runs, outputs


def same_name_case(section: str, explicit: bool):
    def fn(ctx: Ctx) -> Result:
        f = str(ctx.data / f"indoor_{section}.jsonl")
        entries = [{"path": f, "name": "indoor"}, {"path": f, "name": "indoor"}] if explicit else \
            [{"path": f}, {"path": f}]
        exp = ctx.exp(data={section: entries})
        return classify(ctx.cli("eval", exp, "--model", "none"), "error", [str(exp), f"data.{section}"])
    return fn


def dataset_named_avg(ctx: Ctx) -> Result:
    """An eval dataset named 'avg', beside another: its scores and the average must both survive."""
    f = str(ctx.data / "indoor_eval.jsonl")
    exp = ctx.exp(data={"eval": [{"path": f, "name": "indoor"}, {"path": f, "name": "avg"}]})
    p = ctx.cli("eval", exp, "--model", "none")

    def check():
        m, why = ctx.metrics("eval-baselines")
        if why:
            return why
        for method, per in m["metrics"].items():
            if len(per) != 3:
                return f"metrics.json metrics['{method}'] has {sorted(per)}: dataset 'avg' and the average " \
                       "share one key"
        return None
    if p.rc != 0:  # refusing the name is fine too
        return classify(p, "error", [str(exp), "avg"])
    return classify(p, "ok", check=check)


def eval_out_is_run_dir(ctx: Ctx) -> Result:
    """``eval --model none --out OUTPUT_DIR`` writes metrics.json into the training run dir, which marks
    a run finished: a later training run must still train (or the eval must refuse)."""
    exp = ctx.exp()
    p = ctx.cli("eval", exp, "--model", "none", "--out", ctx.run_dir)
    if p.rc != 0:
        return classify(p, "error", [str(ctx.run_dir)])
    q = ctx.cli(exp)
    if q.rc != 0:
        return classify(q, "ok")
    if not (ctx.run_dir / "final" / "config.json").exists():
        return Result(SILENT, "the training run said 'finished' and trained nothing: the eval's metrics.json in "
                              "the run dir marked it done", _tail(q.err, 6), " ".join(map(str, q.args)))
    return Result(ACCEPTED)


def diverging_run(ctx: Ctx) -> Result:
    """A diverging run (learning rate 1e30, 4 steps): the weights become NaN. A clear error that says so (and
    what to change) before final/ is written; finishing would be fine only if metrics.json (strict JSON) said so,
    and a finite train_loss over NaN weights is a silent wrong result."""
    exp = ctx.exp(train={"learning_rate": 1e30, "max_steps": 4})
    p = ctx.cli(exp)
    if p.rc:
        return classify(p, "error", needles=["training diverged", "train.learning_rate"])

    def check():
        m, why = ctx.metrics()
        if why:
            return why
        import numpy as np
        from safetensors.numpy import load_file

        weights = load_file(str(ctx.run_dir / "final" / "model.safetensors"))
        bad = sorted(k for k, v in weights.items() if not np.isfinite(v).all())
        if not bad:
            return None
        text = json.dumps({k: v for k, v in m.items() if k != "metrics"})
        if "null" in text or "nan" in text.lower() or "diverge" in text.lower():
            return None  # metrics.json records it
        return (f"final/ holds non-finite weights ({len(bad)} of {len(weights)} tensors) but exit 0 and metrics.json "
                f"reports train_metrics {m.get('train_metrics')} with nothing non-finite")
    return classify(p, "ok", check=check)


def all_eval_images_bad(ctx: Ctx) -> Result:
    """Every eval image is a 0-byte file, skip_invalid on, evaluated with the tiny model: all items are
    skipped. A clear error, or exit 0 with the skips counted and strict JSON (undefined metrics as null)."""
    (ctx.work / "bad").mkdir()
    lines = []
    for k, line in enumerate(ctx.lines("eval")):
        (ctx.work / "bad" / f"{k}.png").write_bytes(b"")
        lines.append(_line({**json.loads(line), "image": f"bad/{k}.png"}))
    path = ctx.write_jsonl("eval.jsonl", lines)
    exp = ctx.exp(data={"eval": [{"path": str(path), "name": "indoor"}], "skip_invalid": True})
    p = ctx.cli("eval", exp, "--model", tiny_model())
    if p.rc != 0:
        return classify(p, "error", [str(path)])

    def check():
        m, why = ctx.metrics("eval")
        if why:
            return why
        n = sum(((m.get("eval_skipped") or {}).get("indoor") or {}).values())
        if n < 1 or m.get("eval_samples") != 0:
            return f"eval_skipped {m.get('eval_skipped')}, eval_samples {m.get('eval_samples')}"
        return None
    return classify(p, "skip", check=check)


def tiny_model() -> str:
    """The cached tiny checkpoint (built once), for ``eval --model``."""
    from rlkit.tiny import ensure_tiny_model

    return str(ensure_tiny_model(ROOT / ".cache" / "models"))


def strict_json_normal(ctx: Ctx) -> Result:
    exp = ctx.exp()
    p = ctx.cli(exp)

    def check():
        m, why = ctx.metrics()
        if why:
            return why
        for f in ("train_samples", "train_seconds", "train_data", "builder_skips", "eval_data", "eval_skipped"):
            if f not in m:
                return f"metrics.json lacks {f}"
        return None
    return classify(p, "ok", check=check)


def eval_missing_final(ctx: Ctx) -> Result:
    """``eval EXP`` before training: the default model (OUTPUT_DIR/final) does not exist."""
    exp = ctx.exp()
    return classify(ctx.cli("eval", exp), "error", [str(ctx.run_dir / "final")])


# ---------------------------------------------------------------- kind 6: the store cache (issue 31)


def _own_cache(ctx: Ctx, name: str = "records-cache") -> Path:
    """This case's own records cache (the shared one is never damaged)."""
    cache = ctx.work / name
    ctx.env["RLKIT_RECORDS_CACHE"] = str(cache)
    return cache


def _as_recovered(res: Result) -> Result:
    return Result(RECOVERED, res.line, res.output, res.command) if res.outcome == ACCEPTED else res


def _mount_tmpfs(where: Path, options: str) -> str | None:
    """A tmpfs at ``where`` (root only): None, or why it could not be mounted."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    return f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}" if r.returncode else None


def cache_not_writable(how: str):
    """RLKIT_RECORDS_CACHE names a file, a read-only folder or a full one: one error naming it and the variable."""
    def fn(ctx: Ctx) -> Result:
        cache = ctx.work / "records-cache"
        mounted = False
        if how == "a file":
            cache.write_text("not a folder\n")
        elif how == "read-only":
            if os.geteuid() != 0:
                cache.mkdir()
                cache.chmod(0o555)
            else:
                why = _mount_tmpfs(cache, "size=1m,ro")
                if why:
                    return Result(NOT_RUN, why)
                mounted = True
        else:  # full: a 64 KiB tmpfs filled up
            why = _mount_tmpfs(cache, "size=64k")
            if why:
                return Result(NOT_RUN, why)
            mounted = True
            try:
                with open(cache / "filler", "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError:
                pass
        try:
            ctx.env["RLKIT_RECORDS_CACHE"] = str(cache)
            p = ctx.cli("eval", ctx.exp(), "--model", "none")
            return classify(p, "error", [str(cache), "RLKIT_RECORDS_CACHE"])
        finally:
            if mounted:
                subprocess.run(["umount", "-l", str(cache)], check=False)
            elif cache.is_dir():
                cache.chmod(0o755)
    return fn


def cache_entry_damaged(damage: str):
    """A cached store entry cut short (its manifest.json, or its biggest column): the next run converts the file
    again with a log line and scores what the first run scored, instead of failing until the cache is deleted."""
    def fn(ctx: Ctx) -> Result:
        cache = _own_cache(ctx)
        exp = ctx.exp()
        first = ctx.cli("eval", exp, "--model", "none", "--out", ctx.work / "a")
        if first.rc != 0:
            return classify(first, "ok")
        entries = [m.parent for m in cache.glob("*/manifest.json")]
        if not entries:
            return Result(NOT_RUN, f"no store entry in {cache} after the first run")
        for entry in entries:
            if damage == "manifest.json":
                (entry / "manifest.json").write_text((entry / "manifest.json").read_text()[:40])
            else:
                column = max((f for f in entry.iterdir() if f.name != "manifest.json"), key=lambda f: f.stat().st_size)
                column.write_bytes(column.read_bytes()[: column.stat().st_size // 2])
        p = ctx.cli("eval", exp, "--model", "none", "--out", ctx.work / "b")

        def check():
            a, why = strict_metrics(ctx.work / "a" / "metrics.json")
            b, why_b = strict_metrics(ctx.work / "b" / "metrics.json")
            if why or why_b:
                return why or why_b
            if a["metrics"] != b["metrics"]:
                return "the run after the damage scored other numbers than the first"
            if "converting the file again" not in p.err:
                return "the damaged entry was not rebuilt with a log line ('converting the file again')"
            return None
        return _as_recovered(classify(p, "ok", check=check))
    return fn


def _bump_depths(text: bytes) -> bytes:
    """The same bytes but the first digit of every depth label one higher (a 9 stays): other labels, same size."""
    def bump(m):
        return m.group(1) + re.sub(rb"(^|, )([1-8])", lambda n: n.group(1) + str(int(n.group(2)) + 1).encode(),
                                   m.group(2))
    return re.sub(rb'("depth": \[)([^\]]*)', bump, text)


def _labels_of(path: Path) -> dict:
    """{(image, x, y): depth} of a jsonl whose images lie beside it."""
    out = {}
    for line in path.read_bytes().splitlines():
        r = json.loads(line)
        img = str((path.parent / r["image"]).resolve())
        out.update({(img, float(x), float(y)): float(d) for (x, y), d in zip(r["pixel_coords"], r["depth"])})
    return out


def jsonl_same_size_and_mtime(how: str):
    """An eval jsonl rewritten with other labels, the same size, its mtime put back (``cp -p`` writes in place,
    ``rsync -t`` renames a new file over it): the next eval must score the new labels (predictions.csv's gt)."""
    def fn(ctx: Ctx) -> Result:
        import csv

        _own_cache(ctx)
        path = ctx.write_jsonl("eval.jsonl", ctx.lines("eval"))
        exp = ctx.exp(data={"eval": [{"path": str(path), "name": "indoor"}]})
        first = ctx.cli("eval", exp, "--model", "none", "--out", ctx.work / "a")
        if first.rc != 0:
            return classify(first, "ok")
        old_labels = _labels_of(path)
        new = _bump_depths(path.read_bytes())
        st = path.stat()
        if how == "in place":
            with open(path, "r+b") as f:
                f.write(new)
        else:
            (ctx.work / "eval.jsonl.new").write_bytes(new)
            os.replace(ctx.work / "eval.jsonl.new", path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        if path.stat().st_size != st.st_size or path.stat().st_mtime_ns != st.st_mtime_ns:
            return Result(NOT_RUN, "could not keep the size and mtime")
        new_labels = _labels_of(path)
        p = ctx.cli("eval", exp, "--model", "none", "--out", ctx.work / "b")

        def check():
            with open(ctx.work / "b" / "predictions.csv", newline="") as f:
                rows = [((r["image"], float(r["x"]), float(r["y"])), float(r["gt"])) for r in csv.DictReader(f)]
            if not rows or any(k not in new_labels for k, _ in rows):
                return f"predictions.csv's items are not the jsonl's labels ({rows[:2]})"
            if all(new_labels[k] == old_labels[k] for k, _ in rows):
                return "the eval selection holds no changed label: the case tells nothing; change more labels"
            old = sum(abs(gt - old_labels[k]) < 1e-3 and old_labels[k] != new_labels[k] for k, gt in rows)
            wrong = sum(abs(gt - new_labels[k]) > 1e-3 for k, gt in rows)
            if wrong:
                return (f"the rewritten jsonl (same size and mtime) was scored with the old labels from the store: "
                        f"{old} of {len(rows)} items have their old label, {wrong} not the new one")
            return None
        return classify(p, "ok", check=check)
    return fn


# ---------------------------------------------------------------- kind 7: converters


def _generic_set(ctx: Ctx) -> Path:
    """Two 8x6 images with camera-z depth maps (.npy) and a manifest, list.csv."""
    import numpy as np
    from PIL import Image

    src = ctx.work / "src"
    src.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, z in (("a", 2.0), ("b", 3.0)):
        np.save(src / f"{name}.npy", np.full((6, 8), z, np.float32))
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(src / f"{name}.png")
    (src / "list.csv").write_text("image,depth\na.png,a.npy\nb.png,b.npy\n")
    return src


_GENERIC = ("--depth-kind", "z", "--intrinsics", 4, 5, 3.5, 2.5, "--margin", 1)


def convert_case(stage):
    """``data convert`` on a staged input: ``stage(ctx, src)`` -> (the adapter's arguments, the needles)."""
    def fn(ctx: Ctx) -> Result:
        args, needles = stage(ctx, _generic_set(ctx))
        return classify(ctx.cli("data", "convert", *args), "error", needles)
    return fn


def _corrupt_npz(ctx: Ctx, src: Path):
    (src / "b.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    (src / "list.csv").write_text("image,depth\na.png,a.npy\nb.png,b.npz\n")
    return ("generic", src / "list.csv", *_GENERIC, "--out", ctx.work / "o" / "f.jsonl"), [f"{src / 'list.csv'}:3",
                                                                                          "b.npz"]


def _intrinsics_folder(ctx: Ctx, src: Path):
    (src / "kdir").mkdir()
    (src / "k.csv").write_text("image,depth,intrinsics\na.png,a.npy,kdir\n")
    return (("generic", src / "k.csv", "--depth-kind", "z", "--margin", 1, "--out", ctx.work / "o" / "f.jsonl"),
            [f"{src / 'k.csv'}:2", "intrinsics", "kdir"])


def _out_parent_file(ctx: Ctx, src: Path):
    (ctx.work / "afile").write_text("x\n")
    return ("generic", src / "list.csv", *_GENERIC, "--out", ctx.work / "afile" / "f.jsonl"), [str(ctx.work / "afile")]


def _long_out_name(ctx: Ctx, src: Path):
    name = "n" * 300 + ".jsonl"
    return ("generic", src / "list.csv", *_GENERIC, "--out", ctx.work / name), [name]


def _long_image_name(ctx: Ctx, src: Path):
    name = "n" * 300
    (src / "named.csv").write_text(f"image,depth,name\na.png,a.npy,{name}\n")
    return (("generic", src / "named.csv", *_GENERIC, "--out", ctx.work / "o" / "f.jsonl"),
            [f"{src / 'named.csv'}:2", "field 'name'"])


def _eth3d_height_zero(ctx: Ctx, src: Path):
    import numpy as np
    from PIL import Image

    scene = ctx.work / "eth3d" / "courtyard"
    for sub in ("images/dslr_images", "ground_truth_depth/dslr_images", "dslr_calibration_jpg"):
        (scene / sub).mkdir(parents=True)
    cameras = scene / "dslr_calibration_jpg" / "cameras.txt"
    cameras.write_text("# Camera list\n1 PINHOLE 8 0 4 4 4 3\n")
    (scene / "dslr_calibration_jpg" / "images.txt").write_text(
        "# Image list\n1 1 0 0 0 0 0 0 1 dslr_images/DSC_0001.JPG\n\n")
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(scene / "images/dslr_images/DSC_0001.JPG")
    np.full((6, 8), 2.0, "<f4").tofile(scene / "ground_truth_depth/dslr_images/DSC_0001.JPG")
    return ("eth3d", ctx.work / "eth3d", "--out", ctx.work / "o" / "e.jsonl"), [f"{cameras}:2"]


def two_converts_at_once(ctx: Ctx) -> Result:
    """Two ``data convert`` into one --out at the same moment: both finish, or one is refused with one line; the
    output is whole (``data check`` passes) and the same command afterwards is not stuck."""
    src = _generic_set(ctx)
    out = ctx.work / "o" / "f.jsonl"
    args = ("data", "convert", "generic", src / "list.csv", *_GENERIC, "--out", out)
    procs = [ctx.popen(*args) for _ in range(2)]
    for p in procs:
        try:
            p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return Result(HANG, f"a convert did not exit within {TIMEOUT} s")
    errs = [(ctx.work / f"bg{i}.err").read_text(errors="replace") for i in range(2)]
    cmd = " ".join(map(str, args))
    ok = [p.returncode == 0 for p in procs]
    for p, err in zip(procs, errs):
        if p.returncode != 0:
            res = classify(Proc(list(args), p.returncode, "", err, 0.0), "error", [str(out)])
            if res.outcome != CLEAR:
                return res
    if not any(ok):
        return Result(SILENT, "both converts failed: nothing usable is left", _tail(errs[1], 8), cmd)
    check = ctx.cli("data", "check", out)
    if check.rc != 0:
        return Result(SILENT, f"data check of the output failed: {(_error_lines(check.err) or [check.err[-200:]])[-1]}",
                      _tail(check.err, 8), cmd)
    again = ctx.cli(*args[:-1], out, "--overwrite")
    if again.rc != 0:
        return Result(STUCK, f"the same convert afterwards (--overwrite) exit {again.rc}: "
                             f"{(_error_lines(again.err) or [again.err[-200:]])[-1]}", _tail(again.err, 8), cmd)
    return Result(ACCEPTED, "", "", cmd)


# ---------------------------------------------------------------- kind 8: point clouds


def pointcloud_case(stage):
    """``pointcloud EXP --model ./no-model ...`` on a staged input: one error naming the input, given before the
    model is even looked at (a later check would name the missing model instead)."""
    def fn(ctx: Ctx) -> Result:
        args, needles = stage(ctx)
        p = ctx.cli("pointcloud", ctx.exp(), "--model", ctx.work / "no-model", "--points", 12, *args)
        return classify(p, "error", needles)
    return fn


def _pc_not_an_image(ctx: Ctx):
    (ctx.work / "not.png").write_text("this is not an image\n" * 20)
    return (("--image", ctx.work / "not.png", "--intrinsics", 60, 60, 30, 20, "--out", ctx.work / "cloud"),
            ["--image", str(ctx.work / "not.png")])


def _pc_corrupt_depth(ctx: Ctx):
    good = ctx.data / json.loads(ctx.lines("eval")[0])["depth_map"]
    (ctx.work / "cut.npz").write_bytes(good.read_bytes()[:100])
    return (("--record", f"{ctx.data / 'indoor_eval.jsonl'}:1", "--depth-map", ctx.work / "cut.npz",
             "--out", ctx.work / "cloud"), [str(ctx.work / "cut.npz")])


def _pc_out_is_a_file(ctx: Ctx):
    (ctx.work / "afile").write_text("x\n")
    return ("--record", f"{ctx.data / 'indoor_eval.jsonl'}:1", "--out", ctx.work / "afile"), [
        "--out", str(ctx.work / "afile")]


def _pc_out_below_a_file(ctx: Ctx):
    (ctx.work / "afile").write_text("x\n")
    return ("--record", f"{ctx.data / 'indoor_eval.jsonl'}:1", "--out", ctx.work / "afile" / "cloud"), [
        "--out", str(ctx.work / "afile")]


def _pc_depth_map_outside(ctx: Ctx):
    path = ctx.write_jsonl("outside.jsonl", [_line({**ctx.template(), "depth_map": "../../../../../etc/hostname"})])
    return ("--record", f"{path}:1", "--out", ctx.work / "cloud"), [f"{path}:1", "field 'depth_map'", "outside"]


# ---------------------------------------------------------------- kind 9: model folders


def model_folder_case(damage: str, command: str = "eval"):
    """A copy of the tiny checkpoint with a fault, given as --model (or model.name for training): one error
    naming the folder and what it lacks, before anything loads."""
    def fn(ctx: Ctx) -> Result:
        folder = ctx.work / "model"
        needles = [str(folder)]
        if damage != "missing":
            shutil.copytree(tiny_model(), folder)
        if damage == "truncated model.safetensors":
            w = folder / "model.safetensors"
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
            needles.append("model.safetensors")
        elif damage == "no config.json":
            (folder / "config.json").unlink()
            needles.append("config.json")
        elif damage == "no processor files":
            for f in folder.glob("*processor_config.json"):
                f.unlink()
            needles.append("processor")
        if command == "eval":
            p = ctx.cli("eval", ctx.exp(), "--model", folder)
        elif command == "pointcloud":
            p = ctx.cli("pointcloud", ctx.exp(), "--model", folder, "--record", f"{ctx.data / 'indoor_eval.jsonl'}:1",
                        "--points", 12, "--out", ctx.work / "cloud")
        else:
            p = ctx.cli(ctx.exp(model={"name": str(folder)}))
        return classify(p, "error", needles)
    return fn


# ---------------------------------------------------------------- kind 10: config files (issue 31)


def _dangling_output_dir(ctx: Ctx) -> Result:
    link = ctx.work / "run-link"
    link.symlink_to(ctx.work / "gone")
    exp = ctx.exp(output_dir=str(link))
    return classify(ctx.cli(exp), "error", [str(link)])


def _alias_bomb() -> str:
    lines = ["reward_kwargs:", "  a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 9^9 leaves once expanded
        lines.append(f"  {chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- kind 11: reward plugins (issue 31)

PLUGIN_31 = '''
import json, os

def huge(completions, **kw):
    return [10 ** 400 for _ in completions]

def vandal(completions, **kw):
    with open(os.path.join(os.path.dirname(__file__), "seen_by_vandal.jsonl"), "a") as f:
        f.write(json.dumps(completions) + "\\n")
    for c in completions:  # edits what it was given, nested and flat
        if isinstance(c, list):
            for m in c:
                if isinstance(m, dict):
                    m["content"] = "<answer> 999 </answer>"
    completions[:] = ["<answer> 999 </answer>"] * len(completions)
    return [0.0 for _ in completions]

def witness(completions, **kw):
    with open(os.path.join(os.path.dirname(__file__), "seen_by_witness.jsonl"), "a") as f:
        f.write(json.dumps(completions) + "\\n")
    return [0.0 for _ in completions]
'''


def reward_huge_int(ctx: Ctx) -> Result:
    (ctx.work / "plug31.py").write_text(PLUGIN_31)
    ref = f"{ctx.work}/plug31.py:huge"
    exp = ctx.grpo([ref], train={"max_steps": 1})
    res = classify(ctx.cli(exp), "error", ["huge"])
    trained = sorted(q.name for q in ctx.run_dir.glob("checkpoint-*"))
    if res.outcome == CLEAR and trained:
        return Result(SILENT, f"{res.line} — but trained first: {trained}", "", res.command)
    return res


def reward_edits_completions(ctx: Ctx) -> Result:
    """A reward that edits ``completions`` in place, listed before another: the next reward sees the originals."""
    (ctx.work / "plug31.py").write_text(PLUGIN_31)
    exp = ctx.grpo([f"{ctx.work}/plug31.py:vandal", f"{ctx.work}/plug31.py:witness"], train={"max_steps": 1},
                   eval={"samples_per_dataset": 2})
    p = ctx.cli(exp)

    def check():
        seen = [(ctx.work / f"seen_by_{n}.jsonl") for n in ("vandal", "witness")]
        if not all(s.is_file() for s in seen):
            return "the rewards were not called"
        a, b = (s.read_text() for s in seen)
        if a != b:
            return "the second reward saw the completions the first one edited in place"
        return None
    return classify(p, "ok", check=check)


# ---------------------------------------------------------------- kind 12: data commands


def data_command_case(make):
    """``data ...`` with a value that cannot mean anything: ``make(ctx)`` -> (arguments, needles)."""
    def fn(ctx: Ctx) -> Result:
        args, needles = make(ctx)
        return classify(ctx.cli("data", *args), "error", needles)
    return fn


def _render_out_file(ctx: Ctx):
    (ctx.work / "afile").write_text("x\n")
    return ("render", ctx.exp(), "--split", "eval", "--out", ctx.work / "afile"), [str(ctx.work / "afile")]


def _check_folder(ctx: Ctx):
    return ("check", ctx.data), [str(ctx.data)]


# ---------------------------------------------------------------- kind 13: API baselines (a local stub server)


class _Stub:
    """An OpenAI-compatible server on 127.0.0.1 (stdlib http.server in a thread) answering every POST with
    ``mode``: 'ok' (an answer and its usage), 'usage strings', 'message string', 'html', 'empty choices',
    'content null' or 'stall' (never answers until closed). ``mode`` can be changed between runs."""

    ANSWER = "<answer> 2.0 </answer>"

    def __init__(self, mode: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode, self.hits, self.paths = mode, 0, []
        self.closed = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code: int, body: bytes, ctype: str = "application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.hits += 1
                stub.paths.append(self.path)
                mode = stub.mode
                if mode == "stall":
                    stub.closed.wait(120)
                    return
                if mode == "html":
                    return self.send(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
                message = {"role": "assistant", "content": stub.ANSWER}
                usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
                choices = [{"index": 0, "finish_reason": "stop", "message": message}]
                if mode == "usage strings":
                    usage = {"prompt_tokens": "many", "completion_tokens": None, "total_tokens": [1]}
                elif mode == "message string":
                    choices = [{"index": 0, "finish_reason": "stop", "message": stub.ANSWER}]
                elif mode == "empty choices":
                    choices = []
                elif mode == "content null":
                    message["content"] = None
                body = {"id": f"c{stub.hits}", "object": "chat.completion", "created": 0, "model": "m",
                        "choices": choices, "usage": usage}
                self.send(200, json.dumps(body).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _api_env(ctx: Ctx) -> str:
    key = "sk-battery-" + os.urandom(12).hex()
    ctx.env["OPENAI_API_KEY"] = key
    ctx.env.pop("OPENAI_BASE_URL", None)
    return key


def _api_eval(ctx: Ctx, base: str, out: str, *extra) -> Proc:
    return ctx.cli("eval", ctx.exp(prompt={"template": "generalist"}), "--model", "openai:fake-vlm", "--api-base",
                   base, "--api-cache", ctx.work / "api-cache", "--out", ctx.work / out, *extra)


def _api_stats(ctx: Ctx, out: str) -> tuple[dict | None, str | None]:
    m, why = strict_metrics(ctx.work / out / "metrics.json")
    if why:
        return None, why
    if not isinstance(m.get("api"), dict):
        return None, f"{out}/metrics.json has no 'api' section"
    return m["api"], None


def api_bad_answer(mode: str, then_healthy: bool = False):
    """A 200 without a usable answer: every request is a counted failure and nothing is cached (then_healthy: a
    later run against a healthy server asks again instead of reading empty answers from the cache)."""
    def fn(ctx: Ctx) -> Result:
        _api_env(ctx)
        stub = _Stub(mode)
        try:
            p = _api_eval(ctx, stub.url, "bad", "--api-retries", 0)
            if p.rc != 0:
                return classify(p, "ok")
            stats, why = _api_stats(ctx, "bad")
            cmd = " ".join(map(str, p.args))
            if why:
                return Result(SILENT, why, _tail(p.err, 8), cmd)
            if not stats["requests"] or stats["failures"] != stats["requests"]:
                return Result(SILENT, f"{mode}: {stats['failures']} of {stats['requests']} requests counted as failed",
                              _tail(p.err, 8), cmd)
            cached = [q for q in (ctx.work / "api-cache").rglob("*") if q.is_file()]
            if cached:
                return Result(SILENT, f"{mode}: {len(cached)} answer(s) cached", _tail(p.err, 8), cmd)
            if not then_healthy:
                return Result(ACCEPTED, "", "", cmd)
            stub.mode = "ok"
            q = _api_eval(ctx, stub.url, "good")
            if q.rc != 0:
                return classify(q, "ok")
            good, why = _api_stats(ctx, "good")
            if why or good["cache_hits"] or good["failures"] or good["requests"] != stats["requests"]:
                return Result(SILENT, why or f"the healthy re-run: {good['requests']} requests, {good['cache_hits']} "
                                             f"cache hits, {good['failures']} failures", _tail(q.err, 8), cmd)
            return Result(ACCEPTED, "", "", cmd)
        finally:
            stub.close()
    return fn


def api_usage_not_numbers(ctx: Ctx) -> Result:
    """An answer whose usage counts are not numbers: exit 0 with whole-number token counts in metrics.json (the
    answer kept, or counted as failed)."""
    _api_env(ctx)
    stub = _Stub("usage strings")
    try:
        p = _api_eval(ctx, stub.url, "o", "--api-retries", 0)
    finally:
        stub.close()

    def check():
        stats, why = _api_stats(ctx, "o")
        if why:
            return why
        bad = {k: stats.get(k) for k in ("requests", "failures", "prompt_tokens", "completion_tokens")
               if not isinstance(stats.get(k), int) or isinstance(stats.get(k), bool)}
        if bad or not stats["requests"]:
            return f"metrics.json api counts {bad or stats}"
        return None
    return classify(p, "ok", check=check)


def api_stalled(ctx: Ctx) -> Result:
    """A server that accepts the connection and never answers, --api-timeout 1 --api-retries 1: the eval ends
    well within a minute with every request counted as failed."""
    _api_env(ctx)
    stub = _Stub("stall")
    t = time.perf_counter()
    try:
        p = ctx.cli("eval", ctx.exp(prompt={"template": "generalist"}), "--model", "openai:fake-vlm", "--api-base",
                    stub.url, "--api-cache", ctx.work / "api-cache", "--out", ctx.work / "o", "--api-timeout", 1,
                    "--api-retries", 1, timeout=120)
    finally:
        stub.close()
    seconds = time.perf_counter() - t

    def check():
        stats, why = _api_stats(ctx, "o")
        if why:
            return why
        if seconds > 60:
            return f"the eval took {seconds:.0f} s with --api-timeout 1 --api-retries 1"
        if not stats["requests"] or stats["failures"] != stats["requests"]:
            return f"{stats['failures']} of {stats['requests']} stalled requests counted as failed"
        return None
    return classify(p, "ok", check=check)


def api_key_in_url(ctx: Ctx) -> Result:
    """A key in the API base's query string (and one in OPENAI_API_KEY): in no file the eval writes (metrics.json,
    predictions, the response cache) and in none of its output."""
    key = _api_env(ctx)
    secret = "qs-secret-" + os.urandom(8).hex()
    stub = _Stub("ok")
    try:
        p = _api_eval(ctx, f"{stub.url}?api_key={secret}", "o")
    finally:
        stub.close()

    def check():
        stats, why = _api_stats(ctx, "o")
        if why:
            return why
        if not stats["requests"]:
            return "no request reached the server"
        for s, what in ((secret, "the query-string key"), (key, "OPENAI_API_KEY")):
            files = [str(q.relative_to(ctx.work)) for q in ctx.work.rglob("*") if q.is_file() and
                     s.encode() in q.read_bytes()]
            if files:
                return f"{what} is written into {files[:4]}"
            if s in p.err or s in p.out:
                return f"{what} is in the command's output"
        return None
    return classify(p, "ok", check=check)


# ---------------------------------------------------------------- kind 14: sweeps


def sweep_case(body: dict, needles):
    """A sweep file (two arms by default, one seed, a 1-step mini scale) run with ``run SWEEP --sweeps-dir``:
    refused at load with one line, and nothing written outside --sweeps-dir."""
    def fn(ctx: Ctx) -> Result:
        exp = ctx.exp(train={"max_steps": 1})
        sweep = {"figure": "f", "experiment": str(exp), "seeds": [0],
                 "scales": {"mini": {"train.max_steps": 1}},
                 "arms": {"a": {}, "b": {"camera.f_uni": 50}}, **body}
        path = ctx.work / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep, sort_keys=False))
        sweeps = ctx.work / "deep" / "er" / "sweeps"
        sweeps.mkdir(parents=True)
        p = ctx.cli("run", path, "--sweeps-dir", sweeps)
        res = classify(p, "error", [str(path), *needles])
        outside = [q for q in ctx.work.rglob("outside*") if sweeps not in q.parents]
        if outside:
            return Result(SILENT, f"wrote outside --sweeps-dir: {outside[:3]}", res.output, res.command)
        return res
    return fn


# ---------------------------------------------------------------- kind 15: eval (issue 31)


def eval_out_into_other_run(ctx: Ctx) -> Result:
    """``eval OTHER.yaml --out RUN`` where RUN is another experiment's finished run: refused, and the run's
    metrics.json (its model scores and training counts) left as it was."""
    _, bad = _finished_run(ctx)
    if bad:
        return bad
    before = (ctx.run_dir / "metrics.json").read_bytes()
    other = ctx.exp("other.yaml", output_dir=str(ctx.work / "other-run"))
    p = ctx.cli("eval", other, "--model", "none", "--out", ctx.run_dir)
    res = classify(p, "error", [str(ctx.run_dir)])
    after = (ctx.run_dir / "metrics.json").read_bytes() if (ctx.run_dir / "metrics.json").exists() else b""
    if after != before:
        return Result(LOST, "the finished run's metrics.json was replaced: " + res.line, res.output, res.command)
    return res


def eval_only_change(ctx: Ctx) -> Result:
    """A finished run; an eval that fails on a bad eval setting (eval.max_new_tokens=0); the fixed command, with
    another eval-only change (samples_per_dataset 3): it evaluates again, and trains nothing."""
    exp, bad = _finished_run(ctx)
    if bad:
        return bad
    weights = ctx.run_dir / "final" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    first = ctx.cli(exp, "eval.max_new_tokens=0")
    if first.rc == 0:
        return Result(SILENT, "eval.max_new_tokens=0 was accepted", _tail(first.err, 8), " ".join(map(str, first.args)))
    if "Traceback (most recent call last)" in first.err:
        return classify(first, "error")
    p = ctx.cli(exp, "eval.samples_per_dataset=3")
    cmd = " ".join(map(str, p.args))
    if p.rc != 0:
        line = traceback_summary(p.err) if "Traceback (most recent" in p.err else \
            (_error_lines(p.err) or [f"exit {p.rc}"])[-1]
        return Result(STUCK, f"re-run exit {p.rc}: {line}", _tail(p.err), cmd)
    m, why = ctx.metrics()
    if why:
        return Result(SILENT, why, _tail(p.err, 8), cmd)
    if m.get("eval_samples") != 3:
        return Result(SILENT, f"metrics.json eval_samples {m.get('eval_samples')}, expected 3: the eval-only change "
                              "was not evaluated", _tail(p.err, 8), cmd)
    if weights.stat().st_mtime_ns != stamp or m.get("train_samples") != 8:
        return Result(SILENT, f"the eval-only change trained again (train_samples {m.get('train_samples')})",
                      _tail(p.err, 8), cmd)
    return Result(RECOVERED, "", "", cmd)


def released_preset_eval_only(ctx: Ctx) -> Result:
    """The released-model preset with only data.eval set, no training files anywhere: the constant baseline,
    and the median one said to be unavailable."""
    preset = ROOT / "experiments" / "eval_depthlm_official.yaml"
    evalf = ctx.write_jsonl("x.jsonl", ctx.lines("eval"))
    p = ctx.cli("eval", preset, "--model", "none", f"data.eval=[{{path: {evalf}, name: x}}]",
                f"output_dir={ctx.work / 'run'}")

    def check():
        m, why = ctx.metrics("eval-baselines")
        if why:
            return why
        methods = sorted(m.get("metrics", {}))
        if not any(k.startswith("constant") for k in methods):
            return f"metrics.json metrics has {methods}, no constant baseline"
        if "median" not in p.err:
            return "the log does not say that the median baseline is unavailable"
        return None
    return classify(p, "ok", check=check)


# ---------------------------------------------------------------- the battery


def cases() -> list[Case]:
    out = []
    for name, make, field in ROWS:
        out.append(Case("data rows", name, row_case(make, field, skip=False)))
        out.append(Case("data rows", f"{name} [skip_invalid]", row_case(make, field, skip=True)))
    for name, transform, repaired in OK_ROWS:
        out.append(Case("data rows", name, ok_rows_case(transform, repaired)))
    out += [
        Case("data rows", "every line bad", all_bad_case(False)),
        Case("data rows", "every line bad [skip_invalid]", all_bad_case(True)),
        Case("data rows", "empty jsonl file", empty_file_case),
        Case("data rows", "bad train line (eval --model none)", row_case(_first_depth(-1.0), "depth", False, "train")),
        Case("data rows", "bad train line (eval --model none) [skip_invalid]",
             row_case(_first_depth(-1.0), "depth", True, "train")),
        Case("data rows", "bad train line (training) [skip_invalid]",
             row_case(_first_depth(-1.0), "depth", True, "train", command="run"), heavy=True),
        Case("data rows", "invalid UTF-8 (data preview --data)",
             preview_row_case(lambda r: json.dumps(r).encode().replace(b'"rgb/', b'"rgb\xff/', 1), "<utf-8>")),
        Case("data rows", "depth NaN (data preview --data)", preview_row_case(_first_depth(float("nan")), "depth")),
    ]
    for name, stage, reason, field in IMAGES:
        out.append(Case("images", f"{name} (data render)", image_case(stage, reason, field, "render")))
        out.append(Case("images", f"{name} (training)", image_case(stage, reason, field, "train"), heavy=True))
        out.append(Case("images", f"{name} (training) [skip_invalid]", image_case(stage, reason, field, "train-skip"),
                        heavy=True))
    for name, fn in CONFIGS:
        out.append(Case("config", name, fn))
    for name, fn in REWARDS:
        out.append(Case("rewards", name, fn, heavy=True))
    out.append(Case("rewards", "reward_kwargs for a reward not listed", reward_kwargs_not_listed))
    out += [
        Case("run folder", "kill -9 during training, re-run", kill_during_training(signal.SIGKILL), heavy=True),
        Case("run folder", "SIGTERM during training, re-run", kill_during_training(signal.SIGTERM), heavy=True),
        Case("run folder", "SIGINT (Ctrl-C) during training, re-run", kill_during_training(signal.SIGINT), heavy=True),
        Case("run folder", "kill -9 at start (lock taken), re-run", kill_at_start, heavy=True),
        Case("run folder", "kill -9 during evaluation, re-run", kill_during_eval, heavy=True),
        Case("run folder", "checkpoint write killed: no trainer_state.json", checkpoint_fault("no trainer_state.json"),
             heavy=True),
        Case("run folder", "checkpoint write killed: half-written trainer_state.json",
             checkpoint_fault("half-written trainer_state.json"), heavy=True),
        Case("run folder", "checkpoint write killed: no weights", checkpoint_fault("no weights"), heavy=True),
        Case("run folder", "final/ write killed (last checkpoint = max_steps, final.tmp left)",
             checkpoint_fault("final.tmp left over"), heavy=True),
        Case("run folder", "killed after final/, before train_info.json", lost_between_final_and_info, heavy=True),
        Case("run folder", "killed while writing config.yaml (half of it, stale lock)", truncated_config_yaml,
             heavy=True),
        Case("run folder", "stale lock (dead pid)", stale_lock, heavy=True),
        Case("run folder", "empty lock file (killed while taking the lock)", empty_lock, heavy=True),
        Case("run folder", "lock of another host", other_host_lock),
        Case("run folder", "second run into a busy folder (live pid), then again", busy_folder, heavy=True),
        Case("run folder", "second real run while the first trains", second_run_live, heavy=True),
        Case("run folder", "changed config into a finished run dir", changed_config, heavy=True),
        Case("run folder", "changed config into an unfinished run dir", changed_config_unfinished, heavy=True),
        Case("run folder", "missing image mid-run, then fixed, re-run", image_fixed_after_error, heavy=True),
        Case("run folder", "a value failing at training start, then fixed, re-run", late_config_error_fixed,
             heavy=True),
        Case("run folder", "disk full (20 MB tmpfs), then space, re-run", disk_full, heavy=True),
    ]
    out += [
        Case("outputs", "two eval datasets with one name (same file stem)", same_name_case("eval", False)),
        Case("outputs", "two eval datasets with one name (explicit)", same_name_case("eval", True)),
        Case("outputs", "two train datasets with one name", same_name_case("train", False)),
        Case("outputs", "an eval dataset named 'avg'", dataset_named_avg),
        Case("outputs", "eval --out into the training run dir, then train", eval_out_is_run_dir, heavy=True),
        Case("outputs", "metrics.json strict JSON, all sections (normal run)", strict_json_normal, heavy=True),
        Case("outputs", "a diverging run (lr 1e30): NaN weights", diverging_run, heavy=True),
        Case("outputs", "every eval image bad, eval with a model [skip_invalid]", all_eval_images_bad, heavy=True),
        Case("outputs", "eval before training (no final/)", eval_missing_final),
    ]
    out += issue31_cases()
    return out


def issue31_cases() -> list[Case]:
    """The outside audit of issue 31: the store cache, converters, point clouds, model folders, config files,
    rewards, data commands, API baselines, sweeps and eval, one case per kind it found."""
    return [
        Case("store cache", "RLKIT_RECORDS_CACHE is a file", cache_not_writable("a file")),
        Case("store cache", "RLKIT_RECORDS_CACHE read-only", cache_not_writable("read-only")),
        Case("store cache", "RLKIT_RECORDS_CACHE full (64 KiB tmpfs)", cache_not_writable("full")),
        Case("store cache", "cached manifest.json cut short, re-run", cache_entry_damaged("manifest.json")),
        Case("store cache", "cached column truncated, re-run", cache_entry_damaged("column")),
        Case("store cache", "jsonl rewritten in place, same size and mtime (cp -p)",
             jsonl_same_size_and_mtime("in place")),
        Case("store cache", "jsonl replaced by rename, same size and mtime (rsync -t)",
             jsonl_same_size_and_mtime("rename")),
        Case("converters", "corrupt .npz depth file", convert_case(_corrupt_npz)),
        Case("converters", "intrinsics path is a folder", convert_case(_intrinsics_folder)),
        Case("converters", "--out whose parent is a file", convert_case(_out_parent_file)),
        Case("converters", "--out named with 300 characters", convert_case(_long_out_name)),
        Case("converters", "an image name of 300 characters", convert_case(_long_image_name)),
        Case("converters", "ETH3D camera of height 0 in cameras.txt", convert_case(_eth3d_height_zero)),
        Case("converters", "two converts into one --out at once", two_converts_at_once),
        Case("point clouds", "--image is not an image", pointcloud_case(_pc_not_an_image)),
        Case("point clouds", "--depth-map a corrupt .npz", pointcloud_case(_pc_corrupt_depth)),
        Case("point clouds", "--out is a file", pointcloud_case(_pc_out_is_a_file)),
        Case("point clouds", "--out below a file", pointcloud_case(_pc_out_below_a_file)),
        Case("point clouds", "a record's depth_map outside the dataset root", pointcloud_case(_pc_depth_map_outside)),
        Case("model folders", "truncated model.safetensors (eval --model)",
             model_folder_case("truncated model.safetensors")),
        Case("model folders", "no config.json (eval --model)", model_folder_case("no config.json")),
        Case("model folders", "no processor files (eval --model)", model_folder_case("no processor files")),
        Case("model folders", "folder does not exist (eval --model)", model_folder_case("missing")),
        Case("model folders", "no config.json (model.name, training)", model_folder_case("no config.json", "run")),
        Case("model folders", "truncated model.safetensors (pointcloud --model)",
             model_folder_case("truncated model.safetensors", "pointcloud")),
        Case("config", "output_dir is a dangling symlink", _dangling_output_dir),
        Case("config", "extends: a list", config_case(raw="extends: [a.yaml, b.yaml]\n", needles=["{exp}", "extends"])),
        Case("config", "YAML alias bomb (9^9 values)", config_case(raw=_alias_bomb(),
                                                                   needles=["{exp}", "expands to more than"])),
        Case("config", "eval.constant=-2 (eval --model none)", config_case(["eval.constant=-2"], command="eval",
                                                                           needles=["{exp}", "eval.constant"])),
        Case("rewards", "returns an int too large for a float", reward_huge_int, heavy=True),
        Case("rewards", "edits completions in place (the next reward's view)", reward_edits_completions, heavy=True),
        Case("data commands", "data preview --n 0", data_command_case(
            lambda ctx: (("preview", "--data", ctx.data / "indoor_eval.jsonl", "--n", 0, "--out", ctx.work / "p.png"),
                         ["--n"]))),
        Case("data commands", "data render --n -5", data_command_case(
            lambda ctx: (("render", ctx.exp(), "--split", "eval", "--n", -5, "--out", ctx.work / "r"), ["--n"]))),
        Case("data commands", "data render --out a file", data_command_case(_render_out_file)),
        Case("data commands", "data synth --width 0,0", data_command_case(
            lambda ctx: (("synth", "--out", ctx.work / "s", "--width", "0,0"), ["width"]))),
        Case("data commands", "data synth --hfov 180,180", data_command_case(
            lambda ctx: (("synth", "--out", ctx.work / "s", "--hfov", "180,180"), ["hfov"]))),
        Case("data commands", "data check on a folder", data_command_case(_check_folder)),
        Case("API", "usage counts that are not numbers", api_usage_not_numbers),
        Case("API", "message is a string", api_bad_answer("message string")),
        Case("API", "200 with an HTML page", api_bad_answer("html")),
        Case("API", "empty choices, then a healthy server (same cache)", api_bad_answer("empty choices", True)),
        Case("API", "content null", api_bad_answer("content null")),
        Case("API", "a stalled server, --api-timeout 1 --api-retries 1", api_stalled),
        Case("API", "API key in the URL's query string", api_key_in_url),
        Case("sweeps", "arm named ../../../outside", sweep_case({"arms": {"../../../outside": {}}},
                                                                ["../../../outside"])),
        Case("sweeps", "seeds: [0, 0]", sweep_case({"seeds": [0, 0]}, ["seeds"])),
        Case("eval", "eval --out into another experiment's finished run", eval_out_into_other_run, heavy=True),
        Case("eval", "eval-only change after a finished run (after a failed eval setting)", eval_only_change,
             heavy=True),
        Case("eval", "released-model preset with only data.eval, no training files", released_preset_eval_only),
    ]


def make_data(out: Path) -> Path:
    """The shared dataset: 6 train and 4 eval procedural indoor scenes, 64-96 px wide, 6 labels each."""
    from rlkit.synth import CameraRange, generate_split

    if not (out / "indoor_eval.jsonl").exists():
        for split, n in (("train", 6), ("eval", 4)):
            generate_split(out, "indoor", split, n, points_per_image=6, progress=False,
                           camera=CameraRange(width=(64, 96)), workers=1)
    return out


def run_case(case: Case, index: int, work: Path, data: Path, cache: Path) -> tuple[Case, Result, float]:
    ctx = Ctx(work / f"{index:03d}", data, cache)
    t = time.perf_counter()
    try:
        res = case.fn(ctx)
    except Exception as e:  # noqa: BLE001 - a bug in the battery itself is reported, not hidden
        import traceback

        res = Result(NOT_RUN, f"the battery failed to stage this case: {type(e).__name__}: {e}",
                     traceback.format_exc()[-2000:])
    finally:
        ctx.cleanup()
    return case, res, time.perf_counter() - t
