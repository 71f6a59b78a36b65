import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rlkit.config import ConfigError
from rlkit.evaluate import MEDIAN, summarize
from rlkit.sweep import PIXEL_COLUMNS, RESULT_COLUMNS, SWEEP_TIME, load_sweep, run_sweep

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "analysis"))
import plot_ablation  # noqa: E402

EXP = {"method": "sft", "data": {"train": [{"path": "x.jsonl", "name": "indoor"}],
                                 "eval": [{"path": "x.jsonl", "name": "indoor"}]}}


def _sweep_files(tmp_path, arms=None, seeds=(0, 1)):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(EXP))
    sweep = {"figure": "camera_ambiguity", "experiment": "exp.yaml", "seeds": list(seeds),
             "scales": {"mini": {"train.max_steps": 3}},
             "arms": arms or {"direct": {"camera.strategy": "direct"}, "unify": {"camera.strategy": "unify_focal"}}}
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _cells(markdown: str) -> str:
    """A markdown table's text with the column padding collapsed: rows read as "| a | 0.300 |"."""
    return " ".join(markdown.split())


def _fake_metrics(value):
    per = {"indoor": {"delta1": value, "abs_rel": 0.5}, "avg": {"delta1": value, "abs_rel": 0.5}}
    return {"metrics": {"model": per, "constant 2 m": per}, "train_seconds": 10.0, "train_samples": 100}


def test_sweep_runs_missing_arms_only_and_writes_a_tidy_table(tmp_path):
    sweep = load_sweep(_sweep_files(tmp_path), root=tmp_path / "runs")
    calls = []

    def runner(exp):
        calls.append((exp.camera.strategy, exp.seed, exp.train["max_steps"]))
        out = Path(exp.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(_fake_metrics(0.1 * len(calls))))
        images = [str(Path.cwd() / "data" / "a.png"), "/elsewhere/b.png"]  # under the working folder, and not
        pd.DataFrame({"task": ["depth"] * 2, "dataset": ["indoor"] * 2, "image": images, "x": [1, 2],
                      "y": [3, 4], "gt": [2.0, 3.0], "pred": [2.1, None], "text": ["2.10", "?"]}).to_csv(
            out / "predictions.csv", index=False)

    path = run_sweep(sweep, "mini", runner)
    assert sorted(calls) == [("direct", 0, 3), ("direct", 1, 3), ("unify_focal", 0, 3), ("unify_focal", 1, 3)]
    table = pd.read_csv(path)
    assert list(table.columns) == RESULT_COLUMNS
    # 4 runs x 2 methods x 2 datasets x 2 metrics + 4 seconds_per_sample rows + the sweep's wall time from scratch
    assert len(table) == 4 * 2 * 2 * 2 + 4 + 4
    timed = table[table["method"] == SWEEP_TIME].set_index("metric")["value"]
    assert timed["jobs"] == 1 and timed["cpus"] >= 1 and 0 <= timed["minutes"] < 5 and timed["scenes_rendered"] == 0
    assert plot_ablation.time_text(table).startswith("Wall time of the whole sweep from scratch: ")
    runs = table[table["method"] != SWEEP_TIME]
    assert set(runs["arm"]) == {"direct", "unify"} and set(runs["seed"]) == {0, 1}
    sps = table[table["metric"] == "seconds_per_sample"]["value"]
    assert (sps == 0.1).all()
    pixels = pd.read_csv(path.with_name("pixels.csv"))  # every run's eval pixel by pixel, beside the table
    assert list(pixels.columns) == PIXEL_COLUMNS and len(pixels) == 4 * 2
    assert set(zip(pixels["arm"], pixels["seed"])) == {(a, s) for a in ("direct", "unify") for s in (0, 1)}
    assert pixels["pred"].isna().sum() == 4 and set(pixels["image"]) == {"data/a.png", "/elsewhere/b.png"}

    # resume: only the run without metrics.json runs again
    (sweep.run_dir("mini", "unify", 1) / "metrics.json").unlink()
    calls.clear()
    run_sweep(sweep, "mini", runner)
    assert calls == [("unify_focal", 1, 3)]

    # a subset: only the arms and seeds asked for (and only those not finished)
    for arm in ("direct", "unify"):
        for seed in (0, 1):
            (sweep.run_dir("mini", arm, seed) / "metrics.json").unlink()
    calls.clear()
    run_sweep(sweep, "mini", runner, arms=["unify"], seeds=[1])
    assert calls == [("unify_focal", 1, 3)]
    # a run redone later: the sweep's time from scratch no longer describes its table, and is dropped
    assert SWEEP_TIME not in set(pd.read_csv(path)["method"]) and not sweep.time_path("mini").exists()
    with pytest.raises(ConfigError, match="unknown arm 'unifi'; did you mean 'unify'"):
        run_sweep(sweep, "mini", runner, arms=["unifi"])


