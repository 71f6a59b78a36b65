from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlkit import camera as cm
from rlkit.builder import ANSWER_COLUMNS, EvalSet, ImageCache, Sample, TrainStream, load_source, make_sample, train_dataset
from rlkit.schema import CameraOptions, DatasetSpec, PromptOptions
from rlkit.config import experiment_from_dict
from rlkit.markers import MarkerStyle
from rlkit.records import Record

from conftest import OFFICIAL, gradient_image

MINI = CameraOptions(f_uni=100.0, crop_width=(60, 90), crop_height=(50, 80))


def _record(cam, pixels, path="mem.png"):
    from pathlib import Path
    pixels = np.asarray(pixels, dtype=np.float64)
    return Record(Path(path), cam, pixels, np.full(len(pixels), 3.0), "mem", "mem:1")


def _cache_with(rec, img):
    cache = ImageCache(4)
    cache._items[rec.image] = img
    return cache


def test_sft_row_format(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))
    row = next(iter(train_dataset(TrainStream([src], MINI, PromptOptions()))))
    assert set(row) == {"images", "prompt", "completion"}
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"][0]["type"] == "image"
    assert row["prompt"][0]["content"][1]["text"] == "How many meters is this point from the camera?"
    assert row["completion"][0]["content"][0]["text"].startswith("The point is around ")
    assert 60 <= row["images"][0].size[0] <= 90 and 50 <= row["images"][0].size[1] <= 80


def test_grpo_columns(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "outdoor_train.jsonl")))
    stream = TrainStream([src], MINI, PromptOptions(template="grpo"))
    cols = ("images", "prompt", *ANSWER_COLUMNS)
    row = next(iter(train_dataset(stream, columns=cols)))
    assert row["task"] == "depth" and row["dataset"] == "outdoor_train" and row["depth"] > 0
    assert row["label"] == row["depth"] and row["unit"] == "m" and len(row["pixels"]) == 1
    fx, fy, cx, cy, w, h = row["intrinsics"]
    assert abs(fx - 100) < 1 and abs(fy - 100) < 1 and (w, h) == row["images"][0].size
    assert "<answer>" in row["prompt"][0]["content"][1]["text"]


def test_marker_lands_on_the_labeled_pixel(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))
    style = MarkerStyle("arrow", 5, color=(255, 0, 255))
    stream = TrainStream([src], MINI, PromptOptions(marker=style))
    for i in range(30):
        s = stream.sample(i)
        img = np.asarray(s.image)
        assert (img[s.query.y, s.query.x] == [255, 0, 255]).all()  # arrow tip
        assert (img[s.query.y + 4, s.query.x + 4] == [255, 0, 255]).all()  # shaft end


def test_resized_crop_content_matches_the_coordinate_map():
    cam = cm.Camera(50.0, 25.0, 40.0, 30.0, 80, 60)
    rec = _record(cam, [[40, 30]])
    cache = _cache_with(rec, gradient_image(80, 60))
    opts = CameraOptions(f_uni=100.0, crop_width=(100, 120), crop_height=(70, 90))
    r = cm.unify_focal(cam, 100.0)
    for seed in range(10):
        s = make_sample(rec, 0, opts, PromptOptions(reference="text"), cache, np.random.default_rng(seed))
        img = np.asarray(s.image).astype(float)
        new = s.query.camera
        x0 = (cam.cx + 0.5) * r.sx - 0.5 - new.cx  # the crop offset, recovered from the camera
        y0 = (cam.cy + 0.5) * r.sy - 0.5 - new.cy
        assert x0 == int(x0) and y0 == int(y0)
        # output pixel (i, j) must show the source point (i + x0 + 0.5)/sx - 0.5 (pixel-center convention)
        for i, j in [(5, 5), (30, 20), (new.width - 6, new.height - 6)]:
            x_src = (i + x0 + 0.5) / r.sx - 0.5
            y_src = (j + y0 + 0.5) / r.sy - 0.5
            assert abs(img[j, i, 0] - x_src) <= 0.51 and abs(img[j, i, 1] - y_src) <= 0.51


@settings(max_examples=60, deadline=None)
@given(fx=st.floats(30, 400), fy_ratio=st.floats(0.8, 1.25), w=st.integers(40, 300), h=st.integers(40, 300),
       u=st.floats(0, 1), v=st.floats(0, 1), seed=st.integers(0, 10_000),
       strategy=st.sampled_from(["unify_focal", "direct"]))
