import json
import logging

import numpy as np
import pytest

from rlkit.records import RecordError, load_records

from conftest import OFFICIAL


def test_official_fixture_loads_with_fx0_repair(caplog):
    with caplog.at_level(logging.INFO):
        records, report = load_records(OFFICIAL)
    assert len(records) == 3 and report.loaded == 3
    a, b, c = records
    assert a.camera.fx == 60.0 and a.num_labels == 3
    np.testing.assert_array_equal(a.pixels, [[10, 12], [40, 30], [63, 47]])
    np.testing.assert_array_equal(a.depth, [2.5, 7.25, 12.0])
    assert (b.camera.fx, b.camera.fy) == (35.0, 45.0)  # fx != fy kept
    assert (c.camera.fx, c.camera.fy) == (40.0, 40.0)  # fx == 0 means "use fy"
    assert report.repaired == {"fx0_as_fy": 1}
    assert "fx == 0 means fx = fy" in caplog.text
    assert c.extras["scene"] == "kitchen-3"
    assert a.image.name == "a.png" and a.image.is_file()
    assert a.source.endswith("test.jsonl:1") and a.dataset == "test"


GOOD = {"image": "rgb/a.png", "intrinsics": [60.0, 60.0, 31.5, 23.5, 64, 48],
        "pixel_coords": [[10, 12]], "depth": [2.5]}

BAD = [
    ({"image": "rgb/missing.png"}, "image", "file not found"),
    ({"depth": [float("nan")]}, "depth", "depths must be in (0, 10000] meters"),
    ({"depth": [0.0]}, "depth", "depths must be in (0, 10000] meters"),
    ({"depth": [-1.0]}, "depth", "depths must be in (0, 10000] meters"),
    ({"pixel_coords": [[64, 12]]}, "pixel_coords", "outside the 64x48 image"),
    ({"pixel_coords": [[-1, 12]]}, "pixel_coords", "outside"),
    ({"intrinsics": [0.0, 0.0, 31.5, 23.5, 64, 48]}, "intrinsics", "focal lengths must be 1 to 1e+06 pixels"),
    ({"intrinsics": [-5.0, 60.0, 31.5, 23.5, 64, 48]}, "intrinsics", "focal lengths must be 1 to 1e+06 pixels"),
    ({"intrinsics": [60.0, 60.0, 31.5, 23.5]}, "intrinsics", "[fx, fy, cx, cy, width, height]"),
    ({"depth": [2.5, 3.0]}, "depth", "has 2 values but pixel_coords has 1"),
    ({"axis_depth": [1.0, 2.0]}, "axis_depth", "one per label"),
    ({"depth": [2e4]}, "depth", "depths must be in (0, 10000] meters"),  # beyond any real depth
    ({"depth": [10 ** 400]}, "depth", "must be a list of numbers"),  # an integer no float holds
    ({"intrinsics": [1e-9, 1e-9, 31.5, 23.5, 64, 48]}, "intrinsics", "focal lengths must be 1 to 1e+06"),
    ({"intrinsics": [60.0, 60.0, 31.5, 23.5, 64, 10 ** 9]}, "intrinsics", "whole numbers of pixels from 1 to 100000"),
    ({"image": "rgb/a\x00.png"}, "image", "NUL byte"),
]


def _write(tmp_path, rows, raw_line=None):
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    lines = [json.dumps(r) for r in rows]
    if raw_line is not None:
        lines.insert(1, raw_line)
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("change,field,why", BAD)
def test_each_bad_row_names_file_line_and_field(tmp_path, change, field, why):
    p = _write(tmp_path, [GOOD, {**GOOD, **change}])
    with pytest.raises(RecordError) as e:
        load_records(p)
    msg = str(e.value)
    assert f"bad.jsonl:2: field '{field}'" in msg and why in msg


def test_invalid_json_and_missing_key(tmp_path):
    p = _write(tmp_path, [GOOD, GOOD], raw_line='{"image": "rgb/a.png", ')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: field '<json>': invalid JSON"):
        load_records(p)
    missing = {k: v for k, v in GOOD.items() if k != "depth"}
    p2 = tmp_path / "m.jsonl"
    p2.write_text(json.dumps(GOOD) + "\n" + json.dumps(missing) + "\n")
    with pytest.raises(RecordError, match=r"m.jsonl:2: field 'depth': missing"):
        load_records(p2, root=OFFICIAL.parent)


def test_skip_invalid_counts_by_field(tmp_path, caplog):
    rows = [GOOD, {**GOOD, "depth": [0.0]}, {**GOOD, "image": "rgb/nope.png"}, {**GOOD, "depth": [-2.0]}]
    p = _write(tmp_path, rows, raw_line="not json")
    with caplog.at_level(logging.WARNING):
        records, report = load_records(p, skip_invalid=True)
    assert len(records) == 1
    assert report.summary()["skipped"] == {"<json>": 1, "depth": 2, "image": 1}
    assert caplog.text.count("skipped") == 4


def test_no_valid_rows_is_an_error(tmp_path):
    p = _write(tmp_path, [{**GOOD, "depth": [0.0]}])
    with pytest.raises(RecordError, match="no valid records"):
        load_records(p, skip_invalid=True)


@pytest.mark.parametrize("raw,field,why", [
    (b'{"image": "rgb/a.png", "image": "rgb/b.png"}', "image", "the key appears twice"),
    (b"[" * 100_000 + b"]" * 100_000, "<json>", "nested too deeply"),
    (b'{"image": "rgb/\xff.png"}', "<utf-8>", "not UTF-8"),
])
def test_hostile_lines_are_record_errors_or_counted_skips(tmp_path, raw, field, why):
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    p = tmp_path / "bad.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + raw + b"\n" + json.dumps(GOOD).encode() + b"\n")
    with pytest.raises(RecordError) as e:
        load_records(p)
    assert f"bad.jsonl:2: field '{field}'" in str(e.value) and why in str(e.value)
    records, report = load_records(p, skip_invalid=True)
    assert len(records) == 2 and report.skipped == {field: 1}


def test_a_leading_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    records, _ = load_records(p)
    assert records[0].depth.tolist() == [2.5]


def test_fractional_pixel_coordinates_are_accepted(tmp_path):
    # documented: a label may sit between pixel centers; the marker goes on the nearest pixel after the transform
    (tmp_path / "rgb").symlink_to(OFFICIAL.parent / "rgb")
    p = tmp_path / "f.jsonl"
    p.write_text(json.dumps({**GOOD, "pixel_coords": [[10.4, 12.6]]}) + "\n")
    assert load_records(p)[0][0].pixels.tolist() == [[10.4, 12.6]]