def test_x_can_be_the_samples_a_run_trained_on(tmp_path):
    arms = {"short": {"train.max_steps": 2, "x": "train_samples"}, "long": {"train.max_steps": 8, "x": "train_samples"}}
    sweep = load_sweep(_sweep_files(tmp_path, arms=arms, seeds=(0,)), root=tmp_path / "runs")

    def runner(exp):  # as if batch 16 on 3 processes
        out = Path(exp.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        m = {**_fake_metrics(0.3), "train_samples": exp.train["max_steps"] * 16 * 3}
        (out / "metrics.json").write_text(json.dumps(m))

    table = pd.read_csv(run_sweep(sweep, "mini", runner))
    table = table[table["method"] != SWEEP_TIME]
    assert table.groupby("arm")["x"].unique().to_dict() == {"long": [384], "short": [96]}
    assert set(table["series"]) == {"camera"}  # no series given: one line named after the sweep
    with pytest.raises(ConfigError, match="arm 'bad': x must be a number or 'train_samples'"):
        load_sweep(_sweep_files(tmp_path, arms={"bad": {"x": "samples"}}))


def test_bad_sweeps_are_named(tmp_path):
    with pytest.raises(ConfigError, match="arm 'bad'.*unknown key 'camra'"):
        load_sweep(_sweep_files(tmp_path, arms={"bad": {"camra.strategy": "direct"}}))
    p = _sweep_files(tmp_path)
    p.write_text(p.read_text() + "seed: 3\n")
    with pytest.raises(ConfigError, match="unknown sweep key 'seed'; did you mean 'seeds'"):
        load_sweep(p)


def _hand_table():
    rows = []
    for arm, vals in {"direct": [0.2, 0.4], "unify_focal": [0.5, 0.7]}.items():
        for seed, v in enumerate(vals):
            for ds, dv in (("indoor", v), ("avg", v)):
                rows.append(["s", "camera_ambiguity", "mini", arm, arm, None, seed, ds, "model", "delta1", dv])
                rows.append(["s", "camera_ambiguity", "mini", arm, arm, None, seed, ds, "constant 2 m", "delta1", 0.1])
    return _table(rows)


def _table(rows: list[list]) -> pd.DataFrame:
    """results.csv rows given up to their value; no commit, the command of a sweep named s."""
    return pd.DataFrame([r + [None, "./run.sh sweeps --only s"] for r in rows], columns=RESULT_COLUMNS)


def test_plot_from_hand_made_table(tmp_path):
    runs = tmp_path / "runs"
    (runs / "s" / "mini").mkdir(parents=True)
    _hand_table().to_csv(runs / "s" / "mini" / "results.csv", index=False)
    out = tmp_path / "fig"
    assert plot_ablation.main(["--runs", str(runs), "--out", str(out)]) == 0
    for ext in ("png", "pdf", "md"):
        assert (out / f"camera_ambiguity.{ext}").stat().st_size > 0
    md = _cells((out / "camera_ambiguity.md").read_text())
    assert "| arm | delta1 mean | std | seeds |" in md
    assert f"| direct | 0.300 | {np.std([0.2, 0.4], ddof=1):.3f} | 2 |" in md
    assert f"| unify_focal | 0.600 | {np.std([0.5, 0.7], ddof=1):.3f} | 2 |" in md
    assert "Constant 2 m baseline (delta1, average over eval datasets): 0.100" in md
    assert not (out / "focal_length.png").exists()  # no results: not drawn


def test_paired_comparisons_by_hand(tmp_path):
    rows = []
    for arm, vals in {"direct": [0.2, 0.5], "unify_focal": [0.5, 0.7]}.items():
        for seed, v in enumerate(vals):
            rows.append(["s", "camera_ambiguity", "mini", arm, arm, None, seed, "avg", "model", "delta1", v])
            rows.append(["s", "camera_ambiguity", "mini", arm, arm, None, seed, "avg", MEDIAN, "delta1", 0.3])
            rows.append(["s", "camera_ambiguity", "mini", arm, arm, None, seed, "avg", "model", "abs_rel", 1 - v])
    table = _table(rows)
    p = plot_ablation.paired(table, "delta1").set_index("comparison")
    # unify_focal - direct per seed: 0.3, 0.2 -> mean 0.25, SE = std([0.3, 0.2], ddof=1) / sqrt(2) = 0.05
    assert p.loc["unify_focal − direct", "mean difference"] == pytest.approx(0.25)
    assert p.loc["unify_focal − direct", "standard error"] == pytest.approx(0.05)
    assert p.loc["unify_focal − direct", "seeds the best arm is ahead"] == "2/2"
    # against its own runs' median label: 0.2, 0.4 -> 0.3 ± 0.1
    assert p.loc["unify_focal − median label", "mean difference"] == pytest.approx(0.3)
    assert p.loc["unify_focal − median label", "standard error"] == pytest.approx(0.1)
    # lower is better for AbsRel: the same arm is best and the differences keep their sign
    assert plot_ablation.paired(table, "abs_rel").set_index("comparison").loc[
        "unify_focal − direct", "mean difference"] == pytest.approx(0.25)
    runs = tmp_path / "runs"
    (runs / "s" / "mini").mkdir(parents=True)
    table.to_csv(runs / "s" / "mini" / "results.csv", index=False)
    assert plot_ablation.main(["--runs", str(runs), "--out", str(tmp_path / "fig")]) == 0
    assert "| unify_focal − direct | 0.250 | 0.050 | 2 | 2/2 |" in _cells((tmp_path / "fig" / "camera_ambiguity.md").read_text())


def test_a_base_stage_is_tabled_and_drawn_as_a_reference(tmp_path):
    sweep = load_sweep(_sweep_files(tmp_path, seeds=(0,)), root=tmp_path / "runs")
    base = tmp_path / "runs" / "camera" / "mini" / "_base"
    base.mkdir(parents=True)
    (base / "metrics.json").write_text(json.dumps(_fake_metrics(0.05)))

    def runner(exp):
        Path(exp.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(exp.output_dir) / "metrics.json").write_text(json.dumps(_fake_metrics(0.25)))

    table = pd.read_csv(run_sweep(sweep, "mini", runner))
    b = table[table["method"] == "base stage"]
    assert set(b["arm"]) == {"_base"} and len(b) == 4  # 2 datasets x 2 metrics of the base's model
    assert b[(b["dataset"] == "avg") & (b["metric"] == "delta1")]["value"].tolist() == [0.05]
    out = tmp_path / "fig"
    assert plot_ablation.main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    md = (out / "camera_ambiguity.md").read_text()
    assert "| direct | 0.250 |" in _cells(md) and "_base" not in md.split("\n\n")[0]  # not a bar of its own
    assert "Base stage baseline (delta1, average over eval datasets): 0.050" in md
    assert "| direct − base stage | 0.200 | nan | 1 | 1/1 |" in _cells(md)  # one seed: no standard error


def test_a_sweep_with_another_constant_finds_its_baseline(tmp_path):
    # eval.constant 3: the runs' metrics name the baseline "constant 3 m", and the table and plot find it
    sweep = load_sweep(_sweep_files(tmp_path, seeds=(0,)), root=tmp_path / "runs")
    frame = pd.DataFrame({"dataset": ["indoor"] * 4, "gt": [3.0, 3.5, 1.0, 8.0], "pred": [3.0, 3.0, 3.0, 3.0]})

    def runner(exp):
        out = Path(exp.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"metrics": summarize(frame, 3.0)}))

    table = pd.read_csv(run_sweep(sweep, "mini", runner))
    assert set(table["method"]) == {"model", "constant 3 m", SWEEP_TIME}
    out = tmp_path / "fig"
    assert plot_ablation.main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    # by hand: 3 m is within 1.25x of 3.0 and 3.5, not of 1.0 and 8.0
    assert "Constant 3 m baseline (delta1, average over eval datasets): 0.500" in (out / "camera_ambiguity.md").read_text()


