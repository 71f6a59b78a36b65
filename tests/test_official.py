"""The official DepthLM conventions (prompt.template official, marker official_arrow, camera.resize official)
give, pixel for pixel and character for character, what the official code gives.

``official_sample`` below restates the rules of facebookresearch/DepthLM_Official (utils/datasets.py,
dataset_eval; train.py for the join of the target) in the most literal way, independently of rlkit:
PIL's resize with int() sizes and its default filter, int() pixel mapping, a per-pixel putpixel arrow.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlkit import camera as cm
from rlkit.builder import ImageCache, Sample, camera_transform, make_sample
from rlkit.schema import CameraOptions, PromptOptions
from rlkit.config import experiment_from_dict, load_experiment
from rlkit.markers import MarkerStyle, draw, fits, footprint
from rlkit.prompts import Query, answer, parse_answer, question
from rlkit.records import Record
from rlkit.rewards.format import format_reward

from conftest import OFFICIAL, gradient_image

ROOT = Path(__file__).parent.parent
QUESTION = ("Given this image, how far is the point pointed by the red arrow from the camera? Output the thinking "
            "process in <think> </think> and final answer (the meter number only, without the unit) in "
            "<answer> </answer> tags.")
PROMPT = PromptOptions(template="official", marker=MarkerStyle("official_arrow"))


def official_sample(image, intrinsics, coord, depth, f_uni):
    """(image, (x, y), question, target) as the official code builds them, or None where it skips the label."""
    intrinsics = list(intrinsics[:4])
    if intrinsics[0] == 0.0:
        intrinsics[0] = intrinsics[1]
    new = intrinsics
    if abs(intrinsics[0] - intrinsics[1]) > 1e-3:
        import cv2

        k = np.array([[intrinsics[0], 0, intrinsics[2]], [0, intrinsics[1], intrinsics[3]], [0, 0, 1]])
        a = np.array(image)
        k_new, _ = cv2.getOptimalNewCameraMatrix(k, np.zeros((4, 1)), (a.shape[1], a.shape[0]), 1,
                                                 (a.shape[1], a.shape[0]))
        image = Image.fromarray(cv2.undistort(a, k, np.zeros((4, 1)), None, k_new))
        new = [float(k_new[0, 0]), float(k_new[1, 1]), float(k_new[0, 2]), float(k_new[1, 2])]
    scale = f_uni / new[0]
    width, height = int(image.width * scale), int(image.height * scale)
    new = [new[0] * scale, new[1] * scale, new[2] * scale, new[3] * scale]
    image = image.resize((width, height))
    x = int((coord[0] - intrinsics[2]) * (new[0] / intrinsics[0]) + new[2])
    y = int((coord[1] - intrinsics[3]) * (new[1] / intrinsics[1]) + new[3])
    size = 5
    if not (size <= x < image.width - size and size <= y < image.height - size):
        return None
    for dx in range(1, size + 1):
        image.putpixel((x - dx, y), (255, 0, 0))
    for dy in range(1, size // 2 + 1):
        image.putpixel((x - dy - 1, y + dy), (255, 0, 0))
        image.putpixel((x - dy - 1, y - dy), (255, 0, 0))
    think = f"<think> The point is around {depth:.2f} meters away from the camera. </think>"
    solution = f"<answer> {depth:.2f} </answer>"
    return image, (x, y), QUESTION, f"{think}\n\n{solution}", new + [width, height]


def noise_image(width, height, seed=0):
    """Every pixel independent: any difference in resampling or placement shows."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _record(cam, pixels, depth=None):
    pixels = np.asarray(pixels, dtype=np.float64)
    depth = np.asarray(depth if depth is not None else np.linspace(0.7, 41.3, len(pixels)), dtype=np.float64)
    return Record(Path("mem.png"), cam, pixels, depth, "mem", "mem:1")


def _cache_with(rec, img):
    cache = ImageCache(4)
    cache._items[rec.image] = img
    return cache


