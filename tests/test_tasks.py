"""The paper's other tasks (speed, time, two-point distance, camera motion) and multi-task mixing:
hand-computed labels, their words, their parsers, the builder's images and markers, eval per task."""

import dataclasses
import json
import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from rlkit.builder import EvalSet, ImageCache, TrainStream, load_source, make_sample, select_eval, to_row
from rlkit.schema import CameraOptions, DatasetSpec, PromptOptions
from rlkit.config import ConfigError, experiment_from_dict
from rlkit.evaluate import selection_frame, summarize_tasks, tasks_table, train_medians
from rlkit.labels import draw_param, label_value, store_values
from rlkit.markers import MarkerStyle
from rlkit.prompts import TASKS, Query, answer, parse_answer, question
from rlkit.records import RecordError, load_records
from rlkit.rewards import REGISTRY

WHOLE = CameraOptions(strategy="direct", crop_width=None, crop_height=None)


def _jsonl(tmp_path, rows, size=(200, 80), name="t.jsonl"):
    """rows: jsonl dicts without image/intrinsics; every line gets a fresh noise image."""
    rng = np.random.default_rng(0)
    lines = []
    for i, row in enumerate(rows):
        img = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / img)
        lines.append(json.dumps({"image": img, "intrinsics": [100.0, 100.0, 50.0, 40.0, *size], **row}))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_point_distance_by_hand(tmp_path):
    # pixel (50, 40) is the principal point: 2 m straight ahead -> (0, 0, 2); pixel (150, 40) looks 45 degrees
    # right: 2*sqrt(2) m along (1, 0, 1)/sqrt(2) -> (2, 0, 2). They are 2 m apart.
    path = _jsonl(tmp_path, [{"pixel_coords": [[50, 40], [150, 40], [50, 60]], "depth": [2.0, 2 * math.sqrt(2), 1.0]}])
    rec = load_records(path)[0][0]
    assert label_value(rec, "two_point", 0, 1) == pytest.approx(2.0, abs=1e-12)
    # (50, 60) at 1 m: ray (0, 0.2, 1) -> (0, 0.2, 1) / sqrt(1.04); from (0, 0, 2)
    far = np.array([0, 0.2, 1]) / math.sqrt(1.04) - np.array([0, 0, 2])
    assert label_value(rec, "two_point", 2, 0) == pytest.approx(np.linalg.norm(far), abs=1e-12)
    src = load_source(DatasetSpec(str(path)))
    vals = store_values(src, "two_point", np.array([0, 0]), np.array([0, 2]), np.array([1, 0]), None)
    np.testing.assert_allclose(vals, [2.0, np.linalg.norm(far)], atol=1e-12)


def test_speed_and_time_arithmetic_words_and_parsers(tmp_path):
    path = _jsonl(tmp_path, [{"pixel_coords": [[60, 40]], "depth": [3.0]}])
    rec = load_records(path)[0][0]
    assert label_value(rec, "speed", 0, param=1.5) == 2.0  # 3 m in 1.5 s
    assert label_value(rec, "time", 0, param=0.5) == 6.0  # 3 m at 0.5 m/s
    cam = rec.camera
    q = Query("speed", cam, 60, 40, 2.0, param=1.5)
    assert question(q, reference="marker", strategy="unify_focal", template="sft") == \
        "How many meters per second must I move to reach this point in 1.5 seconds?"
    assert answer(q, strategy="unify_focal", template="sft") == "You must move at around 2.00 meters per second."
    q = Query("time", cam, 60, 40, 6.0, param=0.5)
    assert "moving at 0.5 meters per second" in question(q, reference="marker", strategy="unify_focal", template="sft")
    assert answer(q, strategy="unify_focal", template="sft") == "It takes around 6.00 seconds."
    assert "the time in seconds" in question(q, reference="marker", strategy="unify_focal", template="grpo")
    # each task parses its own unit; "m/s" is no distance, "seconds" no speed
    assert parse_answer("You must move at around 2.00 meters per second.", "speed") == 2.0
    assert parse_answer("about 2.5 m/s", "speed") == 2.5
    assert parse_answer("It takes around 6.00 seconds.", "time") == 6.0 and parse_answer("7s", "time") == 7.0
    assert parse_answer("about 2.5 m/s", "depth") is None and parse_answer("6.00 seconds", "speed") is None
    assert parse_answer("3 meters per second", "depth") is None and parse_answer("3 meters away", "depth") == 3.0
    assert parse_answer("<answer>4.2</answer>", "time") == 4.2
    # stated values: multiples of the step within the range
    rng = np.random.default_rng(0)
    drawn = draw_param("speed", rng, size=4000)
    assert set(np.round(drawn, 6)) == set(np.round(np.arange(1.0, 10.01, 0.5), 6))
    assert draw_param("depth", rng) is None