def test_surviving_labels_keep_their_ray_within_half_a_pixel(fx, fy_ratio, w, h, u, v, seed, strategy):
    cam = cm.Camera(fx, fx * fy_ratio, (w - 1) * 0.45, (h - 1) * 0.55, w, h)
    px = [[round(u * (w - 1)), round(v * (h - 1))]]
    rec = _record(cam, px)
    cache = _cache_with(rec, gradient_image(w, h))
    opts = CameraOptions(strategy=strategy, f_uni=100.0, crop_width=(40, 120), crop_height=(30, 100))
    out = make_sample(rec, 0, opts, PromptOptions(), cache, np.random.default_rng(seed))
    if not isinstance(out, Sample):
        assert out in ("marker_outside_crop", "marker_outside_image")
        return
    new = out.query.camera
    assert out.image.size == (new.width, new.height)
    ray = cm.ray_directions(cam, np.asarray(px, float))[0]
    # project the original ray into the transformed camera: it must land within 0.5 px of the marked pixel
    u_new, v_new = new.fx * ray[0] / ray[2] + new.cx, new.fy * ray[1] / ray[2] + new.cy
    assert abs(u_new - out.query.x) <= 0.5 + 1e-9 and abs(v_new - out.query.y) <= 0.5 + 1e-9


def test_eval_selection_deterministic_no_crop_and_counts_skips():
    src = load_source(DatasetSpec(str(OFFICIAL)))
    opts = CameraOptions(strategy="direct")
    a = EvalSet([src], opts, PromptOptions(), num_per_dataset=100, seed=3)
    b = EvalSet([src], opts, PromptOptions(), num_per_dataset=100, seed=3)
    assert a.items == b.items
    # 6 labels; (63, 47) is at the corner of a.png so a 5-px arrow cannot be drawn there
    assert len(a) == 5 and a.skipped == {"test": {"marker_outside_image": 1}}
    s = a.sample(0)
    assert s.image.size == (s.record.camera.width, s.record.camera.height)  # no crop, no resize
    two = EvalSet([src], opts, PromptOptions(), num_per_dataset=2, seed=3)
    assert two.items == a.items[:2]  # a smaller N is a prefix: the same pixels, deterministically
    text = EvalSet([src], opts, PromptOptions(reference="text"), num_per_dataset=100, seed=3)
    assert len(text) == 6  # no marker to fit


def test_label_density_control(synth_dir):
    spec = DatasetSpec(str(synth_dir / "outdoor_train.jsonl"), images=3, points_per_image=2)
    src = load_source(spec, seed=1)
    assert len(src.records) == 3 and all(r.num_labels == 2 for r in src.records)
    stream = TrainStream([src], CameraOptions(f_uni=100.0, crop_width=None, crop_height=None), PromptOptions())
    seen = {(s.record.image.name, s.query.x, s.query.y) for s in (stream.sample(i) for i in range(120))}
    assert len(seen) <= 6 and len({k[0] for k in seen}) == 3


def test_dataset_weights_and_determinism(synth_dir):
    specs = [DatasetSpec(str(synth_dir / "indoor_train.jsonl"), weight=3.0),
             DatasetSpec(str(synth_dir / "outdoor_train.jsonl"), weight=1.0)]
    sources = [load_source(s) for s in specs]
    stream = TrainStream(sources, MINI, PromptOptions(), seed=4)
    counts = Counter(stream.sample(i).record.dataset for i in range(400))
    assert 0.65 < counts["indoor_train"] / 400 < 0.85
    again = TrainStream(sources, MINI, PromptOptions(), seed=4)
    assert again.sample(17).answer == stream.sample(17).answer
    assert np.array_equal(np.asarray(again.sample(17).image), np.asarray(stream.sample(17).image))