def _check_same(rec, img, f_uni, cam_opts=None):
    """Every label of rec: the kit's eval sample equals the official one (or both skip). Returns the skip count."""
    cam_opts = cam_opts or CameraOptions(f_uni=f_uni, crop_width=None, crop_height=None, resize="official")
    c = rec.camera
    skipped = 0
    for label in range(rec.num_labels):
        want = official_sample(img.copy(), [c.fx, c.fy, c.cx, c.cy, c.width, c.height], rec.pixels[label].tolist(),
                               float(rec.depth[label]), f_uni)
        got = make_sample(rec, label, cam_opts, PROMPT, _cache_with(rec, img))
        if want is None:
            assert isinstance(got, str), (label, rec.pixels[label])
            skipped += 1
            continue
        assert isinstance(got, Sample), (label, rec.pixels[label], got)
        w_img, (wx, wy), w_q, w_a, w_cam = want
        assert (got.query.x, got.query.y) == (wx, wy)
        assert got.image.size == w_img.size
        assert np.array_equal(np.asarray(got.image), np.asarray(w_img)), label
        assert got.question == w_q and got.answer == w_a
        assert got.query.camera.as_list() == w_cam
    return skipped


@pytest.mark.parametrize("f_uni", [750.0, 333.0, 90.0])
@pytest.mark.parametrize("make_image", [noise_image, gradient_image])
def test_eval_samples_equal_the_official_code(f_uni, make_image):
    # fx == fy: no undistortion, so no OpenCV needed; a down- (750 / 1000), up- (333 / 201.5) and odd resize
    cams = {750.0: cm.Camera(1000.0, 1000.0, 96.3, 71.8, 192, 144),
            333.0: cm.Camera(201.5, 201.5, 60.0, 41.25, 120, 90),
            90.0: cm.Camera(61.0, 61.0, 33.7, 22.2, 64, 48)}
    c = cams[f_uni]
    rng = np.random.default_rng(int(f_uni))
    pixels = np.concatenate([rng.uniform(0, [c.width - 1, c.height - 1], (12, 2)),
                             rng.integers(0, [c.width, c.height], (12, 2)),
                             [[0, 0], [c.width - 1, c.height - 1], [c.cx, c.cy], [7.5, 9.25]]])
    rec = _record(c, pixels)
    _check_same(rec, make_image(c.width, c.height), f_uni)