def test_plot_lists_missing_figures_with_their_command(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "analysis/plot_ablation.py"), "--runs", str(tmp_path),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 0
    assert "missing: label_density — run ./run.sh experiments/ablations/label_density.yaml --scale mini" in r.stderr


def test_position_only_baseline(capsys):
    import position_baseline

    fixture = str(ROOT / "tests" / "fixtures" / "official" / "test.jsonl")
    rays, depth = position_baseline.rays_and_depths(fixture)
    assert len(rays) == len(depth) == 6 and np.allclose(np.linalg.norm(rays, axis=1), 1)
    # each label's nearest ray is its own: k = 1 answers the truth
    assert np.allclose(position_baseline.knn_predict(rays, depth, rays, k=1), depth)
    # k = 6 answers the geometric mean of all labels, everywhere
    assert np.allclose(position_baseline.knn_predict(rays, depth, rays, k=6), np.exp(np.log(depth).mean()))
    assert position_baseline.main([fixture, fixture, "--k", "1", "--colour"]) == 0
    out = _cells(capsys.readouterr().out)
    assert "| nearest rays (position only) | 1.000 | 0.000 |" in out
    assert "| nearest rays and 3x3 colour | 1.000 | 0.000 |" in out
    colours = position_baseline.local_colours(fixture)
    assert colours.shape == (6, 3) and ((colours >= 0) & (colours <= 1)).all()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "experiments" / "ablations").glob("[!_]*.yaml")))
