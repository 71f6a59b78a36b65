"""The records store (rlkit.store): the list loader's records, selections, reports and errors, read from
memory-mapped columns; images checked when a sample is built. The reference functions below are the
list-based code the store replaced, kept here to compare against."""

import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rlkit import store as store_mod
from rlkit import markers
from rlkit.builder import (EvalSet, ImageCache, Sample, TrainStream, camera_transform, label_values, load_source,
                          make_sample, select_eval)
from rlkit.schema import CameraOptions, DatasetSpec, PromptOptions
from rlkit.evaluate import drop_skipped, selection_frame, train_medians
from rlkit.markers import MarkerStyle
from rlkit.records import ImageError, Record, RecordError, load_records, open_image
from rlkit.store import build_columns, open_records

from conftest import OFFICIAL, write_experiment

ROOT = Path(__file__).parent.parent


# ---------------------------------------------------------------- the list-based reference


def _old_source(path, spec: DatasetSpec, seed=0, skip_invalid=False):
    records, report = load_records(path, root=spec.root, dataset=spec.label, skip_invalid=skip_invalid,
                                   check_images=False)
    if spec.images is not None:
        order = np.random.default_rng([seed, 7]).permutation(len(records))
        records = [records[i] for i in sorted(order[: spec.images])]
    if spec.points_per_image is not None:
        k = spec.points_per_image
        records = [Record(r.image, r.camera, r.pixels[:k], r.depth[:k], r.dataset, r.source,
                          {key: (v[:k] if isinstance(v, np.ndarray) else v) for key, v in r.extras.items()})
                   for r in records]
    return records, report.summary()


def _label_drawable(rec, label, cam_opts, prompt_opts, style) -> bool:
    """One label at a time, through the per-camera transform (the selection's vectorized form must agree)."""
    if prompt_opts.reference != "marker":
        return True
    t = camera_transform(rec, cam_opts)
    return markers.fits(style, *t.point(*rec.pixels[label]), t.size.width, t.size.height)


def _old_select_eval(record_lists, labels, cam_opts, prompt_opts, n, seed):
    items, skipped = [], {}
    for d, records in enumerate(record_lists):
        counts = np.array([r.num_labels for r in records])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        order = np.random.default_rng([seed, d, 11]).permutation(int(offsets[-1]))
        skips, chosen = {}, 0
        for flat in order:
            if chosen == n:
                break
            r = int(np.searchsorted(offsets, flat, side="right") - 1)
            label = int(flat - offsets[r])
            if not _label_drawable(records[r], label, cam_opts, prompt_opts, prompt_opts.marker):
                skips["marker_outside_image"] = skips.get("marker_outside_image", 0) + 1
                continue
            items.append((d, r, label))
            chosen += 1
        skipped[labels[d]] = skips
    return items, skipped


def _old_sample(record_lists, p, cam_opts, prompt_opts, seed, i, images, shuffle=False):
    rng = np.random.default_rng([seed, i])
    for _ in range(100):
        records = record_lists[int(rng.choice(len(record_lists), p=p))]
        rec = records[int(rng.integers(len(records)))]
        out = make_sample(rec, int(rng.integers(rec.num_labels)), cam_opts, prompt_opts, images, rng)
        if isinstance(out, Sample):
            if shuffle:
                other = records[int(rng.integers(len(records)))]
                values = label_values(other, prompt_opts.task)
                return out, float(values[int(rng.integers(len(values)))])
            return out, None
    raise AssertionError("no sample")


def _same_record(a: Record, b: Record):
    assert (a.image, a.camera, a.dataset, a.source) == (b.image, b.camera, b.dataset, b.source)
    assert a.pixels.dtype == b.pixels.dtype == np.float64 and a.depth.dtype == b.depth.dtype == np.float64
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert set(a.extras) == set(b.extras)
    for k, v in a.extras.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, b.extras[k])
        else:
            assert v == b.extras[k] and type(v) is type(b.extras[k])