def test_fx_within_tolerance_of_fy_is_not_undistorted(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # any use of OpenCV would fail
    c = cm.Camera(120.0, 120.0009, 50.5, 40.5, 100, 80)
    rec = _record(c, [[50, 40], [10.2, 70.9], [93.0, 5.0]])
    assert cm.official_transform(c, 90.0).undistorted is None
    _check_same(rec, noise_image(100, 80, seed=3), 90.0)


def test_fx_not_fy_is_undistorted_as_the_official_code():
    pytest.importorskip("cv2", reason="the undistortion step needs opencv-python-headless (pip install -e '.[official]')")
    for c, f_uni in [(cm.Camera(35.0, 45.0, 19.0, 20.5, 40, 40), 60.0),
                     (cm.Camera(718.856, 718.3, 96.19, 55.21, 190, 110), 750.0),
                     (cm.Camera(91.7, 83.3, 47.9, 31.1, 96, 64), 133.0)]:
        t = cm.official_transform(c, f_uni)
        assert t.undistorted is not None
        assert t.camera.fy != f_uni  # pixels stay non-square: only fx is unified
        rng = np.random.default_rng(1)
        rec = _record(c, rng.uniform(0, [c.width - 1, c.height - 1], (20, 2)))
        _check_same(rec, noise_image(c.width, c.height, seed=2), f_uni)


def test_missing_opencv_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    c = cm.Camera(50.0, 55.0, 20.0, 20.0, 40, 40)
    cm.official_transform.cache_clear()
    with pytest.raises(ImportError, match=r"pip install opencv-python-headless"):
        cm.official_transform(c, 60.0)
    cm.official_transform.cache_clear()


def test_labels_near_the_border_are_skipped_exactly_where_the_official_code_skips():
    c = cm.Camera(80.0, 80.0, 31.6, 23.4, 64, 48)
    img = noise_image(64, 48, seed=5)
    # every quarter pixel of the image: the skip decision and the marked pixel agree everywhere
    xs, ys = np.meshgrid(np.arange(0, 63.01, 0.25), np.arange(0, 47.01, 0.25))
    rec = _record(c, np.stack([xs.ravel(), ys.ravel()], 1))
    drawable = 0
    for label in range(rec.num_labels):
        want = official_sample(img.copy(), [c.fx, c.fy, c.cx, c.cy, c.width, c.height],
                               rec.pixels[label].tolist(), 1.0, 100.0)
        t = camera_transform(rec, CameraOptions(f_uni=100.0, resize="official"))
        (x, y), size = t.point(*rec.pixels[label]), t.size
        ok = fits(PROMPT.marker, x, y, size.width, size.height)
        assert ok == (want is not None), rec.pixels[label]
        if ok:
            drawable += 1
            assert (x, y) == want[1]
    assert 0 < drawable < rec.num_labels
    # and whole samples, on a few labels on either side of the border
    edge = _record(c, [[3.9, 20], [4.0, 20], [4.1, 20], [55.9, 20], [56.0, 20], [30, 3.9], [30, 4.0], [30, 40.0]])
    assert 0 < _check_same(edge, img, 100.0) < edge.num_labels


def test_train_crop_is_a_crop_of_the_official_image():
    c = cm.Camera(100.0, 100.0, 60.5, 45.5, 120, 90)
    rec = _record(c, [[60, 45], [20.7, 70.2]])
    img = noise_image(120, 90, seed=7)
    opts = CameraOptions(f_uni=130.0, crop_width=(60, 100), crop_height=(50, 80), resize="official")
    for label in range(2):
        whole = official_sample(img.copy(), [c.fx, c.fy, c.cx, c.cy, c.width, c.height],
                                rec.pixels[label].tolist(), float(rec.depth[label]), 130.0)
        full = np.asarray(whole[0])
        for seed in range(5):
            s = make_sample(rec, label, opts, PROMPT, _cache_with(rec, img), np.random.default_rng(seed))
            x0, y0 = round(whole[4][2] - s.query.camera.cx), round(whole[4][3] - s.query.camera.cy)
            w, h = s.image.size
            assert np.array_equal(np.asarray(s.image), full[y0:y0 + h, x0:x0 + w])
            assert (s.query.x + x0, s.query.y + y0) == whole[1]


def test_official_marker_stencil():
    img = np.zeros((20, 20, 3), np.uint8)
    draw(img, 10, 10, MarkerStyle("official_arrow"))
    red = {(int(x), int(y)) for y, x in zip(*np.nonzero((img == [255, 0, 0]).all(-1)))}
    assert red == {(5, 10), (6, 10), (7, 10), (8, 10), (9, 10), (8, 9), (8, 11), (7, 8), (7, 12)}
    assert footprint(MarkerStyle("official_arrow")) == (5, 5, 5, 5)
    assert fits(MarkerStyle("official_arrow"), 5, 5, 11, 11) and not fits(MarkerStyle("official_arrow"), 5, 5, 10, 11)


def make_target(depth):
    return answer(Query("depth", cm.Camera(1, 1, 0, 0, 2, 2), 0, 0, depth), strategy="unify_focal",
                  template="official")


def test_official_words_and_parser():
    q = Query("depth", cm.Camera(1, 1, 0, 0, 2, 2), 0, 0, 3.4567)
    assert question(q, reference="marker", strategy="unify_focal", template="official") == QUESTION
    target = make_target(3.4567)
    assert target == ("<think> The point is around 3.46 meters away from the camera. </think>\n\n"
                      "<answer> 3.46 </answer>")
    assert parse_answer(target) == 3.46
    assert parse_answer("<think> The point is around 12.00 meters away from the camera. </think>\n\n"
                       "<answer> 12.00 </answer>") == 12.0
    assert format_reward([target], require_think=True) == [1.0]
    with pytest.raises(ValueError, match="official"):
        question(q, reference="marker", strategy="predict_rays", template="official")
    for prompt in ({"template": "official", "reference": "text"}, {"template": "official", "task": "axis_depth"}):
        with pytest.raises(ValueError, match="official"):  # checked once, at load (config.validate)
            experiment_from_dict({"prompt": prompt})
    with pytest.raises(ValueError, match="resize"):
        CameraOptions(resize="official", strategy="direct")
    with pytest.raises(ValueError, match="resize"):
        CameraOptions(resize="nearest")


def test_eval_preset_loads_without_downloads():
    exp = load_experiment(ROOT / "experiments" / "eval_depthlm_official.yaml")
    cam, prompt = exp.camera, exp.prompt
    assert exp.model.name == "facebook/DepthLM"
    assert (cam.strategy, cam.f_uni, cam.resize, cam.crop_width, cam.crop_height) == \
        ("unify_focal", 750, "official", None, None)
    assert (prompt.template, prompt.task, prompt.reference) == ("official", "depth", "marker")
    assert prompt.marker == MarkerStyle("official_arrow", 5, (255, 0, 0))
    assert exp.eval.samples_per_dataset == 8192
    assert [d.name for d in exp.data.eval] == ["nyuv2", "ibims1", "sunrgbd", "eth3d", "kitti", "ddad",
                                                  "argoverse2", "nuscenes"]



def official_arrow(image, x, y) -> bool:
    """The official "-->" drawn in place with putpixel where it fits 5 px from every border (else False)."""
    if not (5 <= x < image.width - 5 and 5 <= y < image.height - 5):
        return False
    for dx in range(1, 6):
        image.putpixel((x - dx, y), (255, 0, 0))
    for dy in range(1, 3):
        image.putpixel((x - dy - 1, y + dy), (255, 0, 0))
        image.putpixel((x - dy - 1, y - dy), (255, 0, 0))
    return True


def official_train_sample(image, intrinsics, coord, depth, f_uni, crop_w, crop_h):
    """dataset_train.getitem_noTaskonomy (fx == fy) at a drawn crop size: resize the whole image, map the pixel,
    "Random center crop", drop a label outside it, then the arrow on the crop. None where the label is skipped."""
    scale = f_uni / intrinsics[0]
    new = [v * scale for v in intrinsics[:4]]
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    x = int((coord[0] - intrinsics[2]) * (new[0] / intrinsics[0]) + new[2])
    y = int((coord[1] - intrinsics[3]) * (new[1] / intrinsics[1]) + new[3])
    width, height = image.size
    crop_h, crop_w = int(min(height, crop_h)), int(min(width, crop_w))
    left, top = max(0, (width - crop_w) // 2), max(0, (height - crop_h) // 2)
    right, bottom = min(width, left + crop_w), min(height, top + crop_h)
    image = image.crop((left, top, right, bottom))
    new = [new[0], new[1], new[2] - left, new[3] - top, image.width, image.height]
    if not (left <= x < right and top <= y < bottom):
        return None
    x, y = x - left, y - top
    if not official_arrow(image, x, y):
        return None
    target = f"<think> The point is around {depth:.2f} meters away from the camera. </think>\n\n<answer> {depth:.2f} </answer>"
    return image, (x, y), target, new


@pytest.mark.parametrize("crop", [(70, 50), (71, 49), (200, 200)])
def test_center_train_crop_equals_the_official_rule(crop):
    c = cm.Camera(100.0, 100.0, 60.5, 45.5, 120, 90)
    rng = np.random.default_rng(3)
    rec = _record(c, np.concatenate([rng.uniform(0, [119, 89], (40, 2)), [[60.5, 45.5], [2, 3]]]))
    img = noise_image(120, 90, seed=11)
    opts = CameraOptions(f_uni=130.0, crop_width=(crop[0], crop[0]), crop_height=(crop[1], crop[1]),
                         resize="official", crop="center")
    kept = 0
    for label in range(rec.num_labels):
        want = official_train_sample(img.copy(), [c.fx, c.fy, c.cx, c.cy], rec.pixels[label].tolist(),
                                     float(rec.depth[label]), 130.0, *crop)
        got = make_sample(rec, label, opts, PROMPT, _cache_with(rec, img), np.random.default_rng(label))
        if want is None:
            assert got == "marker_outside_crop", label
            continue
        kept += 1
        w_img, (wx, wy), w_target, w_cam = want
        assert isinstance(got, Sample), (label, got)
        assert (got.query.x, got.query.y) == (wx, wy)
        assert np.array_equal(np.asarray(got.image), np.asarray(w_img)), label
        assert got.query.camera.as_list() == pytest.approx(w_cam)
        assert got.question == QUESTION and got.answer == w_target
    assert 0 < kept < rec.num_labels


def test_paper_recipe_renders_what_the_official_dataset_train_renders():
    """experiments/paper/qwen2_5_vl_3b_sft.yaml's conventions, crop range collapsed to one size, on hand-made records."""
    exp = load_experiment(ROOT / "experiments/paper/qwen2_5_vl_3b_sft.yaml",
                          ["camera.crop_width=[1000,1000]", "camera.crop_height=[700,700]"])
    c = cm.Camera(500.0, 500.0, 301.5, 207.25, 600, 420)  # resized x2 to 1200 x 840, then the centered 1000 x 700
    rng = np.random.default_rng(8)
    rec = _record(c, np.concatenate([rng.uniform(0, [599, 419], (30, 2)), [[40.0, 30.0], [590.0, 400.0]]]))
    img = noise_image(600, 420, seed=4)
    kept = 0
    for label in range(rec.num_labels):
        want = official_train_sample(img.copy(), [c.fx, c.fy, c.cx, c.cy], rec.pixels[label].tolist(),
                                     float(rec.depth[label]), 1000.0, 1000, 700)
        got = make_sample(rec, label, exp.camera, exp.prompt, _cache_with(rec, img), np.random.default_rng(label))
        if want is None:
            assert got == "marker_outside_crop", label
            continue
        kept += 1
        assert isinstance(got, Sample) and got.image.size == (1000, 700)
        assert np.array_equal(np.asarray(got.image), np.asarray(want[0])), label
        assert (got.query.x, got.query.y) == want[1] and got.question == QUESTION and got.answer == want[2]
    assert 0 < kept < rec.num_labels


@pytest.mark.parametrize("name, switch, template", [("qwen2_5_vl_3b_sft", "_paper_kit.yaml", "sft"),
                                                    ("qwen2_5_vl_3b_grpo", "_paper_kit_grpo.yaml", "grpo")])
def test_one_line_switches_a_paper_recipe_to_the_kits_conventions(tmp_path, name, switch, template):
    paper = ROOT / "experiments/paper"
    text = (paper / f"{name}.yaml").read_text()
    assert f"\nextends: _paper.yaml   # {switch}: the kit's own conventions" in text  # the line names its switch
    recipe = tmp_path / "kit.yaml"
    recipe.write_text(text.replace("\nextends: _paper.yaml", f"\nextends: {paper / switch}"))
    kit, official = load_experiment(recipe), load_experiment(paper / f"{name}.yaml")
    assert (kit.camera.resize, kit.camera.crop, kit.camera.multiple_of) == ("exact", "random", 28)
    assert (kit.prompt.template, kit.prompt.marker.shape) == (template, "arrow")
    assert kit.data == official.data and kit.train == official.train  # only the conventions change
    assert kit.rewards == official.rewards and kit.reward_kwargs == official.reward_kwargs


def test_center_crop_size_is_drawn_as_the_official_code_draws_it():
    # int(min(side, uniform(lo, hi))) for the width, then the height: every float draw truncated, never rounded
    c = cm.Camera(100.0, 100.0, 60.5, 45.5, 120, 90)  # resized to 156 x 117 at f_uni 130
    rec = _record(c, [[60.5, 45.5]])
    img = noise_image(120, 90, seed=2)
    opts = CameraOptions(f_uni=130.0, crop_width=(60, 150), crop_height=(50, 200), resize="official", crop="center")
    sizes = set()
    for seed in range(40):
        got = make_sample(rec, 0, opts, PROMPT, _cache_with(rec, img), np.random.default_rng(seed))
        draw = np.random.default_rng(seed)
        w, h = int(min(156, draw.uniform(60, 150))), int(min(117, draw.uniform(50, 200)))
        assert got.image.size == (w, h) and got.query.camera.cx == pytest.approx(78.65 - (156 - w) // 2)
        sizes.add((w, h))
    assert len(sizes) > 30 and any(h == 117 for _, h in sizes)  # drawn over the range, capped at the image


def official_taskonomy_sample(image, intrinsics, coord, depth, f_uni, ratio):
    """dataset_train.getitem_Taskonomy (fx == fy) with its aspect ratio drawn as ``ratio``: resize to f_uni, resize
    the height to int(width / ratio) with fy and cy scaled, map the pixel, no crop, the arrow. None where skipped."""
    fx, fy, cx, cy = intrinsics
    scale = f_uni / fx
    new = [fx * scale, fy * scale, cx * scale, cy * scale]
    height = int(image.height * scale)
    image = image.resize((int(image.width * scale), height))
    new_height = int(image.width / ratio)
    image = image.resize((image.width, new_height))
    new[1] *= new_height / height
    new[3] *= new_height / height
    x = int((coord[0] - cx) * (new[0] / fx) + new[2])
    y = int((coord[1] - cy) * (new[1] / fy) + new[3])
    if not official_arrow(image, x, y):
        return None
    return image, (x, y), new + [image.width, image.height]


def test_taskonomy_aspect_jitter_equals_the_official_rule():
    c = cm.Camera(100.0, 100.0, 60.5, 45.5, 120, 90)  # 156 x 117 at f_uni 130, then 156 x int(156 / r)
    rng = np.random.default_rng(6)
    rec = _record(c, np.concatenate([rng.uniform(0, [119, 89], (30, 2)), [[60.5, 45.5]]]))
    img = noise_image(120, 90, seed=9)
    opts = CameraOptions(f_uni=130.0, crop_width=None, crop_height=None, resize="official")
    heights = set()
    for label in range(rec.num_labels):
        ratio = np.random.default_rng(label).uniform(1.0, 1.3)  # the kit's first draw of that generator
        want = official_taskonomy_sample(img.copy(), [c.fx, c.fy, c.cx, c.cy], rec.pixels[label].tolist(), 1.0,
                                         130.0, ratio)
        got = make_sample(rec, label, opts, PROMPT, _cache_with(rec, img), np.random.default_rng(label),
                          aspect=(1.0, 1.3))
        if want is None:
            assert isinstance(got, str), label
            continue
        w_img, (wx, wy), w_cam = want
        heights.add(w_img.height)
        assert isinstance(got, Sample) and (got.query.x, got.query.y) == (wx, wy), label
        assert np.array_equal(np.asarray(got.image), np.asarray(w_img)), label
        assert got.query.camera.as_list() == pytest.approx(w_cam)
    assert len(heights) > 5 and max(heights) <= 156 and min(heights) >= int(156 / 1.3)


def test_the_paper_recipes_feed_taskonomy_as_the_official_code_does():
    from rlkit.builder import TrainStream, load_source

    exp = load_experiment(ROOT / "experiments/paper/qwen2_5_vl_3b_sft.yaml")
    taskonomy = next(s for s in exp.data.train if s.label == "taskonomy")
    assert taskonomy.aspect_jitter == (1.0, 1.3) and taskonomy.train_crop is False
    assert all(s.aspect_jitter is None and s.train_crop for s in exp.data.train if s.label != "taskonomy")
    # through the stream: a dataset with train_crop false is never cropped; its height is stretched
    src = load_source(dataclasses.replace(taskonomy, path=str(OFFICIAL)))
    stream = TrainStream([src], dataclasses.replace(exp.camera, f_uni=60.0, crop_width=(20, 30), crop_height=(20, 30)),
                         exp.prompt)
    ratios = set()
    for i in range(12):
        s = stream.sample(i)
        whole = cm.official_transform(s.record.camera, 60.0).camera  # before the stretch: no crop of the width
        assert s.image.width == whole.width and int(whole.width / 1.3) <= s.image.height <= whole.width
        ratios.add(round(s.image.width / s.image.height, 2))
    assert len(ratios) > 3
