import json
from pathlib import Path

import numpy as np

from rlkit.camera import Camera, ray_directions
from rlkit.records import load_records
from rlkit.synth import CameraRange, Rooms, generate_split
from rlkit.synth.render import Box, Scene, render
from rlkit.synth.scenes import FURNITURE, indoor_scene


def test_ground_plane_depth_is_exact():
    cam = Camera(100.0, 120.0, 39.5, 29.5, 80, 60)
    h = 1.5
    scene = Scene("test", [], np.array([0.0, h, 0.0]), yaw=0.3, pitch=0.0, roll=0.0, camera=cam,
                  ground={"kind": "plain", "color": (100, 100, 100)})
    _, depth, axis = render(scene)
    v = np.arange(cam.height)
    below = v > cam.cy
    # level camera: the ray of row v drops (v - cy)/fy per unit forward, so it meets the ground at z = h*fy/(v-cy)
    expected_axis = h * cam.fy / (v[below] - cam.cy)
    np.testing.assert_allclose(axis[below, 0], expected_axis)
    rays = ray_directions(cam, np.stack([np.zeros(below.sum()), v[below]], 1))
    np.testing.assert_allclose(depth[below, 0], expected_axis / rays[:, 2])
    assert np.isinf(depth[~below]).all()  # sky


def test_box_face_depth():
    cam = Camera(50.0, 50.0, 10.0, 10.0, 21, 21)
    box = Box(np.array([-1.0, 0.0, 4.0]), np.array([1.0, 2.0, 5.0]), {"kind": "plain", "color": (200, 0, 0)})
    scene = Scene("test", [box], np.array([0.0, 1.0, 0.0]), 0.0, 0.0, 0.0, cam)
    rgb, depth, axis = render(scene)
    assert axis[10, 10] == 4.0 and depth[10, 10] == 4.0  # straight ahead at the front face
    assert rgb[10, 10, 0] > 100 and rgb[10, 10, 1] == 0


def test_lamp_brightness_falls_with_the_square_of_distance():
    cam = Camera(50.0, 50.0, 10.0, 10.0, 21, 21)
    wall = {"kind": "plain", "color": (200, 200, 200)}

    def center(z, lamp):
        box = Box(np.array([-9.0, -9.0, z]), np.array([9.0, 9.0, z + 1.0]), wall)
        rgb, depth, _ = render(Scene("test", [box], np.zeros(3), 0.0, 0.0, 0.0, cam, lamp=lamp))
        return rgb[10, 10, 0], depth

    # a facing surface gets irradiance e = (lamp / d)^2, shown as 0.15 + 0.85 * e / (1 + e)
    for z, e in ((1.0, 4.0), (2.0, 1.0), (4.0, 1 / 4), (8.0, 1 / 16)):
        expected = 0.15 + 0.85 * e / (1 + e)
        value, depth = center(z, 2.0)
        assert abs(int(value) - 200 * expected) <= 1
        assert depth[10, 10] == z
    assert np.array_equal(center(8.0, 2.0)[1], center(8.0, 0.0)[1])  # light changes colour, never depth


def test_color_jitter_narrows_the_paints_and_nothing_else():
    cam = Camera(50.0, 50.0, 10.0, 10.0, 21, 21)
    catalogue = {base for _, _, base, _ in FURNITURE} | {(205, 200, 185), (160, 120, 80), (90, 70, 50)}

    def paints(seed, jitter):
        scene = indoor_scene(np.random.default_rng(seed), cam, Rooms(lamp=4.0, color_jitter=jitter))
        tex = [b.texture for b in scene.boxes]
        return scene, [t["color"] for t in tex] + [tex[1]["color2"]]  # walls, floor, furniture; floor's 2nd

    for seed in range(5):
        full, full_paints = paints(seed, 1.0)
        fixed, fixed_paints = paints(seed, 0.0)
        assert set(fixed_paints) <= catalogue  # no jitter: every paint is its catalogue color
        assert len(set(full_paints) - catalogue) > 0
        # the same room otherwise: geometry, camera and light do not depend on the paints
        assert [b.lo.tolist() for b in full.boxes] == [b.lo.tolist() for b in fixed.boxes]
        assert (full.position == fixed.position).all() and full.lamp == fixed.lamp == 4.0
        quarter = paints(seed, 0.25)[1]
        assert max(abs(a - b) for p, f in zip(quarter, fixed_paints) for a, b in zip(p, f)) <= 40 // 4