def test_shipped_sweeps_validate_at_every_scale(name, monkeypatch):
    import rlkit.run
    from rlkit.sweep import arm_experiment

    def no_training(exp):
        raise AssertionError(f"a base stage would be trained into {exp.output_dir}")
    monkeypatch.setattr(rlkit.run, "run_experiment", no_training)

    sweep = load_sweep(ROOT / "experiments" / "ablations" / name)  # checks every arm at every scale
    assert set(sweep.scales) == {"mini", "paper"} and len(sweep.seeds) >= 3
    for arm in sweep.arms:
        mini, paper = (arm_experiment(sweep, s, arm, 0) for s in ("mini", "paper"))
        assert paper.model.name == "Qwen/Qwen2.5-VL-3B-Instruct" and mini.model.name == "tiny-qwen2.5-vl"
        if "camera.f_uni" not in sweep.arms[arm]:
            assert (mini.camera.f_uni, paper.camera.f_uni) == (50, 1000)
        # the GRPO sweeps' tiny model starts from a depth-SFT stage; the paper's VLM starts from itself
        assert paper.base is None and not paper.base_overrides
        rlkit.run.train_base_stage(paper)
        assert rlkit.run.ensure_model(paper) == "Qwen/Qwen2.5-VL-3B-Instruct"
        assert bool(mini.base) == (sweep.experiment.name == "_grpo_from_base.yaml")
        if mini.base:  # one base stage per sweep and scale, in the scale's world (float32)
            assert mini.base_overrides[-1] == f"output_dir={sweep.root / sweep.name / 'mini' / '_base'}"
            assert 'model.dtype="float32"' in mini.base_overrides


