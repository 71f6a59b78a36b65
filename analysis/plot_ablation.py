"""Draw the DepthLM paper's ablation figures from sweep results.

    python analysis/plot_ablation.py                 # every figure with results; lists the missing ones
    python analysis/plot_ablation.py --figure camera_ambiguity --runs runs/sweeps --out analysis/figures

Reads every results.csv (and curves.csv: learning curves) under --runs (written by
``./run.sh experiments/ablations/NAME.yaml``) and writes, per figure, NAME.png, NAME.pdf and NAME.md: the
numbers behind it (mean ± std over seeds, n = seeds), then paired comparisons over the same seeds (the best
arm against every other arm, the median-label baseline of its own runs and a base stage; mean difference ±
standard error), and the best arm against every other arm pixel by pixel over the pixels both scored (pixels.csv:
δ1 per pixel). The no-model baselines (the constant answer, the median training label) and, for sweeps that
start from a base stage, that stage's own accuracy are drawn as dashed reference lines.

Each figure drawn from runs also writes the rows it was drawn from, NAME.csv (and NAME_curves.csv,
NAME_pixels.csv.gz), to be committed beside it: a figure whose runs are absent is drawn again from those files
(the rows of --scale), so every number in its md can be re-derived from the repository.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rlkit.evaluate import MEDIAN, MODEL, is_constant  # noqa: E402
from rlkit.metrics import LOWER_IS_BETTER, delta_hits  # noqa: E402
from rlkit.sweep import BASE_STAGE, EVAL_SELECTION, SWEEP_TIME  # noqa: E402

METRIC_LABEL = {"delta1": "δ1 (share within 1.25× of truth)", "abs_rel": "AbsRel", "rmse": "RMSE (m)"}


@dataclass(frozen=True)
class Figure:
    title: str
    kind: str  # "bar": arms side by side; "line": series over x
    xlabel: str = ""
    by_dataset: bool = False  # one bar group per eval dataset (else their average)
    logx: bool = False
    time_panel: bool = False  # also plot seconds per training sample


FIGURES = {
    "pixel_reference": Figure("Fig. 2 — pixel reference: text coordinates vs markers", "bar", by_dataset=True),
    "pixel_reference_tuning": Figure("Fig. 2, tuning — marker settings scored on validation scenes", "bar"),
    "grpo_reward": Figure("Fig. 3a — GRPO reward functions (fixed sample budget)", "bar"),
    "sft_vs_grpo": Figure("Fig. 3b — SFT vs GRPO learning curves from the same start", "curve", "training samples",
                          time_panel=True),
    "camera_ambiguity": Figure("Fig. 4a — camera ambiguity strategies (mixed cameras)", "bar"),
    "focal_length": Figure("Fig. 4b — unified focal length f_uni", "line", "f_uni (pixels)"),
    "training_samples": Figure("Fig. 4c — training samples (1 label per image)", "line", "training samples",
                               logx=True),
    "label_density": Figure("Fig. 5 — label density at a fixed sample budget", "line", "labeled points per image",
                            logx=True),
}


def load_tables(runs: Path, scale: str | None, file: str = "results.csv") -> pd.DataFrame:
    """Every sweep's FILE under --runs (results.csv, curves.csv or pixels.csv) in one frame, the rows of ``scale``."""
    frames = [f for f in (pd.read_csv(p) for p in sorted(runs.glob(f"*/*/{file}"))) if len(f)]
    if not frames:
        return pd.DataFrame(columns=["figure"])
    df = pd.concat(frames, ignore_index=True)
    return df[df["scale"] == scale] if scale else df


def _agg(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = df.groupby(keys, sort=False)["value"]
    return g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n="count").reset_index()


def summarize(df: pd.DataFrame, fig: Figure, metric: str) -> pd.DataFrame:
    """Mean ± std over seeds of the model's metric per arm (and dataset, or their per-seed average)."""
    d = df[(df["method"] == MODEL) & (df["metric"] == metric)]
    if fig.by_dataset:
        d = d[d["dataset"] != "avg"]
        return _agg(d, ["arm", "series", "x", "dataset"] if fig.kind == "line" else ["arm", "dataset"])
    d = d[d["dataset"] == "avg"]
    return _agg(d, ["arm", "series", "x"] if fig.kind == "line" else ["arm"])


