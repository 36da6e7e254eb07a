"""Calibration of a head trained from a memory-mapped store: `train_calibrated`'s recipe, streamed.

`geospot.workflows.training.train_calibrated` fits a temperature, a prior weight, a
kernel width and radius scales on out-of-fold predictions, with the embeddings in
memory. Here the same folds (`calibration_folds`: leave-one-collection-out when the
store has a `collection` column with 2+ collections, else group K-fold by place) train
their heads with `train_head_streaming` (on every rank, with DDP under torchrun: the
folds are deterministic, so all ranks agree), and rank 0 predicts each fold's held-out
rows in chunks read from the memory map and fits the calibration.

Memory stays bounded: the fold index arrays are per-row integers (~8 bytes a row per
fold), and out-of-fold probabilities ``[rows, cells]`` are kept only for a seeded sample
of at most `max_rows` held-out rows in all (by default as many as fit in
`PREDICTION_BUDGET_BYTES` of float64 probabilities), spread over the folds in proportion
to their size. Below that bound every held-out row is used, and the result equals the
in-memory path's (with dropout 0, where streamed heads equal in-memory heads).
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from geospot.models.familiarity import DEFAULT_QUANTILE
from geospot.train import dist

__all__ = ["PREDICTION_BUDGET_BYTES", "calibrate_streaming", "familiarity_streaming"]

#: Out-of-fold probabilities kept for fitting (float64 [rows, cells]); calibration copies them a few times.
PREDICTION_BUDGET_BYTES = 256 * 2**20
_CHUNK = 4096


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _probs(head, emb, rows: np.ndarray, normalize: bool) -> np.ndarray:
    """Cell probabilities of `head` for rows of `emb` (float64), read in chunks."""
    from geospot.models.head import normalize_embeddings

    head.eval()
    out = []
    with torch.no_grad():
        for a in range(0, len(rows), _CHUNK):
            x = torch.from_numpy(np.ascontiguousarray(np.asarray(emb[rows[a:a + _CHUNK]]), dtype=np.float32))
            out.append(torch.softmax(head(normalize_embeddings(x) if normalize else x), dim=1).numpy())
    return np.concatenate(out).astype(np.float64)


def _sample(te: np.ndarray, n: int, seed: int, fold: int) -> np.ndarray:
    if n >= len(te):
        return te
    return np.sort(np.random.default_rng([seed, fold]).choice(te, size=n, replace=False))


def calibrate_streaming(emb, lat, lon, groups, rows, config, *, collections=None, cells=None, cell_params=None,
                        estimates: tuple[str, ...] | None = None, max_rows: int | None = None,
                        ctx: dist.Context | None = None):
    """``(Calibration or None, how)`` for a head on rows `rows` of `emb` (None on ranks other than 0).

    `lat`, `lon`, `groups`, `collections`: per row of `emb`; `cells`: fixed cells for every
    fold (else built per fold from `cell_params`, as `train_calibrated`); `max_rows`: the
    held-out rows whose predictions are kept (default: `PREDICTION_BUDGET_BYTES` worth).
    Every rank must call it (the fold heads train with DDP); rank 0 returns the calibration.
    """
    from geospot.models.answer import DEFAULT_ESTIMATE
    from geospot.models.calibration import Calibration, FoldPredictions, fit_calibration, fit_radius_scales
    from geospot.models.distribution import cell_prior, support_from_places
    from geospot.train.stream import train_head_streaming
    from geospot.workflows.training import build_model_cells, calibration_folds, location_table

    ctx = ctx or dist.current()
    rows = np.asarray(rows, dtype=np.int64)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    g = np.asarray(groups, dtype=object)[rows]
    col = None if collections is None else np.asarray(collections).astype(str)[rows]
    folds, how = calibration_folds(g, col, seed=config.seed)
    if not folds:
        return (Calibration(fitted_on=how) if ctx.is_main else None), how
    if ctx.is_main:
        _log(f"calibrating on out-of-fold predictions: {how}")
    oof, kept, sampled = [], 0, False
    for k, (tr, te) in enumerate(folds):
        try:
            f_cells = cells if cells is not None else build_model_cells(lat[rows[tr]], lon[rows[tr]], g[tr],
                                                                        cell_params)
            f_head, _ = train_head_streaming(emb, lat, lon, f_cells, config, groups=groups, rows=rows[tr], ctx=ctx,
                                             progress=False)
        except ValueError as exc:  # e.g. a fold too small for 2 cells: calibrate on the others
            if ctx.is_main:
                _log(f"calibration fold {k + 1}: skipped ({exc})")
            continue
        if not ctx.is_main:
            continue
        cap = max_rows if max_rows is not None else max(1, PREDICTION_BUDGET_BYTES // (8 * len(f_cells)))
        te_kept = _sample(te, max(1, cap * len(te) // len(rows)), config.seed, k)
        kept += len(te_kept)
        sampled |= len(te_kept) < len(te)
        probs = _probs(f_head, emb, rows[te_kept], config.normalize)
        loc_lat, loc_lon = location_table(lat[rows[tr]], lon[rows[tr]], g[tr])
        support = support_from_places(f_cells, loc_lat, loc_lon, seed=config.seed)
        oof.append(FoldPredictions(probs, cell_prior(f_cells), support, lat[rows[te_kept]], lon[rows[te_kept]],
                                   f_cells))
    if not ctx.is_main:
        return None, how
    if not oof:
        return Calibration(fitted_on=how), how
    note = f"; predictions of a sample of {kept} held-out rows" if sampled else ""
    cal = fit_calibration(oof, fitted_on=f"{how}; {len(rows)} images{note}")
    cal.radius_scale = fit_radius_scales(oof, cal, list(estimates or (DEFAULT_ESTIMATE,)), seed=config.seed)
    _log(f"calibration: temperature {cal.temperature:.2f}, prior weight {cal.prior_weight:.3f}, kernel "
         f"{cal.kernel_km:.0f} km, radius scales "
         + ", ".join(f"{k} {v['50']:.2f}/{v['90']:.2f}" for k, v in cal.radius_scale.items()))
    return cal, how


def familiarity_streaming(emb, groups, rows, seed: int, collections=None,
                          quantile: float = DEFAULT_QUANTILE):
    """The `Familiarity` of rows `rows` of a memory-mapped `emb`, on the same folds as
    `calibrate_streaming` (read in chunks; no head is trained). None without folds."""
    from geospot.workflows.training import calibration_folds, fit_gate

    rows = np.asarray(rows, dtype=np.int64)
    col = None if collections is None else np.asarray(collections).astype(str)[rows]
    folds, how = calibration_folds(np.asarray(groups, dtype=object)[rows], col, seed=seed)
    return fit_gate(emb, folds, how, rows=rows, quantile=quantile)