def test_the_committed_learning_curve_figure_is_redrawn_from_its_csvs(tmp_path):
    """analysis/figures/sft_vs_grpo.md is re-derived from the committed per-seed rows alone (no runs), and one
    paired comparison in it is recomputed here by hand from those rows."""
    import shutil
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    figures = ROOT / "analysis" / "figures"
    out = tmp_path / "figures"
    out.mkdir()
    for name in ("sft_vs_grpo.csv", "sft_vs_grpo_curves.csv"):
        shutil.copy(figures / name, out / name)
    r = subprocess.run([sys.executable, "analysis/plot_ablation.py", "--runs", str(tmp_path / "no_runs"), "--out",
                        str(out), "--figure", "sft_vs_grpo"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "sft_vs_grpo.md").read_text() == (figures / "sft_vs_grpo.md").read_text()
    curves = pd.read_csv(out / "sft_vs_grpo_curves.csv")
    avg = curves[(curves["metric"] == "delta1") & (curves["dataset"] == "avg")]
    last = avg["samples"].max()
    per = avg[avg["samples"] == last].pivot_table(index="seed", columns="series", values="value")
    diff = per["GRPO"] - per["SFT"]
    se = np.std(diff, ddof=1) / np.sqrt(len(diff))
    row = f"| GRPO − SFT at {last:g} samples"
    line = next(x for x in (out / "sft_vs_grpo.md").read_text().splitlines() if x.startswith(row))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert (float(cells[1]), float(cells[2]), int(cells[3])) == (round(diff.mean(), 3), round(se, 3), len(diff))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "analysis" / "figures").glob("*.csv")
                                         if not p.stem.endswith("_curves")))
def test_every_committed_figure_md_is_redrawn_from_its_csv_alone(tmp_path, name):
    """Each figure whose per-seed rows are committed: its md, every number in it, comes back from NAME.csv (and
    NAME_curves.csv) with no runs present."""
    import shutil

    figures = ROOT / "analysis" / "figures"
    for file in (f"{name}.csv", f"{name}_curves.csv", f"{name}{plot_ablation.PIXELS_SUFFIX}"):  # not NAME_tuning's
        if (figures / file).exists():
            shutil.copy(figures / file, tmp_path / file)
    r = subprocess.run([sys.executable, "analysis/plot_ablation.py", "--runs", str(tmp_path / "no_runs"), "--out",
                        str(tmp_path), "--figure", name], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"{name}.md").read_text() == (figures / f"{name}.md").read_text()