def test_camera_motion_from_the_pair_key(tmp_path):
    path = _jsonl(tmp_path, [{"pixel_coords": [[60, 40]], "depth": [3.0],
                              "pair": {"image": "img1.png", "translation": [0.3, 0.0, -0.4]}},
                             {"pixel_coords": [[60, 40]], "depth": [3.0]}])
    rec = load_records(path)[0][0]
    assert label_value(rec, "camera_motion", 0) == pytest.approx(0.5)
    assert rec.extras["pair"]["image"] == str(tmp_path / "img1.png")
    src = load_source(DatasetSpec(str(path)))
    np.testing.assert_array_equal(src.store.col["image.pair_motion"], [0.5, np.nan])
    # both views through one camera transform: the second input is the pair image (img1) cut and resized exactly
    # as the first (img0); the two noise images differ
    other = load_records(path)[0][1]
    for rng in (None, np.random.default_rng(3)):
        cam = CameraOptions(f_uni=60.0, crop_width=(28, 56), crop_height=(28, 40))
        opts = PromptOptions(task="camera_motion")
        s = make_sample(rec, 0, cam, opts, ImageCache(), rng)
        twin = make_sample(dataclasses.replace(rec, extras={"pair": {"image": str(other.image),
                                                                     "translation": [1.0, 0, 0]}}),
                           0, cam, opts, ImageCache(), None if rng is None else np.random.default_rng(3))
        assert len(s.images) == 2 and s.images[0].size == s.images[1].size
        assert not np.array_equal(np.asarray(s.images[0]), np.asarray(s.images[1]))
        assert np.array_equal(np.asarray(s.images[1]), np.asarray(twin.images[1]))
        if rng is None:  # no crop: img1 resized exactly as a depth sample of it (text reference: no marker)
            ref = make_sample(other, 0, cam, PromptOptions(reference="text"), ImageCache())
            assert np.array_equal(np.asarray(s.images[1]), np.asarray(ref.image))
        assert s.query.value == pytest.approx(0.5) and s.answer == "The camera moved around 0.50 meters."
        row = to_row(s)
        assert [c["type"] for c in row["prompt"][0]["content"]] == ["image", "image", "text"]
        assert row["pixels"] == [] and math.isnan(row["depth"]) and row["unit"] == "m"


def test_a_missing_pair_image_is_found_before_training(tmp_path):
    from rlkit.store import check_images

    path = _jsonl(tmp_path, [{"pixel_coords": [[60, 40]], "depth": [3.0],
                              "pair": {"image": "gone.png", "translation": [1, 0, 0]}}])
    with pytest.raises(RecordError, match=r"t.jsonl:1: field 'pair': file not found"):
        load_records(path)
    reasons, examples = check_images(load_source(DatasetSpec(str(path))).store, progress=False)
    assert reasons == {"image_missing": 1} and "t.jsonl:1 (the pair's image)" in examples[0]


