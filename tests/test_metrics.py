"""rlkit.metrics.depth_metrics on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from rlkit.metrics import METRICS, depth_metrics

GT = [2.0, 4.0, 1.0, 10.0]
PRED = [2.0, 5.0, 1.5, 1.0]  # ratios max(p/g, g/p): 1, 1.25, 1.5, 10


def test_deltas_count_ratios_strictly_below_the_thresholds():
    m = depth_metrics(PRED, GT)
    # 1.25^1 = 1.25: only the ratio 1 is below (1.25 itself is not); 1.25^2 = 1.5625: also 1.25 and 1.5;
    # 1.25^3 = 1.953: the same three; the ratio 10 misses every threshold
    assert m["delta1"] == 0.25
    assert m["delta2"] == 0.75
    assert m["delta3"] == 0.75
    assert m["parse_fail"] == 0.0


def test_error_metrics_by_hand():
    m = depth_metrics(PRED, GT)
    # |p - g|: 0, 1, 0.5, 9
    assert m["abs_rel"] == pytest.approx((0 + 1 / 4 + 0.5 / 1 + 9 / 10) / 4)  # 0.4125
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 1 + 0.25 + 81) / 4))  # 4.5346
    # |log10 p - log10 g|: 0, log10 1.25, log10 1.5, 1
    assert m["log10"] == pytest.approx((0 + math.log10(1.25) + math.log10(1.5) + 1) / 4)


def test_a_perfect_answer():
    m = depth_metrics([0.5, 80.0], [0.5, 80.0])
    assert [m[k] for k in METRICS] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -2.0, float("inf")])
def test_a_failed_parse_misses_every_delta_and_is_scored_as_the_constant(bad):
    # the failed answer would be right as the constant (2.0 vs 2.0), yet it counts as wrong for the deltas
    m = depth_metrics([bad, 4.0], [2.0, 4.0], fallback=2.0)
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.5, 0.5, 0.5)
    assert m["parse_fail"] == 0.5
    assert (m["abs_rel"], m["rmse"], m["log10"]) == (0.0, 0.0, 0.0)  # as if it had answered 2.0
    # with another constant: 3 m for a 2 m label
    m = depth_metrics([bad, 4.0], [2.0, 4.0], fallback=3.0)
    assert m["delta3"] == 0.5  # 3 / 2 = 1.5 is within 1.25^2, yet the failed parse still counts as wrong
    assert m["abs_rel"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0) / 2))
    assert m["log10"] == pytest.approx(math.log10(1.5) / 2)


def test_all_failed_equals_the_constant_baseline_on_errors_and_zero_on_deltas():
    gt = np.array([1.0, 2.2, 6.0])
    failed, constant = depth_metrics([np.nan] * 3, gt, fallback=2.0), depth_metrics([2.0] * 3, gt)
    assert failed["delta1"] == 0.0 and constant["delta1"] == pytest.approx(1 / 3)  # only 2.2 / 2 = 1.1 < 1.25
    for k in ("abs_rel", "rmse", "log10"):
        assert failed[k] == constant[k]
    assert failed["parse_fail"] == 1.0


def test_no_samples_and_bad_shapes():
    assert all(math.isnan(v) for v in depth_metrics([], []).values())
    with pytest.raises(ValueError, match="1-D of equal length"):
        depth_metrics([1.0, 2.0], [1.0])
