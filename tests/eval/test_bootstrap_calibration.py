"""Bootstrap intervals, paired comparisons and calibration metrics."""
import numpy as np

from geospot.eval.bootstrap import describe_paired, error_metric_cis, mean_ci, paired_geoscore
from geospot.eval.calibration import coverage, reliability_bins, top1_ece


def test_intervals_contain_the_estimate_and_shrink_with_data():
    rng = np.random.default_rng(0)
    small, big = rng.exponential(1000, 100), rng.exponential(1000, 10000)
    ci_s, ci_b = error_metric_cis(small)["geoscore"], error_metric_cis(big)["geoscore"]
    assert ci_b[1] - ci_b[0] < ci_s[1] - ci_s[0]
    m = mean_ci(big)
    assert m["ci"][0] <= m["mean"] <= m["ci"][1]


def test_cluster_bootstrap_is_wider_for_correlated_views():
    rng = np.random.default_rng(1)
    place_err = rng.exponential(1000, 300)
    views = np.repeat(place_err, 4)  # four identical views per place
    groups = np.repeat(np.arange(300), 4)
    naive = error_metric_cis(views)["geoscore"]
    clustered = error_metric_cis(views, groups=groups)["geoscore"]
    assert clustered[1] - clustered[0] > 1.5 * (naive[1] - naive[0])


def test_paired_comparison_detects_a_real_gain_and_a_tie():
    rng = np.random.default_rng(2)
    base = rng.exponential(2000, 2000)
    better = paired_geoscore(base * 0.5, base)
    assert better["ci"][0] > 0 and describe_paired("the medoid", better).startswith("beats the medoid")
    tie = paired_geoscore(rng.permutation(base), base)
    assert tie["ci"][0] < 0 < tie["ci"][1] and describe_paired("x", tie).startswith("ties with")


def test_calibration_metrics():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    truth = np.array([0, 1, 0, 0])
    bins = reliability_bins(probs, truth)
    assert sum(b["n"] for b in bins) == 4
    # confident bin: 50% right at 90% confidence; 60% bin: 100% right
    assert abs(top1_ece(probs, truth) - (0.5 * 0.4 + 0.5 * 0.4)) < 1e-9
    assert coverage([1, 5, 10], [2, 2, 20]) == 2 / 3