def test_paired_over_pixels_by_hand(tmp_path):
    """Two arms, two seeds, two pixels per dataset: per pixel the share of seeds within 1.25x, the best arm minus
    the other, mean and SE over pixels per dataset, then averaged over datasets; and the md gets the table."""
    rows = []
    hits = {("a", 0): [1, 1, 1, 0], ("a", 1): [1, 0, 1, 0], ("b", 0): [0, 0, 1, 0], ("b", 1): [1, 0, 0, 0]}
    for (arm, seed), h in hits.items():
        for k, hit in enumerate(h):
            rows.append({"figure": "camera_ambiguity", "scale": "mini", "arm": arm, "seed": seed, "task": "depth",
                         "dataset": ["indoor", "outdoor"][k // 2], "image": f"i{k}.png", "x": k, "y": 0, "gt": 2.0,
                         "pred": 2.1 if hit else (float("nan") if k == 3 else 9.0)})
    pixels = pd.DataFrame(rows)
    table = plot_ablation.pixel_paired(pixels, "a").set_index("comparison")
    # per pixel a - b: indoor (1 - .5, .5 - 0) = (.5, .5); outdoor (1 - .5, 0 - 0) = (.5, 0)
    # means .5 and .25 -> .375; SEs 0 and .25 -> sqrt(0 + .0625) / 2 = .125
    assert table.loc["a − b", "mean difference"] == pytest.approx(0.375)
    assert table.loc["a − b", "standard error"] == pytest.approx(0.125)
    assert (table.loc["a − b", "pixels"], table.loc["a − b", "pixels ahead / behind"]) == (4, "3 / 0")
    results = _table([["s", "camera_ambiguity", "mini", arm, arm, None, seed, "avg", "model", "delta1", np.mean(h)]
                      for (arm, seed), h in hits.items()])
    text = _cells(plot_ablation.pixel_text(pixels, results, "delta1"))
    assert "| a − b | 0.375 | 0.125 | 4 | 0 | 2 | 3 / 0 |" in text
    assert plot_ablation.pixel_text(pixels, results, "abs_rel") == ""  # a per-pixel hit is δ1's only
    # pixels of one image move together: the clustered SE of (1, 1, 0, 0) over images (A, A, B, B) is
    # sqrt(2 / 1 * (1 + 1)) / 4 = 0.5, not std / sqrt(4) = 0.289
    assert plot_ablation._clustered_se(pd.Series([1.0, 1, 0, 0]), pd.Series(list("AABB"))) == pytest.approx(0.5)
    assert plot_ablation._clustered_se(pd.Series([1.0, 1, 0, 0]), pd.Series(list("ABCD"))) == pytest.approx(
        np.std([1, 1, 0, 0], ddof=1) / 2)
    # a question asked twice of one pixel pairs in order; a pixel only one arm scored is counted, not paired
    twice = pd.concat([pixels, pixels[pixels["x"] == 0].assign(pred=9.0),
                       pixels[(pixels["arm"] == "b") & (pixels["x"] == 1)].assign(x=7)], ignore_index=True)
    row = plot_ablation.pixel_paired(twice, "a").iloc[0]
    assert (row["pixels"], row["only one arm scored"]) == (5, 1)


@pytest.mark.parametrize("name", sorted(p.name.removesuffix(plot_ablation.PIXELS_SUFFIX) for p in
                                         (ROOT / "analysis" / "figures").glob(f"*{plot_ablation.PIXELS_SUFFIX}")))
def test_committed_pixels_give_back_each_runs_delta1(name):
    """NAME_pixels.csv.gz holds every run's eval pixel by pixel: its hits give each run's δ1 per eval dataset in
    NAME.csv, and every arm was scored on the same pixels."""
    from rlkit.evaluate import MODEL
    from rlkit.metrics import delta_hits

    figures = ROOT / "analysis" / "figures"
    pixels = pd.read_csv(figures / f"{name}{plot_ablation.PIXELS_SUFFIX}")
    results = pd.read_csv(figures / f"{name}.csv")
    got = pixels.assign(hit=delta_hits(pixels["pred"], pixels["gt"])).groupby(["arm", "seed", "dataset"])["hit"].mean()
    want = results[(results["method"] == MODEL) & (results["metric"] == "delta1") & (results["dataset"] != "avg")]
    want = want.set_index(["arm", "seed", "dataset"])["value"]
    want.index = want.index.set_levels(want.index.levels[1].astype(int), level="seed")
    got.index = got.index.set_levels(got.index.levels[1].astype(int), level="seed")
    assert len(got) == len(want) > 0 and set(got.index) == set(want.index)
    assert np.allclose(got.reindex(want.index), want, atol=1e-12)
    assert not pixels.duplicated(["arm", "seed", *plot_ablation.PIXEL_KEY]).any()
    keys = pixels.groupby(["arm", "seed"]).apply(lambda t: frozenset(map(tuple, t[plot_ablation.PIXEL_KEY].values)),
                                                 include_groups=False)
    assert len(set(keys)) == 1


def test_finished_runs_of_another_base_or_config_are_not_reused(tmp_path):
    from rlkit.config import load_experiment, save_resolved
    from rlkit.run import base_experiment
    from rlkit.sweep import arm_experiment, pending_jobs

    sweep = load_sweep(ROOT / "experiments/ablations/grpo_reward.yaml", tmp_path)
    base_dir = tmp_path / "grpo_reward" / "mini" / "_base"
    base = base_experiment(arm_experiment(sweep, "mini", "neg_l1", 0))
    base_dir.mkdir(parents=True)
    (base_dir / "final").mkdir()
    save_resolved(base, base_dir / "config.yaml")
    assert len(pending_jobs(sweep, "mini")) == len(sweep.arms) * len(sweep.seeds)  # the same base: nothing stale
    # a finished arm of the same settings is reused; one whose only change is the final eval is evaluated again
    run = sweep.run_dir("mini", "neg_l1", 0)
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    save_resolved(arm_experiment(sweep, "mini", "neg_l1", 0), run / "config.yaml")
    assert ("neg_l1", 0) not in pending_jobs(sweep, "mini")
    exp = arm_experiment(sweep, "mini", "neg_l1", 0)
    exp.eval.during_training = None  # (these arms draw a learning curve, which binds the eval settings too)
    save_resolved(exp, run / "config.yaml")
    with pytest.raises(ConfigError):
        pending_jobs(sweep, "mini")
    exp.train["learning_rate"] = 0.5  # trained with other settings: named, with what to delete
    save_resolved(exp, run / "config.yaml")
    with pytest.raises(ConfigError, match=r"arm 'neg_l1' seed 0: .*was trained with other settings.*delete"):
        pending_jobs(sweep, "mini")
    save_resolved(arm_experiment(sweep, "mini", "neg_l1", 0), run / "config.yaml")
    # the base stage trained on other labels (the old depth-SFT base): every run made from it is stale
    old = load_experiment(ROOT / "experiments/depth_base_synthetic.yaml", [f"output_dir={base_dir}"])
    save_resolved(old, base_dir / "config.yaml")
    with pytest.raises(ConfigError, match="the base stage changed since its runs were made"):
        pending_jobs(sweep, "mini")


def test_the_arms_of_a_sweep_share_one_eval_selection(tmp_path, synth_dir):
    """Arms that draw different pixels on their own (a small f_uni puts more labels too near the border for a
    9-px marker; text needs no room) are all scored on the pixels every arm can draw: the same items, and the
    labels only some arm could use counted as 'unusable_in_another_arm'."""
    from conftest import write_experiment
    from rlkit.run import build_evalset, load_sources
    from rlkit.sweep import arm_experiment

    write_experiment(tmp_path, synth_dir, eval={"samples_per_dataset": 15},
                     prompt={"marker": {"shape": "square", "size": 9}})
    sweep = {"figure": "pixel_reference", "experiment": "exp.yaml", "seeds": [0], "scales": {"mini": {}},
             "arms": {"text": {"prompt.reference": "text"}, "square_f30": {"camera.f_uni": 30},
                      "square_f60": {}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
    sweep = load_sweep(tmp_path / "s.yaml", root=tmp_path / "runs")
    alone, shared = {}, {}
    for arm in sweep.arms:
        for store, on in ((alone, False), (shared, True)):
            exp = arm_experiment(sweep, "mini", arm, 0, shared=on)
            evalset = build_evalset(exp, load_sources(exp))
            src = {d: s.spec.label for d, s in enumerate(evalset.sources)}
            store[arm] = ([(src[it.dataset], it.record, it.label) for it in evalset.items], evalset.skipped)
    assert alone["text"][0] != alone["square_f30"][0]  # on their own the arms are scored on different pixels
    items = shared["text"][0]
    assert all(shared[arm][0] == items for arm in sweep.arms) and len(items) == 30
    # text skips nothing itself: every pixel it loses is one a square arm cannot draw
    dropped = {d: v.get("unusable_in_another_arm", 0) for d, v in shared["text"][1].items()}
    assert sum(dropped.values()) > 0 and all(v.get("marker_outside_image", 0) == 0 for v in shared["text"][1].values())
    # and the shared pixels are the first ones of the common permutation every arm can draw
    f30 = set(alone["square_f30"][0])
    assert set(items) <= f30 | set(alone["square_f60"][0]) and set(items) <= f30


def test_the_results_table_counts_the_eval_selection(tmp_path):
    """Each run's rows say how many pixels were scored and which labels were left out and why, so a figure's csv
    shows that its arms share one selection (or how many pixels another arm's camera cost)."""
    from rlkit.sweep import EVAL_SELECTION, result_rows

    sweep = load_sweep(_sweep_files(tmp_path), root=tmp_path / "runs")
    metrics = {**_fake_metrics(0.3), "eval_samples": 1024,
               "eval_skipped": {"indoor": {"marker_outside_image": 7, "unusable_in_another_arm": 3}}}
    rows = [r for r in result_rows(sweep, "mini", "direct", 0, metrics) if r["method"] == EVAL_SELECTION]
    assert {(r["dataset"], r["metric"], r["value"]) for r in rows} == {
        ("all", "pixels", 1024), ("indoor", "skipped: marker_outside_image", 7),
        ("indoor", "skipped: unusable_in_another_arm", 3)}


def test_each_row_names_the_commit_its_run_trained_at_and_the_command(tmp_path):
    """NAME.csv re-derives from the repository: every row carries the kit commit its run trained at (from
    metrics.json, '+dirty' when tracked files differed) and the command that remakes the table; the md says both."""
    from rlkit.rundir import code_version
    from rlkit.sweep import result_rows

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # a checkout of the kit names its commit; where git cannot say (no git, an unowned clone) it says nothing
    assert code_version()["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    path = _sweep_files(tmp_path)
    sweep = load_sweep(path, root=tmp_path / "runs")
    runs = {("direct", 0): {"commit": "a" * 40, "dirty": False}, ("direct", 1): {"commit": "a" * 40, "dirty": False},
            ("unify", 0): {"commit": "b" * 40, "dirty": True}, ("unify", 1): None}
    rows = [r for (arm, seed), code in runs.items()
            for r in result_rows(sweep, "mini", arm, seed, {**_fake_metrics(0.3 + seed / 10),
                                                            **({"code": code} if code else {})})]
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    assert set(table["command"]) == {f"./run.sh {path} --sweeps-dir {tmp_path / 'runs'}"}
    assert table.fillna({"commit": "-"}).groupby(["arm", "seed"])["commit"].unique().map(list).to_dict() == {
        ("direct", 0): ["a" * 40], ("direct", 1): ["a" * 40], ("unify", 0): ["b" * 40 + "+dirty"], ("unify", 1): ["-"]}
    assert result_rows(sweep, "paper", "direct", 0, _fake_metrics(0.3))[0]["command"] == \
        f"./run.sh {path} --scale paper --sweeps-dir {tmp_path / 'runs'}"
    shipped = load_sweep(ROOT / "experiments" / "ablations" / "focal_length.yaml")  # the default sweeps dir
    assert result_rows(shipped, "mini", "f50", 0, _fake_metrics(0.3))[0]["command"] == \
        "./run.sh sweeps --only focal_length"
    text = plot_ablation.provenance_text(table, "camera_ambiguity")
    assert text == (f"Rows: `camera_ambiguity.csv`, made by `./run.sh {path} --sweeps-dir {tmp_path / 'runs'}`; 4 "
                    "runs, trained at aaaaaaaaaaaa (2), bbbbbbbbbbbb+dirty (1), unknown (1).")