# the reference lines: which results.csv methods each one averages, and its colour
BASELINES = {"constant": (is_constant, "gray"), "median": (lambda m: m == MEDIAN, "tab:red"),
             "base stage": (lambda m: m == BASE_STAGE, "tab:green")}


def baseline(df: pd.DataFrame, metric: str, kind: str = "constant") -> tuple[str, float] | None:
    """A no-model baseline's method name (e.g. ``constant 3 m``) and its metric, averaged over eval
    datasets and runs; None if the results hold no such baseline."""
    d = df[df["method"].map(BASELINES[kind][0]) & (df["metric"] == metric) & (df["dataset"] == "avg")]
    return (" / ".join(dict.fromkeys(d["method"])), float(d["value"].mean())) if len(d) else None


def markdown(table: pd.DataFrame, metric: str, bases: dict[str, tuple[str, float] | None]) -> str:
    keys = [c for c in table.columns if c not in ("mean", "std", "n")]
    text = table.rename(columns={"mean": f"{metric} mean", "n": "seeds"}).to_markdown(
        index=False, floatfmt=["g"] * len(keys) + [".3f", ".3f", "d"])
    for base in filter(None, bases.values()):
        name, value = base
        text += f"\n\n{name.capitalize()} baseline ({metric}, average over eval datasets): {value:.3f}"
    return text


def _per_seed(df: pd.DataFrame, metric: str, method: str) -> pd.DataFrame:
    """One row per seed, one column per arm: the metric averaged over eval datasets."""
    d = df[(df["method"] == method) & (df["metric"] == metric) & (df["dataset"] == "avg")]
    return d.pivot_table(index="seed", columns="arm", values="value", aggfunc="mean", sort=False)