def test_generate_is_deterministic_and_splits_never_share_scenes(tmp_path):
    cam = CameraRange(width=(64, 96))
    a = generate_split(tmp_path / "a", "outdoor", "train", 3, seed=5, points_per_image=4, camera=cam, progress=False)
    b = generate_split(tmp_path / "b", "outdoor", "train", 3, seed=5, points_per_image=4, camera=cam, progress=False)
    e = generate_split(tmp_path / "a", "outdoor", "eval", 3, seed=5, points_per_image=4, camera=cam, progress=False)
    v = generate_split(tmp_path / "a", "outdoor", "val", 3, seed=5, points_per_image=4, camera=cam, progress=False)
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a/rgb/outdoor_train/000002.png").read_bytes() == \
        (tmp_path / "b/rgb/outdoor_train/000002.png").read_bytes()
    scenes = lambda p: {json.loads(line)["scene"] for line in p.read_text().splitlines()}  # noqa: E731
    assert not scenes(a) & scenes(e) and not scenes(v) & (scenes(a) | scenes(e))  # validation: never an eval scene
    assert (tmp_path / "a/rgb/outdoor_val/000000.png").read_bytes() != \
        (tmp_path / "a/rgb/outdoor_eval/000000.png").read_bytes()
    recs, _ = load_records(a)  # the official format, loadable by the same reader
    assert all(r.num_labels == 4 and (r.depth <= 80).all() for r in recs)
    assert all((r.extras["axis_depth"] <= r.depth + 1e-3).all() for r in recs)


def test_synth_covers_focal_lengths_and_depth_ranges(synth_dir):
    indoor, _ = load_records(synth_dir / "indoor_train.jsonl")
    outdoor, _ = load_records(synth_dir / "outdoor_train.jsonl")
    fx = np.array([r.camera.fx / r.camera.width for r in indoor + outdoor])
    assert fx.max() / fx.min() > 1.5  # a real spread of fields of view
    d_in = np.concatenate([r.depth for r in indoor])
    d_out = np.concatenate([r.depth for r in outdoor])
    assert 0.3 < d_in.min() and d_in.max() < 20 and np.median(d_out) > np.median(d_in)


def test_render_scenes_renders_once_and_again_when_the_rooms_change(tmp_path):
    from rlkit.config import load_experiment
    from rlkit.run import render_scenes

    root = Path(__file__).resolve().parents[1]
    synth = f"{{out: {tmp_path}, train_images: 2, eval_images: 1, points: 2, width: [48, 64]}}"

    def run(lamp, jitter=1.0):
        exp = load_experiment(root / "experiments/sft_synthetic.yaml", [
            f"data.synth={synth}", f"data.synth.indoor_lamp={lamp}", f"data.synth.indoor_color_jitter={jitter}"])
        render_scenes(exp)
        return json.loads((tmp_path / "indoor_train.synth.json").read_text()), \
            (tmp_path / "rgb/indoor_train/000000.png").read_bytes(), \
            (tmp_path / "outdoor_train.synth.json").stat().st_mtime_ns

    manifest, unlit, outdoor = run(0)
    # room options at their defaults stay out of the manifest: a manifest without them is a default split
    assert "indoor_lamp" not in manifest and "indoor_color_jitter" not in manifest
    assert run(0)[1:] == (unlit, outdoor)  # nothing rendered again
    manifest, lit, outdoor_again = run(4)
    assert manifest["indoor_lamp"] == 4 and lit != unlit
    assert outdoor_again == outdoor  # the lamp lights rooms only
    manifest, narrow, outdoor_again = run(4, 0.25)
    assert manifest["indoor_color_jitter"] == 0.25 and narrow not in (lit, unlit) and outdoor_again == outdoor


def test_validation_scenes_render_only_when_asked(tmp_path):
    from rlkit.run import render_synth
    from rlkit.schema import SynthConfig

    cfg = dict(out=str(tmp_path), families=["outdoor"], train_images=2, eval_images=1, points=2, width=[48, 64])
    assert [p.name for p in render_synth(SynthConfig(**cfg))] == ["outdoor_train.jsonl", "outdoor_eval.jsonl"]
    assert not (tmp_path / "outdoor_val.jsonl").exists()
    eval_bytes = (tmp_path / "outdoor_eval.jsonl").read_bytes()
    paths = render_synth(SynthConfig(**cfg, val_images=2))
    assert [p.name for p in paths] == ["outdoor_train.jsonl", "outdoor_eval.jsonl", "outdoor_val.jsonl"]
    assert json.loads((tmp_path / "outdoor_val.synth.json").read_text())["images"] == 2
    assert (tmp_path / "outdoor_eval.jsonl").read_bytes() == eval_bytes  # the eval scenes are not touched
    assert len((tmp_path / "outdoor_val.jsonl").read_text().splitlines()) == 2
