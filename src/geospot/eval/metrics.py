"""Evaluation metrics for photo geolocation.

Distances are great-circle (haversine) kilometres. The accuracy thresholds are
the usual street / city / region / country / continent scales of Im2GPS and
OSV-5M; GeoScore is GeoGuessr's score, ``5000 * exp(-d / 1492.7)`` (5000 for a
perfect guess, 5000/e at 1492.7 km).

All functions return plain Python numbers (JSON-ready). Fractions are in
``[0, 1]``; reports turn them into percentages.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from geospot.geo.distance import haversine_km

#: Accuracy thresholds in km: street, city, region, country, continent.
THRESHOLDS_KM: tuple[int, ...] = (1, 25, 200, 750, 2500)
#: GeoGuessr's distance scale for GeoScore (km).
GEOSCORE_SCALE_KM = 1492.7
GEOSCORE_MAX = 5000.0

#: True labels that mean "not known": excluded from :func:`accuracy` and counted.
UNKNOWN_LABELS = frozenset({"", "unknown"})


def geoscore(d_km: Any) -> Any:
    """GeoGuessr score ``5000 * exp(-d_km / 1492.7)``; scalar in, float out; array in, array out."""
    d = np.asarray(d_km, dtype=np.float64)
    score = GEOSCORE_MAX * np.exp(-d / GEOSCORE_SCALE_KM)
    return float(score) if score.ndim == 0 else score


def _as_1d(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    return a


def _check_finite(name: str, a: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"{name} has {bad.size} non-finite value(s) at index {shown}")


def error_metrics(errors_km: Any) -> dict[str, float]:
    """Summary of great-circle errors: ``n``, ``median_km``, ``mean_km``, ``acc_{t}km`` for
    every threshold in :data:`THRESHOLDS_KM` (fraction with error ``<= t``), ``geoscore`` (mean).
    """
    d = _as_1d("errors_km", errors_km)
    if d.size == 0:
        raise ValueError("no errors to summarise (empty input)")
    _check_finite("errors_km", d)
    if (d < 0).any():
        raise ValueError(f"errors_km has negative distances at index {np.flatnonzero(d < 0)[:10].tolist()}")
    out: dict[str, Any] = {
        "n": int(d.size),
        "median_km": float(np.median(d)),
        "mean_km": float(d.mean()),
    }
    for t in THRESHOLDS_KM:
        out[f"acc_{t}km"] = float((d <= t).mean())
    out["geoscore"] = float(geoscore(d).mean())
    return out


def distance_metrics(pred_lat: Any, pred_lon: Any, true_lat: Any, true_lon: Any) -> dict[str, float]:
    """Great-circle errors of predictions (degrees) summarised by :func:`error_metrics`."""
    arrays = {
        "pred_lat": _as_1d("pred_lat", pred_lat),
        "pred_lon": _as_1d("pred_lon", pred_lon),
        "true_lat": _as_1d("true_lat", true_lat),
        "true_lon": _as_1d("true_lon", true_lon),
    }
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"coordinate arrays differ in length: {sizes}")
    for name, a in arrays.items():
        _check_finite(name, a)
    return error_metrics(haversine_km(arrays["pred_lat"], arrays["pred_lon"], arrays["true_lat"], arrays["true_lon"]))


def topk_accuracy(probs: Any, true_idx: Any, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose true class is among the ``k`` highest scores: ``{"top1": .., "top5": ..}``.

    ``probs`` is ``[N, C]`` (probabilities or logits: only the order matters).
    ``true_idx == -1`` (the true location is in no class) is never correct.
    Ties count against the model: the true class is within the top ``k`` only if
    at most ``k`` classes (itself included) score at least as high, so a
    constant (uninformed) output gets no credit.
    """
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(true_idx)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N, C], got shape {p.shape}")
    if t.ndim != 1 or t.shape[0] != p.shape[0]:
        raise ValueError(f"true_idx must be [N] with N = {p.shape[0]}, got shape {t.shape}")
    if p.shape[0] == 0:
        raise ValueError("no rows to evaluate (empty input)")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"true_idx must be integers, got dtype {t.dtype}")
    bad = np.flatnonzero((t < -1) | (t >= p.shape[1]))
    if bad.size:
        raise ValueError(f"true_idx out of range [-1, {p.shape[1] - 1}] at index {bad[:10].tolist()}")
    if np.isnan(p).any():
        raise ValueError(f"probs has NaN in row(s) {np.flatnonzero(np.isnan(p).any(axis=1))[:10].tolist()}")
    known = t >= 0
    rank = np.full(t.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
    if known.any():
        rows = np.flatnonzero(known)
        score_true = p[rows, t[rows]]
        # Number of classes scoring at least as high as the true one (itself included).
        rank[rows] = (p[rows] >= score_true[:, None]).sum(axis=1)
    out = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        out[f"top{int(k)}"] = float((rank <= int(k)).mean())
    return out


def _is_unknown(label: Any) -> bool:
    if label is None:
        return True
    if isinstance(label, float) and math.isnan(label):
        return True
    return isinstance(label, str) and label.strip().lower() in UNKNOWN_LABELS


def accuracy(pred_labels: Iterable[Any], true_labels: Iterable[Any]) -> dict[str, Any]:
    """Label accuracy (e.g. country codes): ``{"accuracy", "n", "n_excluded"}``.

    Rows whose *true* label is unknown (None, NaN, empty, "unknown") are excluded
    and counted in ``n_excluded``; an unknown *prediction* counts as wrong.
    Labels compare as strings. ``accuracy`` is NaN when no row has a known label.
    """
    pred = list(pred_labels)
    true = list(true_labels)
    if len(pred) != len(true):
        raise ValueError(f"pred_labels ({len(pred)}) and true_labels ({len(true)}) differ in length")
    n = correct = excluded = 0
    for p, t in zip(pred, true):
        if _is_unknown(t):
            excluded += 1
            continue
        n += 1
        correct += int(not _is_unknown(p) and str(p) == str(t))
    return {"accuracy": correct / n if n else float("nan"), "n": n, "n_excluded": excluded}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def summarize_folds(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over cross-validation folds of every numeric metric.

    ``folds`` is a list of metric dicts (one per fold); nested dicts (e.g.
    method -> metrics) are summarised recursively. Each numeric entry becomes
    ``{"mean", "std", "n_folds"}``; ``std`` is the population standard deviation
    over folds (``ddof=0``: the folds are the whole set, not a sample). An
    entry missing from some folds is summarised over the folds that have it
    (``n_folds`` says how many); non-numeric entries are skipped.
    """
    if not folds:
        raise ValueError("no folds to summarise")
    keys: list[str] = []
    for fold in folds:
        for k in fold:
            if k not in keys:
                keys.append(k)
    out: dict[str, Any] = {}
    for k in keys:
        values = [fold[k] for fold in folds if k in fold]
        if all(isinstance(v, Mapping) for v in values):
            out[k] = summarize_folds(values)
        elif all(_is_number(v) for v in values):
            a = np.asarray(values, dtype=np.float64)
            out[k] = {"mean": float(a.mean()), "std": float(a.std(ddof=0)), "n_folds": int(a.size)}
    return out


def per_group_metrics(errors_km: Any, labels: Iterable[Any]) -> dict[str, dict[str, float]]:
    """:func:`error_metrics` per group (e.g. per country), largest groups first (ties by label).

    Unknown labels (None, NaN, empty, "unknown") form the group ``"(unknown)"``
    so no row is lost.
    """
    d = _as_1d("errors_km", errors_km)
    lab = ["(unknown)" if _is_unknown(x) else str(x) for x in labels]
    if len(lab) != d.size:
        raise ValueError(f"errors_km ({d.size}) and labels ({len(lab)}) differ in length")
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(lab):
        groups.setdefault(g, []).append(i)
    order = sorted(groups, key=lambda g: (-len(groups[g]), g))
    return {g: error_metrics(d[groups[g]]) for g in order}