@pytest.mark.parametrize("pair,why", [
    ({"image": "img0.png"}, "must be"),
    ({"image": "img0.png", "translation": [0, 0]}, "translation must be 3 finite numbers"),
    ({"image": "img0.png", "translation": [0, 0, 0]}, "has length 0"),
    ({"image": "../x.png", "translation": [1, 0, 0]}, "outside the dataset root"),
    ({"image": "img0.png", "translation": [1, 0, 0], "rotation": 1}, "must be"),
])
def test_bad_pair_key_names_the_line(tmp_path, pair, why):
    path = _jsonl(tmp_path, [{"pixel_coords": [[60, 40]], "depth": [3.0], "pair": pair}])
    with pytest.raises(RecordError, match=rf"t.jsonl:1: field 'pair': .*{why}"):
        load_records(path)


def test_two_point_draws_both_markers_in_their_colors(tmp_path):
    path = _jsonl(tmp_path, [{"pixel_coords": [[30, 20], [150, 60], [100, 40]], "depth": [2.0, 3.0, 4.0]}])
    src = load_source(DatasetSpec(str(path)))
    opts = PromptOptions(task="two_point", marker=MarkerStyle("square", 5, color=(255, 0, 255)))
    stream = TrainStream([src], WHOLE, opts, seed=1)
    seen = set()
    for i in range(20):
        s = stream.sample(i)
        img = np.asarray(s.image)
        (x1, y1), (x2, y2) = (s.query.x, s.query.y), s.query.second
        assert (img[y1, x1] == [255, 0, 255]).all() and (img[y2, x2] == [0, 0, 255]).all()
        assert s.label != s.second
        assert "the point marked in magenta and the point marked in blue" in s.question
        assert s.query.value == pytest.approx(label_value(s.record, "two_point", s.label, s.second))
        seen.add((s.label, s.second))
    assert len(seen) == 6  # every ordered pair of the 3 labels
    with pytest.raises(ValueError, match="both read as 'red'"):
        PromptOptions(task="two_point", second_marker=MarkerStyle(color=(250, 10, 10)))


def test_task_mix_keeps_its_weights_and_sample_is_a_pure_function(synth_dir):
    srcs = [load_source(DatasetSpec(str(synth_dir / f"{f}_train.jsonl"))) for f in ("indoor", "outdoor")]
    cam = CameraOptions(f_uni=60.0, crop_width=(56, 84), crop_height=(56, 84), multiple_of=28)
    opts = PromptOptions(tasks={"depth": 1, "speed": 2, "two_point": 1, "time": 0})
    stream = TrainStream(srcs, cam, opts, seed=4)
    counts = Counter(stream.sample(i).query.task for i in range(400))
    assert counts["time"] == 0 and set(counts) == {"depth", "speed", "two_point"}
    assert 160 <= counts["speed"] <= 240 and 70 <= counts["depth"] <= 130  # 200 and 100 expected
    again = TrainStream(srcs, cam, opts, seed=4)
    for i in (0, 7, 123):
        a, b = stream.sample(i), again.sample(i)
        assert (a.question, a.answer) == (b.question, b.answer) and a.image.tobytes() == b.image.tobytes()
    with pytest.raises(ConfigError, match="task camera_motion needs images with a 'pair' view"):
        TrainStream(srcs, cam, PromptOptions(tasks={"depth": 1, "camera_motion": 1}))


def test_eval_per_task_labels_and_medians(synth_dir, tmp_path):
    from rlkit.synth import CameraRange, generate_split

    paired = tmp_path / "paired"
    for split in ("train", "eval"):
        generate_split(paired, "indoor", split, 6, points_per_image=4, progress=False, pairs=True,
                       camera=CameraRange(width=(96, 128)))
    tasks = {t: 1 for t in ("depth", "axis_depth", "speed", "time", "two_point", "camera_motion")}
    opts = PromptOptions(tasks=tasks)
    cam = CameraOptions(f_uni=60.0)
    ev = EvalSet([load_source(DatasetSpec(str(paired / "indoor_eval.jsonl"), name="in"))], cam, opts, 5, seed=2)
    frame = selection_frame(ev)
    assert frame.groupby("task").size().to_dict() == {t: 5 for t in tasks}
    for k in range(len(ev)):  # the store's vectorized labels equal the rendered samples'
        s = ev.sample(k)
        assert s.query.task == frame["task"][k] and s.query.value == pytest.approx(frame["gt"][k], rel=1e-12)
    train = [load_source(DatasetSpec(str(paired / "indoor_train.jsonl"), name="in"))]
    medians = train_medians(train, list(tasks))
    motion = [math.hypot(*json.loads(line)["pair"]["translation"])
              for line in (paired / "indoor_train.jsonl").read_text().splitlines()]
    assert medians["camera_motion"]["in"] == pytest.approx(float(np.median(motion)))
    assert 0.2 <= min(motion) and max(motion) <= 1.5 + 1e-3
    frame["pred"] = frame["gt"]  # a perfect model
    by_task = summarize_tasks(frame, 2.0, medians)
    assert all(by_task[t]["model"]["in"]["delta1"] == 1.0 for t in tasks)
    assert set(by_task["speed"]) == {"model", "constant 2 m", "median (train labels)"}
    table = tasks_table(by_task)
    assert "| model " in table and "camera_motion" in table and "1.000" in table


