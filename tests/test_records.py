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
    ({"depth": [float("nan")]}, "depth", "finite and positive"),
    ({"depth": [0.0]}, "depth", "finite and positive"),
    ({"depth": [-1.0]}, "depth", "finite and positive"),
    ({"pixel_coords": [[64, 12]]}, "pixel_coords", "outside the 64x48 image"),
    ({"pixel_coords": [[-1, 12]]}, "pixel_coords", "outside"),
    ({"intrinsics": [0.0, 0.0, 31.5, 23.5, 64, 48]}, "intrinsics", "focal lengths must be positive"),
    ({"intrinsics": [-5.0, 60.0, 31.5, 23.5, 64, 48]}, "intrinsics", "focal lengths must be positive"),
    ({"intrinsics": [60.0, 60.0, 31.5, 23.5]}, "intrinsics", "[fx, fy, cx, cy, width, height]"),
    ({"depth": [2.5, 3.0]}, "depth", "has 2 values but pixel_coords has 1"),
    ({"axis_depth": [1.0, 2.0]}, "axis_depth", "one per label"),
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