def _diff_row(label: str, diffs: pd.Series) -> dict:
    diffs = diffs.dropna()
    n = len(diffs)
    se = float(np.std(diffs, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"comparison": label, "mean difference": float(diffs.mean()) if n else float("nan"),
            "standard error": se, "seeds": n, "seeds the best arm is ahead": f"{int((diffs > 0).sum())}/{n}"}


def paired(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best arm (by mean over seeds) minus each other arm, seed by seed, minus the median-label
    baseline of its own runs, and minus the shared base stage if any; positive = the best arm is better
    (for AbsRel-like metrics, lower)."""
    model = _per_seed(df, metric, MODEL)
    if model.empty:
        return pd.DataFrame()
    sign = -1.0 if metric in LOWER_IS_BETTER | {"seconds_per_sample"} else 1.0
    best = best_arm(df, metric)
    rows = [_diff_row(f"{best} − {arm}", sign * (model[best] - model[arm])) for arm in model if arm != best]
    median = _per_seed(df[df["arm"] == best], metric, MEDIAN)
    if not median.empty:
        rows.append(_diff_row(f"{best} − median label", sign * (model[best] - median[best])))
    base = df[(df["method"] == BASE_STAGE) & (df["metric"] == metric) & (df["dataset"] == "avg")]["value"]
    if len(base):  # one shared base stage: where every arm started
        rows.append(_diff_row(f"{best} − base stage", sign * (model[best] - float(base.mean()))))
    return pd.DataFrame(rows)


def best_arm(df: pd.DataFrame, metric: str) -> str | None:
    """The arm with the best mean over seeds of the metric averaged over eval datasets."""
    model = _per_seed(df, metric, MODEL)
    if model.empty:
        return None
    sign = -1.0 if metric in LOWER_IS_BETTER | {"seconds_per_sample"} else 1.0
    return (sign * model.mean()).idxmax()


PIXEL_KEY = ["task", "dataset", "image", "x", "y"]
PIXELS_SUFFIX = "_pixels.csv.gz"  # a row per run and eval pixel: about 1 MB per figure as plain text
PIXELS_GZIP = {"method": "gzip", "mtime": 0}  # no timestamp: the same rows give the same bytes


def _clustered_se(diffs: pd.Series, clusters: pd.Series) -> float:
    """The standard error of the mean of ``diffs`` when values of one cluster (one image) may move together: the
    cluster-robust (sandwich) estimate; with one value per cluster it is the usual std / sqrt(n)."""
    sums = (diffs - diffs.mean()).groupby(clusters.to_numpy()).sum()
    g, n = len(sums), len(diffs)
    return float(np.sqrt(g / (g - 1) * (sums ** 2).sum()) / n) if g > 1 else float("nan")


def pixel_paired(pixels: pd.DataFrame, best: str) -> pd.DataFrame:
    """The best arm minus each other arm pixel by pixel, over the pixels both scored and the seeds both ran: per
    pixel the share of seeds whose answer is within 1.25x of the truth (δ1), the difference between the arms, then
    its mean and standard error over pixels (clustered by image: the pixels of one image are not independent),
    per eval dataset and averaged over the datasets both arms scored (as the per-seed tables)."""
    hits = pixels.assign(hit=delta_hits(pixels["pred"], pixels["gt"]).astype(float))
    # a question asked twice of one pixel in a run (other tasks' second points, repeated records) pairs in order
    hits["repeat"] = hits.groupby(["arm", "seed", *PIXEL_KEY], sort=False).cumcount()
    key = [*PIXEL_KEY, "repeat"]
    rows = []
    for arm in dict.fromkeys(hits["arm"]):
        if arm == best:
            continue
        seeds = set(hits.loc[hits["arm"] == best, "seed"]) & set(hits.loc[hits["arm"] == arm, "seed"])
        pair = hits[hits["arm"].isin([best, arm]) & hits["seed"].isin(seeds)]
        rate = pair.pivot_table(index=key, columns="arm", values="hit", aggfunc="mean")
        if arm not in rate or best not in rate:
            continue
        d = (rate[best] - rate[arm]).dropna().rename("diff").reset_index()
        if not len(d):
            continue
        diff = d["diff"]
        per = [(t["diff"].mean(), _clustered_se(t["diff"], t["image"])) for _, t in d.groupby("dataset", sort=False)]
        means, ses = np.array(per).T
        rows.append({"comparison": f"{best} − {arm}", "mean difference": float(means.mean()),
                     "standard error": float(np.sqrt((ses ** 2).sum()) / len(ses)), "pixels": len(d),
                     "only one arm scored": int(len(rate) - len(d)), "seeds": len(seeds),
                     "pixels ahead / behind": f"{int((diff > 0).sum())} / {int((diff < 0).sum())}"})
    return pd.DataFrame(rows)


def pixel_text(pixels: pd.DataFrame, df: pd.DataFrame, metric: str) -> str:
    """The md paragraph of the per-pixel paired comparisons (δ1 only: a per-pixel hit)."""
    best = best_arm(df, metric)
    if metric != "delta1" or pixels is None or not len(pixels) or best is None:
        return ""
    table = pixel_paired(pixels, best)
    if not len(table):
        return ""
    return ("Paired over pixels (the pixels both arms scored; per pixel the share of seeds within 1.25x of the truth, "
            "best arm minus the other, mean ± standard error over pixels clustered by image, averaged over eval "
            "datasets; this error is the eval sample's, the per-seed one above also holds the training's; rows: "
            f"`{df['figure'].iloc[0]}{PIXELS_SUFFIX}`):\n\n" + table.to_markdown(index=False, floatfmt=".3f"))


def _se(v: pd.Series) -> float:
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _paired_text(label: str, diffs: pd.Series) -> dict:
    return {"comparison": label, "mean": float(diffs.mean()), "standard error": _se(diffs), "seeds": len(diffs),
            "seeds > 0": f"{int((diffs > 0).sum())}/{len(diffs)}"}


def curve_tables(curves: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per series and sample count, the metric (average over eval datasets and per dataset) over seeds; and the
    paired comparisons: each series' gain over the shared start (its step-0 point), the sample-matched
    difference between the first two series at every budget both reached, and their cost per sample."""
    d = curves[curves["metric"] == metric]
    wide = d.pivot_table(index=["series", "seed", "samples", "train_seconds"], columns="dataset", values="value",
                         sort=False).reset_index()
    datasets = [c for c in wide.columns if c not in ("series", "seed", "samples", "train_seconds")]
    g = wide.groupby(["series", "samples"], sort=False)
    table = g.agg(seconds=("train_seconds", "mean"), seeds=("seed", "count"),
                  **{f"{ds} mean": (ds, "mean") for ds in datasets}).reset_index()
    table[f"{'avg'} SE"] = g["avg"].agg(_se).to_numpy()
    rows = []
    series = list(dict.fromkeys(wide["series"]))
    per = {s: wide[wide["series"] == s].pivot_table(index="seed", columns="samples", values="avg") for s in series}
    for s in series:
        start, last = per[s].columns.min(), per[s].columns.max()
        rows.append(_paired_text(f"{s}: {last:g} samples − start", per[s][last] - per[s][start]))
        for ds in datasets:
            if ds != "avg":
                p = wide[wide["series"] == s].pivot_table(index="seed", columns="samples", values=ds)
                rows.append(_paired_text(f"{s}, {ds}: {last:g} samples − start", p[last] - p[start]))
    if len(series) >= 2:
        a, b = ("GRPO", "SFT") if {"GRPO", "SFT"} <= set(series) else (series[1], series[0])
        for n in sorted(set(per[a].columns) & set(per[b].columns) - {0}):
            rows.append(_paired_text(f"{a} − {b} at {n:g} samples", (per[a][n] - per[b][n]).dropna()))
        cost = {s: wide[wide["series"] == s].groupby("seed").apply(
            lambda t: t["train_seconds"].max() / t["samples"].max(), include_groups=False) for s in (a, b)}
        ratio = (cost[a] / cost[b]).dropna()
        rows.append({"comparison": f"{a} ÷ {b}: training seconds per sample", "mean": float(ratio.mean()),
                     "standard error": _se(ratio), "seeds": len(ratio), "seeds > 0": f"{int((ratio > 1).sum())}/{len(ratio)} > 1"})
    return table, pd.DataFrame(rows)


def draw_curves(name: str, curves: pd.DataFrame, df: pd.DataFrame, out: Path, metric: str = "delta1",
                pixels: pd.DataFrame | None = None) -> list[Path]:
    """Learning curves: the metric against training samples and against training seconds, a line per series
    (mean over seeds, band ± one standard error), the no-model baselines dashed."""
    fig_spec = FIGURES[name]
    table, pairs = curve_tables(curves, metric)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), squeeze=False)
    for series, t in table.groupby("series", sort=False):
        se = t["avg SE"].fillna(0)
        for ax, x in ((axes[0, 0], t["samples"]), (axes[0, 1], t["seconds"])):
            line, = ax.plot(x, t["avg mean"], marker="o", ms=3, label=f"{series} ({int(t['seeds'].max())} seeds)")
            ax.fill_between(x, t["avg mean"] - se, t["avg mean"] + se, color=line.get_color(), alpha=0.2)
    bases = {kind: baseline(df, metric, kind) for kind in ("constant", "median")}
    for ax, xlabel in ((axes[0, 0], fig_spec.xlabel), (axes[0, 1], "training wall seconds (evaluation excluded)")):
        for kind, base in bases.items():
            if base is not None:
                ax.axhline(base[1], color=BASELINES[kind][1], ls="--", lw=1, label=base[0])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABEL.get(metric, metric) + ", held-out subset")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_title(fig_spec.title, fontsize=10)
    md = (f"Held-out {metric} during training (eval.during_training: the same fixed subset for every run), mean over "
          "seeds per eval dataset and their average (avg SE: standard error over seeds); seconds: training wall "
          "time, evaluation excluded.\n\n" + table.to_markdown(index=False, floatfmt=".3f"))
    for base in filter(None, bases.values()):
        md += f"\n\n{base[0].capitalize()} baseline ({metric}, average over eval datasets, final eval selection): {base[1]:.3f}"
    md += ("\n\nPaired over seeds (mean ± standard error of the per-seed differences; the start is each run's "
           "step-0 point):\n\n" + pairs.to_markdown(index=False, floatfmt=".3f"))
    final = summarize(df, fig_spec, metric)
    if len(final):  # each run's final evaluation: the larger selection (eval.samples_per_dataset per family)
        md += ("\n\nFinal evaluation of every run (eval.samples_per_dataset pixels per family), average over eval "
               "datasets, mean ± std over seeds:\n\n" + markdown(final, metric, {}))
        final_pairs = paired(df, metric)
        if len(final_pairs):
            md += "\n\nPaired over seeds, final evaluation:\n\n" + final_pairs.to_markdown(index=False, floatfmt=".3f")
        md = "\n\n".join(filter(None, [md, pixel_text(pixels, df, metric)]))
    return _save(fig, name, fig_spec, _with_sources(md, df, name), out)


