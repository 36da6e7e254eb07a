"""How honest are the probabilities? Cell NLL, top-cell calibration error,
reliability bins, and the coverage of confidence radii."""
from __future__ import annotations

from typing import Any

import numpy as np

_FLOOR = 1e-12


def cell_nll(probs, true_idx) -> float:
    """Mean negative log-probability of the true cell (rows with no true cell, -1, skipped)."""
    p = np.asarray(probs, np.float64)
    t = np.asarray(true_idx, np.int64)
    keep = t >= 0
    if not keep.any():
        return float("nan")
    return float(-np.log(np.maximum(p[keep, t[keep]], _FLOOR)).mean())


def reliability_bins(probs, true_idx, n_bins: int = 10) -> list[dict[str, Any]]:
    """Top-cell confidence vs accuracy per equal-width confidence bin."""
    p = np.asarray(probs, np.float64)
    t = np.asarray(true_idx, np.int64)
    conf = p.max(1)
    correct = (p.argmax(1) == t).astype(np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(sel.sum()),
                    "confidence": float(conf[sel].mean()) if sel.any() else None,
                    "accuracy": float(correct[sel].mean()) if sel.any() else None})
    return out


def top1_ece(probs, true_idx, n_bins: int = 10) -> float:
    """Expected calibration error of the top cell: sum_b |acc_b - conf_b| * n_b / n."""
    bins = reliability_bins(probs, true_idx, n_bins)
    n = sum(b["n"] for b in bins)
    if n == 0:
        return float("nan")
    return float(sum(abs(b["accuracy"] - b["confidence"]) * b["n"] for b in bins if b["n"]) / n)


def coverage(errors_km, radius_km) -> float:
    """Fraction of photos whose true location lies within the stated radius of the estimate."""
    e = np.asarray(errors_km, np.float64)
    r = np.asarray(radius_km, np.float64)
    return float((e <= r).mean()) if e.size else float("nan")


def calibration_summary(raw_probs, cal_probs, true_idx, errors_km, radii_km: dict[str, np.ndarray]) -> dict:
    """The calibration section of a report: NLL and ECE before/after, coverage of each radius."""
    out = {
        "nll_raw": cell_nll(raw_probs, true_idx), "nll": cell_nll(cal_probs, true_idx),
        "ece_raw": top1_ece(raw_probs, true_idx), "ece": top1_ece(cal_probs, true_idx),
        "reliability_raw": reliability_bins(raw_probs, true_idx),
        "reliability": reliability_bins(cal_probs, true_idx),
    }
    for level, r in radii_km.items():
        out[f"coverage_{level}"] = coverage(errors_km, r)
        out[f"zero_radius_{level}"] = int((np.asarray(r) <= 0).sum())
    return out