def test_strategies_change_words_and_images(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_eval.jsonl")))
    direct = EvalSet([src], CameraOptions(strategy="direct"), PromptOptions(), 4).sample(0)
    assert direct.image.size == (direct.record.camera.width, direct.record.camera.height)
    unified = EvalSet([src], CameraOptions(f_uni=50.0), PromptOptions(), 4).sample(0)
    assert abs(unified.query.camera.fx - 50) < 1
    intr = EvalSet([src], CameraOptions(strategy="intrinsics_in_prompt"), PromptOptions(), 4).sample(0)
    assert f"fx = {intr.record.camera.fx:.1f}" in intr.question
    rays = EvalSet([src], CameraOptions(strategy="predict_rays"), PromptOptions(), 4).sample(0)
    assert "degrees" in rays.answer and "direction" in rays.question


def test_multiple_of_draws_crop_sizes_inside_the_range():
    cam = cm.Camera(100.0, 100.0, 150.0, 100.0, 300, 200)
    rec = _record(cam, [[150, 100]])
    cache = _cache_with(rec, gradient_image(300, 200))
    opts = CameraOptions(f_uni=100.0, crop_width=(100, 140), crop_height=(70, 120), multiple_of=28)
    sizes = {make_sample(rec, 0, opts, PromptOptions(), cache, np.random.default_rng(i)).image.size
             for i in range(60)}
    assert {w for w, _ in sizes} == {112, 140} and {h for _, h in sizes} == {84, 112}


def test_crop_sizes_never_exceed_the_image():
    rng = np.random.default_rng(0)
    assert cm.sample_crop_size(rng, 90, 60, (100, 140), (70, 120), multiple_of=28) == (84, 56)
    assert cm.sample_crop_size(rng, 20, 20, (100, 140), (70, 120), multiple_of=28) == (20, 20)
    assert cm.sample_crop_size(rng, 500, 500, (30, 40), (30, 40), multiple_of=28) == (28, 28)


def test_axis_depth_task_needs_its_labels():
    src = load_source(DatasetSpec(str(OFFICIAL)))
    with pytest.raises(ValueError, match="field 'axis_depth': missing"):
        TrainStream([src], MINI, PromptOptions(task="axis_depth"))


def test_brightness_task_reads_the_unmarked_image_at_the_pixel():
    cam = cm.Camera(100.0, 100.0, 40.0, 30.0, 80, 60)  # f_uni = fx: no resize, eval: no crop
    img = gradient_image(80, 60)
    rec = _record(cam, [[20, 30], [0, 0]])
    style = MarkerStyle("square", 9, color=(255, 0, 0), outline=(255, 255, 255))
    s = make_sample(rec, 0, CameraOptions(f_uni=100.0), PromptOptions(task="brightness", marker=style),
                    _cache_with(rec, img))
    expected = np.asarray(img, dtype=float)[29:32, 19:22].mean() / 255  # 3x3 at (20, 30), R = x, G = y
    assert s.query.value == pytest.approx(expected)
    assert (np.asarray(s.image)[30, 20] == [255, 0, 0]).all()  # the marker hides what is asked about
    assert s.question == "How bright is the surface at this point, from 0 (black) to 1 (white)?"
    assert s.answer == f"The brightness at this point is around {expected:.2f}."
    arrow = PromptOptions(task="brightness", marker=MarkerStyle("arrow", 5))  # its tip at the corner pixel
    corner = make_sample(rec, 1, CameraOptions(f_uni=100.0), arrow, _cache_with(rec, img))
    assert corner.query.value == pytest.approx(np.asarray(img, dtype=float)[0:2, 0:2].mean() / 255)  # clipped


def test_brightness_task_has_no_record_labels_to_shuffle(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))
    assert 0 <= TrainStream([src], MINI, PromptOptions(task="brightness")).sample(0).query.value <= 1
    with pytest.raises(ValueError, match="shuffle_labels needs per-pixel labels"):  # checked once, at load
        experiment_from_dict({"data": {"shuffle_labels": True}, "prompt": {"task": "brightness"}})


def test_brightness_eval_labels_come_from_the_rendered_pixels():
    from rlkit.evaluate import selection_frame, summarize, train_medians

    src = load_source(DatasetSpec(str(OFFICIAL)))
    evalset = EvalSet([src], CameraOptions(strategy="direct"), PromptOptions(task="brightness"), 10)
    frame = selection_frame(evalset)
    assert len(frame) == len(evalset) > 0
    assert frame["gt"].tolist() == [evalset.sample(k).query.value for k in range(len(evalset))]
    assert frame["gt"].between(0, 1).all() and frame["gt"].nunique() > 1
    assert train_medians([src], ["brightness"]) == {}  # the records hold no brightness labels
    assert "median (train labels)" not in summarize(frame, 2.0, train_medians([src], ["brightness"]))


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="camera strategy 'bogus'"):
        CameraOptions(strategy="bogus")
    with pytest.raises(ValueError, match="crop_width"):
        CameraOptions(crop_width=(10, 5))
    with pytest.raises(ValueError, match="prompt template"):
        PromptOptions(template="dpo")


def test_aspect_jitter_on_the_exact_resize_keeps_pixels_and_rays():
    # the height alone resized to width / r after unify_focal: content, label pixel and camera still agree
    cam = cm.Camera(50.0, 50.0, 40.0, 30.0, 80, 60)
    rec = _record(cam, [[40, 30], [12.0, 50.0], [70.0, 8.0]])
    cache = _cache_with(rec, gradient_image(80, 60))
    opts = CameraOptions(f_uni=100.0, crop_width=None, crop_height=None)
    r = cm.unify_focal(cam, 100.0)  # 160 x 120
    heights = set()
    for seed in range(12):
        for label in range(3):
            s = make_sample(rec, label, opts, PromptOptions(reference="text"), cache, np.random.default_rng(seed),
                            aspect=(1.0, 1.3))
            new, img = s.query.camera, np.asarray(s.image).astype(float)
            heights.add(new.height)
            assert new.width == 160 and int(160 / 1.3) <= new.height <= 160 and s.image.size == (160, new.height)
            sy = new.height / 60
            assert new.fy == pytest.approx(cam.fy * sy) and new.fx == pytest.approx(100.0)
            for i, j in [(5, 5), (80, new.height // 2), (150, new.height - 6)]:  # pixel-center convention
                assert abs(img[j, i, 0] - ((i + 0.5) / r.sx - 0.5)) <= 0.51
                assert abs(img[j, i, 1] - ((j + 0.5) / sy - 0.5)) <= 0.51
            ray = cm.ray_directions(cam, rec.pixels[label:label + 1])[0]
            u, v = new.fx * ray[0] / ray[2] + new.cx, new.fy * ray[1] / ray[2] + new.cy
            assert abs(u - s.query.x) <= 0.5 + 1e-9 and abs(v - s.query.y) <= 0.5 + 1e-9
    assert len(heights) > 4