def selection_text(df: pd.DataFrame) -> str:
    """Which pixels each arm was scored on (results.csv's eval-selection rows): per arm, the pixels its runs
    scored and the labels they left out, by reason (each the distinct per-run counts)."""
    d = df[df["method"] == EVAL_SELECTION]
    if not len(d):
        return ""
    def per_run(t: pd.DataFrame) -> str:  # the distinct per-run totals
        return " / ".join(map(str, sorted({int(v) for v in t.groupby("seed")["value"].sum()})))

    rows = []
    for arm, t in d.groupby("arm", sort=False):
        left = t[t["metric"].str.startswith("skipped: ")]
        rows.append({"arm": arm, "runs": t["seed"].nunique(), "pixels scored per run": per_run(t[t["metric"] == "pixels"]),
                     "labels left out per run": "; ".join(f"{k.removeprefix('skipped: ')} {per_run(g)}"
                                                          for k, g in left.groupby("metric")) or "none"})
    return "Eval selection (pixels scored; labels no arm could use, or another arm could not, are left out of all):\n\n" \
        + pd.DataFrame(rows).to_markdown(index=False)


def provenance_text(df: pd.DataFrame, name: str) -> str:
    """The command that makes the figure's rows and the commits its runs trained at (NAME.csv's columns)."""
    if "command" not in df or df["command"].isna().all():
        return ""
    runs = df[df["method"] == MODEL].drop_duplicates(["arm", "seed"])
    text = f"Rows: `{name}.csv`, made by `{' ; '.join(dict.fromkeys(df['command'].dropna()))}`; {len(runs)} runs"
    commits = runs["commit"].astype(object).fillna("unknown").value_counts()
    return text + ", trained at " + ", ".join(f"{c[:12]}{'+dirty' if c.endswith('+dirty') else ''} ({n})"
                                              for c, n in commits.items()) + "."