def test_speed_median_is_the_drawn_distribution(tmp_path):
    # every depth is 3 m: speed labels are 3 / T, T uniform over 1, 1.5, ..., 10 (19 values, median 5.5)
    path = _jsonl(tmp_path, [{"pixel_coords": [[60, 40], [70, 40]], "depth": [3.0, 3.0]}] * 3)
    medians = train_medians([load_source(DatasetSpec(str(path), name="d"))], ["speed", "time", "depth"])
    assert medians["speed"]["d"] == pytest.approx(3 / 5.5)
    # V over 0.5, 1, ..., 5: 10 values, so the drawn median is one of the middle two, 3/2.5 or 3/3
    assert min(abs(medians["time"]["d"] - 1.2), abs(medians["time"]["d"] - 1.0)) < 1e-12
    assert medians["depth"]["d"] == 3.0


def test_rewards_score_each_rows_own_unit():
    texts = ["You must move at around 2.0 meters per second.", "It takes around 6 seconds.", "<answer>2.0</answer>"]
    tasks = ["speed", "time", "depth"]
    assert REGISTRY["delta1"](texts, label=[2.0, 6.0, 2.0], task=tasks) == [1.0, 1.0, 1.0]
    assert REGISTRY["neg_l1"](texts, label=[1.5, 4.0, 2.5], task=tasks) == [-0.5, -2.0, -0.5]
    # read as a distance, a speed has no meter unit: the worst value
    assert REGISTRY["neg_l1"](texts[:1], label=[2.0], task=["depth"]) == [-50.0]
    assert REGISTRY["format"](["<answer>3</answer>", "<answer>-3</answer>"], task=["time", "time"]) == [1.0, 0.0]


def test_task_options_are_checked_at_load():
    base = {"data": {"train": [{"path": "a.jsonl"}], "eval": [{"path": "a.jsonl"}]}}
    with pytest.raises(ConfigError, match="prompt: prompt tasks: 'sped' is not one of"):
        experiment_from_dict({**base, "prompt": {"tasks": {"sped": 1}}})
    with pytest.raises(ConfigError, match="the weight of speed must be a number >= 0"):
        experiment_from_dict({**base, "prompt": {"tasks": {"speed": -1}}})
    with pytest.raises(ConfigError, match="prompt task 'two_point' is not a point's distance.*text"):
        experiment_from_dict({**base, "prompt": {"tasks": {"depth": 1, "two_point": 1}, "reference": "text"}})
    with pytest.raises(ConfigError, match="shuffle_labels needs per-pixel labels.*'speed'"):
        experiment_from_dict({**{"data": {**base["data"], "shuffle_labels": True}}, "prompt": {"tasks": {"speed": 1}}})
    exp = experiment_from_dict({**base, "prompt": {"tasks": {"speed": 2, "depth": 1}}})
    assert exp.prompt.task_weights() == {"speed": 2.0, "depth": 1.0}
    assert set(TASKS) >= {"depth", "axis_depth", "speed", "time", "two_point", "camera_motion"}