def _mixed_jsonl(path: Path, n=400) -> Path:
    """Lines of every kind the loader meets: repairs, bad lines, blank lines, a byte-order mark, CRLF
    endings, extras and per-label keys on some lines only, a depth map path."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(n):
        k = int(rng.integers(1, 6))
        row = {"image": f"rgb/{i}.png", "intrinsics": [0.0 if i % 7 == 3 else 60.0, 60.0, 31.5, 23.5, 64, 48],
               "pixel_coords": rng.integers(0, 48, (k, 2)).tolist(), "depth": np.round(rng.uniform(0.5, 50, k), 3).tolist()}
        if 100 < i < 180:
            row["axis_depth"] = np.round(rng.uniform(0.5, 50, k), 3).tolist()
        if 200 < i < 230:
            row["scene"] = f"room-{i}"
            row["tags"] = {"a": [1, 2.5, None]}
        if i == 250:
            row["depth_map"] = "depth/250.npz"
        text = json.dumps(row)
        if i % 37 == 5:
            text = text.replace('"depth": [', '"depth": [-1.0, ')  # 'depth': one value too many
        if i % 53 == 9:
            text = "{not json"
        if i % 61 == 0:
            text = ""
        lines.append(text)
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\n")
    return path


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize("name", ["official", "synth_indoor", "synth_outdoor_eval", "mixed"])
def test_store_records_equal_the_loaders(tmp_path, synth_dir, name):
    path = {"official": OFFICIAL, "synth_indoor": synth_dir / "indoor_train.jsonl",
            "synth_outdoor_eval": synth_dir / "outdoor_eval.jsonl", "mixed": None}[name]
    if path is None:
        path = _mixed_jsonl(tmp_path / "mixed.jsonl")
    skip = name == "mixed"
    records, report = load_records(path, skip_invalid=skip, check_images=False)
    src = load_source(DatasetSpec(str(path), name="ds"), skip_invalid=skip)
    assert src.report == {**report.summary(), "path": str(path)}
    assert len(src) == len(records) and len(src.records) == len(records)
    for i, rec in enumerate(records):
        _same_record(src.record(i), Record(rec.image, rec.camera, rec.pixels, rec.depth, "ds", rec.source,
                                           rec.extras))
    if skip:
        assert report.skipped["depth"] > 0 and report.skipped["<json>"] > 0 and report.repaired["fx0_as_fy"] > 0
        assert isinstance(src.record(next(i for i, r in enumerate(records) if "depth_map" in r.extras))
                          .extras["depth_map"], Path)


def test_parallel_conversion_writes_the_same_columns(tmp_path):
    path = _mixed_jsonl(tmp_path / "mixed.jsonl", n=1500)
    one = build_columns(path, tmp_path / "one", path.parent, skip_invalid=True, allow_outside_root=False)
    many = build_columns(path, tmp_path / "many", path.parent, skip_invalid=True, allow_outside_root=False, workers=3,
                   part_bytes=path.stat().st_size // 9)  # 9 ranges: per-label keys and extras in some only
    assert one == many
    for name in one["columns"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
    assert {"label.axis_depth", "image.has.axis_depth", "image.extras"} <= set(one["columns"])
    with pytest.raises(RecordError) as e:  # without skip_invalid: the file's first bad line, from any range
        build_columns(path, tmp_path / "strict", path.parent, skip_invalid=False, allow_outside_root=False, workers=3,
                part_bytes=path.stat().st_size // 9)
    assert str(e.value) == one["errors"][0]


def test_a_changed_jsonl_is_converted_again_an_unchanged_one_is_not(tmp_path, monkeypatch):
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    path = tmp_path / "t.jsonl"
    shutil.copy(OFFICIAL, path)
    first = open_records(path)
    monkeypatch.setattr(store_mod, "build_columns", lambda *a, **k: pytest.fail("converted again"))
    assert open_records(path).folder == first.folder
    monkeypatch.undo()

    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[0]]) + "\n")  # another size
    grown = open_records(path)
    assert grown.folder != first.folder and len(grown) == 4

    text = path.read_text()
    assert '"depth": [2.5,' in text
    path.write_text(text.replace('"depth": [2.5,', '"depth": [3.5,', 1))  # the same size, a new mtime
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    edited = open_records(path)
    assert edited.folder not in (first.folder, grown.folder) and edited.record(0, "t").depth[0] == 3.5
    assert open_records(path, skip_invalid=True).folder != edited.folder  # validation options are in the key

    # a copy of other labels, same size, its mtime put back (cp -p, touch -r, rsync -t): still converted again
    other = tmp_path / "other.jsonl"
    other.write_text(path.read_text().replace('"depth": [3.5,', '"depth": [4.5,', 1))
    st = path.stat()
    os.replace(other, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    copied = open_records(path)
    assert copied.folder != edited.folder and copied.record(0, "t").depth[0] == 4.5


def _official_copy(tmp_path) -> Path:
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    path = tmp_path / "t.jsonl"
    shutil.copy(OFFICIAL, path)
    return path


@pytest.mark.parametrize("damage", ["manifest_cut", "manifest_gone", "column_cut"])
def test_a_damaged_cache_entry_is_converted_again_with_one_log_line(tmp_path, damage, caplog):
    path, cache = _official_copy(tmp_path), tmp_path / "cache"
    first = open_records(path, cache=cache)
    want = [first.record(i, "t").depth.tolist() for i in range(len(first))]
    store_mod._OPEN.clear()  # as a new process
    folder = first.folder
    if damage == "manifest_cut":
        (folder / "manifest.json").write_text((folder / "manifest.json").read_text()[:40])
    elif damage == "manifest_gone":  # killed between the columns and the manifest of an older layout
        (folder / "manifest.json").unlink()
    else:
        column = max((f for f in folder.iterdir() if f.name != "manifest.json"), key=lambda f: f.stat().st_size)
        column.write_bytes(column.read_bytes()[: column.stat().st_size // 2])
    again = open_records(path, cache=cache)
    assert [again.record(i, "t").depth.tolist() for i in range(len(again))] == want
    if damage != "manifest_gone":
        assert "cannot be read" in caplog.text and "converting the file again" in caplog.text
    store_mod._OPEN.clear()
    assert open_records(path, cache=cache).folder == folder  # and stays good


def test_a_cache_folder_that_cannot_be_written_is_one_error_naming_the_variable(tmp_path, monkeypatch):
    path = _official_copy(tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RecordError, match=r"records cache .*a_file cannot be written.*RLKIT_RECORDS_CACHE"):
        open_records(path, cache=tmp_path / "a_file")
    full = tmp_path / "full"

    def no_space(src, out, *a, **k):
        raise OSError(28, "No space left on device", str(out / "image.fx"))

    monkeypatch.setattr(store_mod, "build_columns", no_space)
    with pytest.raises(RecordError, match=r"records cache .*full cannot be written \(No space left on device\)"):
        open_records(path, cache=full)
    assert not any(full.glob("*.tmp-*"))  # nothing half-written left behind


def test_bad_lines_name_file_line_and_field_and_skips_are_counted(tmp_path):
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    good = json.loads(OFFICIAL.read_text().splitlines()[0])
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [good, {**good, "depth": [0.0, 1.0, 1.0]}, {**good, "image": 3},
                                                   good]) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field 'depth': label 0 is 0.0"):
        load_source(DatasetSpec(str(p)))
    src = load_source(DatasetSpec(str(p)), skip_invalid=True)
    assert src.report["skipped"] == {"depth": 1, "image": 1} and src.report["loaded"] == 2
    assert [src.record(i).source for i in range(2)] == [f"{p}:1", f"{p}:4"]
    assert src.store.errors == [f"{p}:2: field 'depth': label 0 is 0.0; depths must be in (0, 10000] meters",
                                f"{p}:3: field 'image': must be a non-empty path string"]


def test_an_image_path_leaving_the_root_is_an_error_unless_allowed(tmp_path):
    row = {"intrinsics": [60.0, 60.0, 31.5, 23.5, 64, 48], "pixel_coords": [[1, 1]], "depth": [2.0]}
    (tmp_path / "d").mkdir()
    for image in ("../secret.png", "/etc/passwd", "rgb/../../secret.png"):
        p = tmp_path / "d" / "x.jsonl"
        p.write_text(json.dumps({**row, "image": image}) + "\n")
        with pytest.raises(RecordError, match=rf"x.jsonl:1: field 'image': '{image}' is outside the dataset root "
                                              rf"{tmp_path / 'd'}; set allow_outside_root: true"):
            load_source(DatasetSpec(str(p)))
        src = load_source(DatasetSpec(str(p), allow_outside_root=True))
        assert src.record(0).image == (tmp_path / "d" / image).resolve()
    p.write_text(json.dumps({**row, "image": "rgb/../rgb/a.png"}) + "\n")  # stays inside
    assert load_source(DatasetSpec(str(p))).record(0).image == tmp_path / "d" / "rgb" / "a.png"


def test_one_process_converts_the_others_wait_and_share_it(tmp_path):
    path = _mixed_jsonl(tmp_path / "m.jsonl", n=3000)
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        folders = pool.starmap(_open_folder, [(str(path), str(cache))] * 3)
    assert len(set(folders)) == 1
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [Path(folders[0]).name]  # no tmp left


def _open_folder(path, cache):
    return str(open_records(path, skip_invalid=True, cache=cache).folder)


def test_a_source_pickles_as_its_folder_not_its_data(synth_dir):
    src = load_source(DatasetSpec(str(synth_dir / "indoor_train.jsonl")))
    stream = TrainStream([src], CameraOptions(), PromptOptions())
    assert len(pickle.dumps(stream)) < 5000  # datasets fingerprints the stream by pickling it
    again = pickle.loads(pickle.dumps(src))
    _same_record(again.record(3), src.record(3))


# ---------------------------------------------------------------- selections: the same as the list code


@pytest.mark.parametrize("images,points", [(None, None), (5, None), (None, 3), (7, 2), (100, 100)])
def test_label_density_selection_and_train_stream_equal_the_list_code(synth_dir, images, points):
    specs = [DatasetSpec(str(synth_dir / "indoor_train.jsonl"), weight=3.0, images=images, points_per_image=points),
             DatasetSpec(str(synth_dir / "outdoor_train.jsonl"), weight=1.0, images=images, points_per_image=points)]
    sources = [load_source(s, seed=4) for s in specs]
    old = [_old_source(s.path, s, seed=4)[0] for s in specs]
    for src, recs in zip(sources, old):
        assert len(src) == len(recs)
        for i, rec in enumerate(recs):
            _same_record(src.record(i), rec)
            assert src.num_labels(i) == rec.num_labels
    cam = CameraOptions(f_uni=60.0, crop_width=(56, 84), crop_height=(56, 84), multiple_of=28)
    for shuffle in (False, True):
        stream = TrainStream(sources, cam, PromptOptions(), seed=2, shuffle_labels=shuffle)
        cache = ImageCache(8)
        for i in range(40):
            s = stream.sample(i)
            ref, value = _old_sample(old, stream.p, cam, PromptOptions(), 2, i, cache, shuffle)
            assert (s.question, s.record.source, s.label) == (ref.question, ref.record.source, ref.label)
            assert np.array_equal(np.asarray(s.image), np.asarray(ref.image))
            assert s.query.value == (ref.query.value if value is None else value)
    medians = train_medians(sources, ["depth"])["depth"]
    for src, recs in zip(sources, old):
        assert medians[src.spec.label] == float(np.median(np.concatenate([r.depth for r in recs])))
    assert medians["*"] == float(np.median(np.concatenate([r.depth for recs in old for r in recs])))
    assert train_medians(sources, ["axis_depth"])["axis_depth"][sources[0].spec.label] == float(
        np.median(np.concatenate([r.extras["axis_depth"] for r in old[0]])))


EVAL_OPTIONS = [
    (CameraOptions(), PromptOptions()),
    (CameraOptions(f_uni=60.0), PromptOptions(marker=MarkerStyle("square", 9, outline=(255, 255, 255)))),
    (CameraOptions(f_uni=40.0), PromptOptions(marker=MarkerStyle("official_arrow", 5))),
    (CameraOptions(strategy="direct"), PromptOptions(marker=MarkerStyle("cross", 7))),
    (CameraOptions(strategy="predict_rays", f_uni=90.0), PromptOptions(reference="text")),
    (CameraOptions(f_uni=70.0, resize="official"), PromptOptions(marker=MarkerStyle("official_arrow", 5))),
]


@pytest.mark.parametrize("cam,prompt", EVAL_OPTIONS)
@pytest.mark.parametrize("n", [1, 5, 40, 10_000])
def test_eval_selection_equals_the_list_code(synth_dir, cam, prompt, n):
    specs = [DatasetSpec(str(synth_dir / "indoor_eval.jsonl"), name="in"),
             DatasetSpec(str(OFFICIAL), name="off"),
             DatasetSpec(str(synth_dir / "outdoor_eval.jsonl"), name="out", images=4, points_per_image=5)]
    sources = [load_source(s, seed=1) for s in specs]
    old = [_old_source(s.path, s, seed=1)[0] for s in specs]
    items, skipped = select_eval(sources, cam, prompt, n, seed=3)
    ref_items, ref_skipped = _old_select_eval(old, [s.label for s in specs], cam, prompt, n, seed=3)
    assert [(it.dataset, it.record, it.label) for it in items] == ref_items
    assert skipped == ref_skipped

    frame = selection_frame(EvalSet(sources, cam, prompt, n, seed=3))
    rows = [{"task": "depth", "dataset": specs[d].label, "image": str(old[d][r].image), "x": float(old[d][r].pixels[k][0]),
             "y": float(old[d][r].pixels[k][1]), "gt": float(old[d][r].depth[k])} for d, r, k in ref_items]
    pd.testing.assert_frame_equal(frame, pd.DataFrame(rows))


def test_missing_per_label_key_is_the_loaders_error(tmp_path):
    path = _mixed_jsonl(tmp_path / "m.jsonl")
    src = load_source(DatasetSpec(str(path)), skip_invalid=True)
    records, _ = load_records(path, skip_invalid=True, check_images=False)
    first = next(r for r in records if "axis_depth" not in r.extras)
    with pytest.raises(RecordError, match=rf"^{first.source}: field 'axis_depth': missing, and task 'axis_depth'"):
        train_medians([src], ["axis_depth"])


# ---------------------------------------------------------------- images, checked when a sample is built


def _png(path: Path, w: int, h: int, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _bomb(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header claims side x side pixels (PIL refuses it at open, before decoding)."""
    _png(path, 1, 1)
    data = bytearray(path.read_bytes())
    data[16:24] = side.to_bytes(4, "big") * 2  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def _bad_images_dataset(tmp: Path) -> Path:
    """One good image and one of each bad kind, plus one bad line."""
    _png(tmp / "rgb" / "good.png", 64, 48)
    (tmp / "rgb" / "empty.png").write_bytes(b"")
    whole = _png(tmp / "rgb" / "whole.png", 64, 48, seed=1).read_bytes()
    (tmp / "rgb" / "trunc.png").write_bytes(whole[: len(whole) * 2 // 3])
    (tmp / "rgb" / "text.png").write_text("not an image")
    (tmp / "rgb" / "dir.png").mkdir()
    _png(tmp / "rgb" / "small.png", 32, 24)
    _bomb(tmp / "rgb" / "bomb.png")
    base = {"intrinsics": [60.0, 60.0, 31.5, 23.5, 64, 48], "pixel_coords": [[20, 20], [30, 25]], "depth": [2.0, 3.0]}
    rows = [{**base, "image": f"rgb/{n}.png"} for n in ("good", "missing", "empty", "trunc", "text", "dir", "small")]
    rows.append({**base, "image": "rgb/bomb.png", "intrinsics": [60.0, 60.0, 31.5, 23.5, 20_000, 20_000]})
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, json.dumps({**base, "image": "rgb/good.png", "depth": [2.0, -1.0]}))
    p = tmp / "imgs.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


REASONS = {"rgb/missing.png": "image_missing", "rgb/empty.png": "image_truncated", "rgb/trunc.png": "image_truncated",
           "rgb/text.png": "image_not_an_image", "rgb/dir.png": "image_unreadable",
           "rgb/small.png": "image_size_mismatch", "rgb/bomb.png": "image_too_large"}


def test_each_bad_image_is_an_image_error_naming_file_line_and_field(tmp_path):
    p = _bad_images_dataset(tmp_path)
    src = load_source(DatasetSpec(str(p)), skip_invalid=True)
    for i in range(len(src)):
        rel = src.store.image(i)
        if rel == "rgb/good.png":
            assert open_image(src.record(i).image, source="s", width=64, height=48).size == (64, 48)
            continue
        with pytest.raises(ImageError) as e:
            ImageCache(2).get(src.record(i))
        line = src.record(i).source
        field = "intrinsics" if rel == "rgb/small.png" else "image"
        assert e.value.reason == REASONS[rel] and str(e.value).startswith(f"{line}: field '{field}': "), str(e.value)
        assert "\n" not in str(e.value)


def test_data_check_counts_every_reason(tmp_path, capsys):
    from rlkit.cli import main

    p = _bad_images_dataset(tmp_path)
    for workers in ("1", "2"):
        assert main(["data", "check", str(p), "--workers", workers]) == 2
        out, err = capsys.readouterr()
        assert f"{p}: 9 lines, 1 bad; 8 images opened, 7 bad" in out
        for line in ["bad line, field 'depth': 1", "image_missing: 1", "image_truncated: 2", "image_not_an_image: 1",
                     "image_unreadable: 1", "image_size_mismatch: 1", "image_too_large: 1"]:
            assert f"  {line}\n" in out, out
        assert f"first problems:\n  {p}:3: field 'depth'" in out and f"  {p}:2: field 'image': file not found" in out
        assert err.strip().splitlines()[-1] == f"error: {p}: 1 bad lines, 7 bad images"
    good = tmp_path / "good.jsonl"
    good.write_text(p.read_text().splitlines()[0] + "\n")
    assert main(["data", "check", str(good)]) == 0
    assert "1 lines, 0 bad; 1 images opened, 0 bad" in capsys.readouterr().out


def test_train_stream_skips_bad_images_only_with_skip_invalid(tmp_path):
    p = _bad_images_dataset(tmp_path)
    cam = CameraOptions(strategy="direct", crop_width=None, crop_height=None)
    src = load_source(DatasetSpec(str(p)), skip_invalid=True)
    stream = TrainStream([src], cam, PromptOptions(), skip_invalid=True)
    samples = [stream.sample(i) for i in range(30)]
    assert {s.record.image.name for s in samples} == {"good.png"}
    assert set(stream.skips) == set(REASONS.values()) and sum(stream.skips.values()) > 30
    strict = TrainStream([src], cam, PromptOptions())
    with pytest.raises(ImageError, match=rf"^{p}:\d+: field '(image|intrinsics)': "):
        [strict.sample(i) for i in range(30)]


def test_eval_skips_bad_images_with_a_count(tmp_path):
    p = _bad_images_dataset(tmp_path)
    src = load_source(DatasetSpec(str(p), name="x"), skip_invalid=True)
    ev = EvalSet([src], CameraOptions(strategy="direct"), PromptOptions(task="brightness"), 100, skip_invalid=True)
    frame = selection_frame(ev)  # brightness reads the image: the bad ones are found here
    assert frame["gt"].isna().sum() == len(ev.bad) == 2 * 7
    kept = drop_skipped(frame, ev, ev.bad)
    assert len(kept) == 2 and kept["gt"].notna().all()
    assert ev.skipped["x"] == {reason: 2 * n for reason, n in
                               pd.Series(list(REASONS.values())).value_counts().items()}
    with pytest.raises(ImageError):
        selection_frame(EvalSet([src], CameraOptions(strategy="direct"), PromptOptions(task="brightness"), 100))


# ---------------------------------------------------------------- end to end


def _cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_missing_images_are_counted_skips_in_metrics_json_or_one_line_errors(tmp_path, synth_dir):
    from rlkit.config import load_experiment
    from rlkit.run import build_evalset, load_sources

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    exp = write_experiment(tmp_path, data, data={"skip_invalid": True})
    evalset = build_evalset(load_experiment(str(exp)), load_sources(load_experiment(str(exp))))
    evalset.sample(0).record.image.unlink()  # the first eval pixel's image
    for line in (data / "indoor_train.jsonl").read_text().splitlines()[:6]:  # half the indoor training images
        (data / json.loads(line)["image"]).unlink()

    r = _cli(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["builder_skips"]["image_missing"] > 0
    assert m["eval_skipped"]["indoor"]["image_missing"] >= 1
    assert m["eval_samples"] == 12 - m["eval_skipped"]["indoor"]["image_missing"]
    assert len(pd.read_csv(tmp_path / "run" / "predictions.csv")) == m["eval_samples"]

    (tmp_path / "strict").mkdir()
    strict = write_experiment(tmp_path / "strict", data)
    r = _cli(strict)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {data / 'indoor_train.jsonl'}:") and "field 'image': file not found" in last


def test_allow_outside_root_is_a_typed_dataset_key(tmp_path):
    from rlkit.config import ConfigError, experiment_from_dict

    data = {"train": [{"path": "a.jsonl", "allow_outside_root": True}], "eval": [{"path": "a.jsonl"}]}
    exp = experiment_from_dict({"data": data}, source="exp.yaml")
    assert exp.data.train[0].allow_outside_root is True and exp.data.eval[0].allow_outside_root is False
    with pytest.raises(ConfigError, match="allow_outside_root"):
        experiment_from_dict({"data": {**data, "train": [{"path": "a.jsonl", "allow_outside_root": "yes"}]}},
                             source="exp.yaml")