def time_text(df: pd.DataFrame) -> str:
    """The sweep's wall time from scratch (results.csv's SWEEP_TIME rows), when it was measured."""
    groups = list(df[df["method"] == SWEEP_TIME].groupby(["sweep", "scale"], sort=False))
    lines = []
    for (sweep, scale), g in groups:
        t = g.drop_duplicates("metric").set_index("metric")["value"].astype(float)
        side = f"{int(t['jobs'])} runs side by side" if t["jobs"] > 1 else "one run at a time"
        scenes = {1: "scenes rendered in it, ", 0: "scenes already on disk, "}.get(int(t.get("scenes_rendered", -1)), "")
        name = f" {sweep} ({scale})" if len(groups) > 1 else ""
        lines.append(f"Wall time of the whole sweep{name} from scratch: {t['minutes']:.1f} min ({side} on "
                     f"{int(t['cpus'])} CPUs; {scenes}every run and its evaluation included).")
    return "\n\n".join(lines)


def _with_sources(md: str, df: pd.DataFrame, name: str) -> str:
    return "\n\n".join(filter(None, [md, selection_text(df), time_text(df), provenance_text(df, name)]))


def _save(fig, name: str, fig_spec: Figure, md: str, out: Path) -> list[Path]:
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.md"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1], metadata={"CreationDate": None})  # byte-stable PDFs: no timestamp
    plt.close(fig)
    paths[2].write_text(f"# {fig_spec.title}\n\n{md}\n")
    return paths