def test_pair_translation_is_the_second_cameras_center_in_the_first_cameras_frame():
    # a point X1 seen by the first camera is at X1 - t in the second (same orientation): projecting it there
    # must find the second view's depth map at |X1 - t|
    from rlkit.camera import ray_directions
    from rlkit.synth.generate import pair_view, scene_rng
    from rlkit.synth.render import render
    from rlkit.synth.scenes import CameraRange, sample_scene

    for family in ("indoor", "outdoor"):
        rng = scene_rng(family, "train", 0, 3)
        scene = sample_scene(family, rng, CameraRange(width=(160, 160)))
        moved, t = pair_view(scene, family, np.random.default_rng(1))
        _, depth1, _ = render(scene)
        _, depth2, _ = render(moved)
        cam = scene.camera
        ys, xs = np.mgrid[10:cam.height - 10:7, 10:cam.width - 10:7]
        px = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
        d1 = depth1[ys.ravel(), xs.ravel()]
        keep = np.isfinite(d1) & (d1 < 30)
        x2 = ray_directions(cam, px[keep]) * d1[keep, None] - t
        u = np.rint(cam.fx * x2[:, 0] / x2[:, 2] + cam.cx).astype(int)
        v = np.rint(cam.fy * x2[:, 1] / x2[:, 2] + cam.cy).astype(int)
        inside = (x2[:, 2] > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        rel = np.abs(depth2[v[inside], u[inside]] - np.linalg.norm(x2[inside], axis=1)) / np.linalg.norm(x2[inside],
                                                                                                         axis=1)
        assert inside.sum() > 50 and np.median(rel) < 0.01, (family, inside.sum(), np.median(rel))
        # a wrong sign (or frame) would not fit: the same check with +t fails
        x2w = ray_directions(cam, px[keep]) * d1[keep, None] + t
        uw = np.rint(cam.fx * x2w[:, 0] / x2w[:, 2] + cam.cx).astype(int)
        vw = np.rint(cam.fy * x2w[:, 1] / x2w[:, 2] + cam.cy).astype(int)
        ok = (x2w[:, 2] > 0) & (uw >= 0) & (uw < cam.width) & (vw >= 0) & (vw < cam.height)
        relw = np.abs(depth2[vw[ok], uw[ok]] - np.linalg.norm(x2w[ok], axis=1)) / np.linalg.norm(x2w[ok], axis=1)
        assert np.median(relw) > 0.01


def test_two_point_crops_are_wide_enough_for_both_markers(tmp_path):
    # markers 120 px apart; crops drawn from 60-200 px would mostly cut one off: the crop's lower bound is
    # raised to the pair's span (here 120 + the 5-px square's 4 px + 1), so no sample is skipped
    path = _jsonl(tmp_path, [{"pixel_coords": [[30, 40], [150, 40]], "depth": [2.0, 3.0]}])
    src = load_source(DatasetSpec(str(path)))
    cam = CameraOptions(strategy="direct", crop_width=(60, 200), crop_height=(60, 80))
    stream = TrainStream([src], cam, PromptOptions(task="two_point", marker=MarkerStyle("square", 5)), seed=0)
    widths = {stream.sample(i).image.size[0] for i in range(30)}
    assert not stream.skips and min(widths) >= 125 and len(widths) > 5


def test_two_point_never_asks_about_one_point_or_covered_markers(tmp_path):
    # labels 0 and 1 are one pixel (a 0 m answer); label 2 is 3 px from label 0 (the 5-px squares overlap);
    # label 3 is far: only (0, 3), (1, 3), (2, 3) and their reverses can be asked
    path = _jsonl(tmp_path, [{"pixel_coords": [[40, 40], [40, 40], [43, 40], [150, 40]],
                              "depth": [2.0, 2.0, 2.0, 3.0]}])
    src = load_source(DatasetSpec(str(path)))
    opts = PromptOptions(task="two_point", marker=MarkerStyle("square", 5))
    stream = TrainStream([src], WHOLE, opts, seed=0)
    pairs = {tuple(sorted((s.label, s.second))) for s in (stream.sample(i) for i in range(40))}
    assert pairs == {(0, 3), (1, 3), (2, 3)}
    assert stream.skips["markers_overlap"] > 0 and stream.skips["label_rounds_to_zero"] == 0  # same pixel: overlap
    items, skipped = select_eval([src], WHOLE, opts, 100, seed=0)
    assert {tuple(sorted((it.label, it.second))) for it in items} <= {(0, 3), (1, 3), (2, 3)}
    assert len(items) + sum(skipped["t"].values()) == 4 and skipped["t"]["markers_overlap"] >= 1
    ev = EvalSet([src], WHOLE, opts, 100, seed=0)
    assert (selection_frame(ev)["gt"] > 0.5).all()
    # without markers (text reference is not allowed for two_point) two labels at one point read 0.00: skipped
    from rlkit.labels import MIN_LABEL
    assert label_value(load_records(path)[0][0], "two_point", 0, 1) < MIN_LABEL


def test_eval_pairs_of_a_smaller_selection_are_a_prefix(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_eval.jsonl")))
    opts = PromptOptions(task="two_point")
    small, _ = select_eval([src], CameraOptions(f_uni=60.0), opts, 5, seed=1)
    large, _ = select_eval([src], CameraOptions(f_uni=60.0), opts, 20, seed=1)
    assert small == large[:5] and len({(it.record, it.label, it.second) for it in large}) == 20


def test_camera_motion_without_pairs_is_counted_or_refused(synth_dir, tmp_path):
    from rlkit.synth import CameraRange, generate_split

    paired = generate_split(tmp_path, "indoor", "eval", 3, points_per_image=2, progress=False, pairs=True,
                            camera=CameraRange(width=(96, 96)))
    plain = load_source(DatasetSpec(str(synth_dir / "outdoor_eval.jsonl"), name="plain"))
    both = [load_source(DatasetSpec(str(paired), name="paired")), plain]
    opts = PromptOptions(tasks={"depth": 1, "camera_motion": 1})
    items, skipped = select_eval(both, CameraOptions(f_uni=60.0), opts, 10, seed=0)
    assert sum(it.task == "camera_motion" for it in items) == 3
    assert skipped["plain"]["camera_motion: no_pair"] == len(plain)
    with pytest.raises(ConfigError, match="eval: task camera_motion has no eval sample in any dataset"):
        select_eval([plain], CameraOptions(f_uni=60.0), opts, 10, seed=0)


def test_weight_zero_tasks_are_evaluated_not_trained(synth_dir):
    srcs = [load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))]
    opts = PromptOptions(tasks={"depth": 1, "camera_motion": 0})  # no pairs: fine, camera_motion is not trained
    stream = TrainStream(srcs, CameraOptions(f_uni=60.0), opts)
    assert stream.tasks == ["depth"] and stream.sample(0).query.task == "depth"


def test_shuffled_labels_come_from_the_samples_task(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))
    axis = np.asarray(src.label_column("axis_depth"))
    stream = TrainStream([src], CameraOptions(f_uni=60.0), PromptOptions(tasks={"axis_depth": 1}), shuffle_labels=True)
    assert all(np.isclose(axis, stream.sample(i).query.value).any() for i in range(20))


def test_label_scale_multiplies_the_answer_not_the_image(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))
    plain = TrainStream([src], CameraOptions(f_uni=60.0), PromptOptions(template="grpo"))
    scaled = TrainStream([src], CameraOptions(f_uni=60.0), PromptOptions(template="grpo"), label_scale=2.0)
    for i in range(5):
        a, b = plain.sample(i), scaled.sample(i)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.question == b.question
        assert b.query.value == pytest.approx(2 * a.query.value)
        assert b.answer == f"<answer>{2 * a.query.value:.2f}</answer>"
    with pytest.raises(ConfigError, match="data.label_scale needs per-pixel labels in the records.*'brightness'"):
        experiment_from_dict({"data": {"label_scale": 2.0}, "prompt": {"task": "brightness"}})
    with pytest.raises(ValueError, match="label_scale must be a number > 0"):
        experiment_from_dict({"data": {"label_scale": 0}})
