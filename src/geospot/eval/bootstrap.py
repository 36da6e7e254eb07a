"""Bootstrap confidence intervals for every metric, and paired comparisons.

Photos of one place (the views of a panorama) are not independent: resampling
them one by one makes intervals too narrow. Both functions take optional
``groups`` and then resample whole groups (the cluster bootstrap). Seeded.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from geospot.eval.metrics import THRESHOLDS_KM, geoscore

N_BOOT = 1000
LEVEL = 0.95


def _resample_weights(n: int, groups, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of each row in each resample (whole groups at a time)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(inverse.max()) + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    return counts[:, inverse]


def _weighted_median(sorted_values: np.ndarray, weights_in_order: np.ndarray) -> np.ndarray:
    cum = np.cumsum(weights_in_order, axis=1)
    half = cum[:, -1:] / 2
    return sorted_values[np.argmax(cum >= half, axis=1)]


def error_metric_cis(errors_km, groups=None, n_boot: int = N_BOOT, level: float = LEVEL,
                     seed: int = 0) -> dict[str, list[float]]:
    """``{metric: [low, high]}`` percentile intervals for the metrics of `error_metrics`.

    Vectorised: each resample is a vector of row multiplicities (whole groups
    when ``groups`` is given), so every metric is a weighted statistic."""
    e = np.asarray(errors_km, np.float64).reshape(-1)
    if e.size == 0:
        return {}
    w = _resample_weights(e.size, groups, n_boot, seed)
    total = w.sum(1)
    order = np.argsort(e, kind="stable")
    samples = {"median_km": _weighted_median(e[order], w[:, order]), "mean_km": w @ e / total}
    for t in THRESHOLDS_KM:
        samples[f"acc_{t}km"] = w @ (e <= t).astype(np.float64) / total
    samples["geoscore"] = w @ geoscore(e) / total
    a = (1 - level) / 2
    return {k: [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] for k, v in samples.items()}


def mean_ci(values, groups=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """Mean of per-photo values with a bootstrap interval: ``{"mean", "ci": [lo, hi], "n"}``."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        return {"mean": float("nan"), "ci": [float("nan"), float("nan")], "n": 0}
    w = _resample_weights(v.size, groups, n_boot, seed)
    means = w @ v / w.sum(1)
    a = (1 - level) / 2
    return {"mean": float(v.mean()), "ci": [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))],
            "n": int(v.size)}


def paired_geoscore(errors_a_km, errors_b_km, groups=None, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """How much method A beats method B on the same photos: mean GeoScore difference
    (A - B) with a paired bootstrap interval, and the relative gain over B."""
    a = np.asarray(errors_a_km, np.float64)
    b = np.asarray(errors_b_km, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same photos: {a.shape} vs {b.shape}")
    d = mean_ci(geoscore(a) - geoscore(b), groups, n_boot=n_boot, seed=seed)
    base = float(geoscore(b).mean()) if b.size else float("nan")
    d["relative"] = d["mean"] / base if base > 0 else float("nan")
    return d


def describe_paired(name: str, d: dict[str, Any]) -> str:
    """``beats the medoid: +312 GeoScore (+34%) [95% CI 240, 390]`` (or "loses to")."""
    verb = "beats" if d["ci"][0] > 0 else ("loses to" if d["ci"][1] < 0 else "ties with")
    return (f"{verb} {name}: {d['mean']:+.0f} GeoScore ({100 * d['relative']:+.0f}%) "
            f"[95% CI {d['ci'][0]:+.0f}, {d['ci'][1]:+.0f}]")