def draw(name: str, df: pd.DataFrame, out: Path, metric: str = "delta1",
         pixels: pd.DataFrame | None = None) -> list[Path]:
    fig_spec = FIGURES[name]
    table = summarize(df, fig_spec, metric)
    bases = {kind: baseline(df, metric, kind) for kind in BASELINES}
    panels = 2 if fig_spec.time_panel else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    if fig_spec.kind == "bar":
        arms = list(dict.fromkeys(table["arm"]))
        if fig_spec.by_dataset:
            datasets = list(dict.fromkeys(table["dataset"]))
            width = 0.8 / len(datasets)
            for i, ds in enumerate(datasets):
                t = table[table["dataset"] == ds].set_index("arm").reindex(arms)
                ax.bar(np.arange(len(arms)) + (i - (len(datasets) - 1) / 2) * width, t["mean"], width,
                       yerr=t["std"], capsize=3, label=ds)
        else:
            t = table.set_index("arm").reindex(arms)
            ax.bar(np.arange(len(arms)), t["mean"], 0.6, yerr=t["std"], capsize=3, color="tab:blue")
        ax.set_xticks(np.arange(len(arms)), arms, rotation=15)
    else:
        for series, t in table.groupby("series", sort=False):
            t = t.sort_values("x")
            label = series if not fig_spec.by_dataset else None
            ax.errorbar(t["x"], t["mean"], yerr=t["std"], marker="o", capsize=3, label=label)
        ax.set_xlabel(fig_spec.xlabel)
        if fig_spec.logx:
            ax.set_xscale("log")
    for kind, base in bases.items():
        if base is not None:
            ax.axhline(base[1], color=BASELINES[kind][1], ls="--", lw=1, label=base[0])
    ax.set_ylabel(METRIC_LABEL.get(metric, metric))
    ax.set_title(fig_spec.title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    md = markdown(table, metric, bases)
    if fig_spec.time_panel:
        tt = df[(df["metric"] == "seconds_per_sample")]
        t2 = _agg(tt, ["series", "x"])
        for series, t in t2.groupby("series", sort=False):
            axes[0, 1].errorbar(t["x"], t["mean"], yerr=t["std"], marker="o", capsize=3, label=series)
        axes[0, 1].set_xscale("log")
        axes[0, 1].set_xlabel(fig_spec.xlabel)
        axes[0, 1].set_ylabel("wall seconds per training sample")
        axes[0, 1].legend(fontsize=8)
        axes[0, 1].grid(alpha=0.3)
        md += "\n\n" + markdown(t2, "seconds_per_sample", {})
    pairs = paired(df, metric)
    if len(pairs):
        md += (f"\n\nPaired over seeds ({metric} averaged over eval datasets; mean difference ± standard "
               "error of the per-seed differences):\n\n" + pairs.to_markdown(index=False, floatfmt=".3f"))
    md = "\n\n".join(filter(None, [md, pixel_text(pixels, df, metric)]))
    return _save(fig, name, fig_spec, _with_sources(md, df, name), out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/sweeps", help="folder holding <sweep>/<scale>/results.csv")
    p.add_argument("--out", default="analysis/figures", help="where figures and tables go")
    p.add_argument("--figure", choices=sorted(FIGURES), help="draw only this figure")
    p.add_argument("--scale", default="mini", help="which scale's results (mini, paper, ...)")
    p.add_argument("--metric", default="delta1", help="metric on the y axis (delta1, abs_rel, rmse, ...)")
    a = p.parse_args(argv)
    df, curves, pixels = (load_tables(Path(a.runs), a.scale, f) for f in ("results.csv", "curves.csv", "pixels.csv"))
    out = Path(a.out)
    names = [a.figure] if a.figure else list(FIGURES)
    missing = []
    for name in names:
        d = df[df["figure"] == name] if len(df) else df
        c = curves[curves["figure"] == name] if len(curves) else curves
        px = pixels[pixels["figure"] == name] if len(pixels) else pixels
        if len(d):  # from the runs: keep the per-seed rows (and per-pixel, per-point ones) beside the figure
            out.mkdir(parents=True, exist_ok=True)
            d.to_csv(out / f"{name}.csv", index=False)
            for rows, file, kw in ((c, f"{name}_curves.csv", {}),
                                   (px, f"{name}{PIXELS_SUFFIX}", {"compression": PIXELS_GZIP})):
                if len(rows):
                    rows.to_csv(out / file, index=False, **kw)
                else:  # the runs have none: an older file would describe other runs
                    (out / file).unlink(missing_ok=True)
        elif (out / f"{name}.csv").exists():  # the runs are gone: the committed rows, of this scale
            d = pd.read_csv(out / f"{name}.csv")
            d = d[d["scale"] == a.scale] if a.scale else d
            c = pd.read_csv(out / f"{name}_curves.csv") if (out / f"{name}_curves.csv").exists() else c
            c = c[c["scale"] == a.scale] if a.scale and len(c) else c
            px = pd.read_csv(out / f"{name}{PIXELS_SUFFIX}") if (out / f"{name}{PIXELS_SUFFIX}").exists() else px
            px = px[px["scale"] == a.scale] if a.scale and len(px) else px
        if not len(d):
            missing.append(name)
            continue
        if FIGURES[name].kind == "curve":
            if not len(c):
                print(f"missing: {name} has no learning curves (eval.during_training) in {a.runs}", file=sys.stderr)
                missing.append(name)
                continue
            paths = draw_curves(name, c, d, out, a.metric, px)
        else:
            paths = draw(name, d, out, a.metric, px)
        for path in paths:
            print(path)
    for name in missing:
        print(f"missing: {name} — run ./run.sh experiments/ablations/{name}.yaml --scale {a.scale}", file=sys.stderr)
    return 1 if a.figure and missing else 0


if __name__ == "__main__":
    sys.exit(main())
