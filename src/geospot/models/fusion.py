"""Multi-view fusion: several photos of one place become one prediction.

Views are grouped by an id (e.g. ``location_id``). Embeddings are averaged and
re-normalised (the article's "average the four headings" trick); probabilities
are averaged. NumPy in gives NumPy out, torch in gives torch out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

ArrayLike = np.ndarray | torch.Tensor


def group_index(groups: Sequence | np.ndarray | pd.Series) -> tuple[np.ndarray, int]:
    """Map group ids to ``0..n_groups-1`` in order of first appearance.

    Returns ``(inverse [N] int64, n_groups)`` with ``inverse[i]`` the group of row ``i``.
    Raises ``ValueError`` naming the first row whose group id is missing (None/NaN).
    """
    values = groups.to_numpy() if isinstance(groups, pd.Series) else np.asarray(groups, dtype=object)
    if values.ndim != 1:
        raise ValueError(f"group_index: groups must be 1-D, got shape {values.shape}")
    codes, uniques = pd.factorize(pd.Series(values), sort=False)
    missing = np.flatnonzero(codes < 0)
    if missing.size:
        raise ValueError(f"group_index: row {int(missing[0])} has no group id (None/NaN); {missing.size} row(s) affected")
    return codes.astype(np.int64), int(len(uniques))


def _check_inverse(inverse: ArrayLike, n_rows: int, n: int, where: str) -> torch.Tensor:
    inv = torch.as_tensor(np.asarray(inverse) if not isinstance(inverse, torch.Tensor) else inverse).long().cpu()
    if inv.ndim != 1 or inv.shape[0] != n_rows:
        raise ValueError(f"{where}: inverse must have shape [{n_rows}], got {list(inv.shape)}")
    if n_rows and (int(inv.min()) < 0 or int(inv.max()) >= n):
        raise ValueError(f"{where}: inverse values must lie in [0, {n}), got [{int(inv.min())}, {int(inv.max())}]")
    counts = torch.bincount(inv, minlength=n)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        raise ValueError(f"{where}: group {int(empty[0])} has no rows ({empty.numel()} empty group(s)); n={n} is too large")
    return inv


def _as_tensor(x: ArrayLike, where: str) -> tuple[torch.Tensor, bool]:
    is_numpy = not isinstance(x, torch.Tensor)
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if t.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array [N, D], got shape {list(t.shape)}")
    return t, is_numpy


def _group_mean(t: torch.Tensor, inv: torch.Tensor, n: int) -> torch.Tensor:
    acc_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    inv = inv.to(t.device)
    sums = torch.zeros((n, t.shape[1]), dtype=acc_dtype, device=t.device).index_add_(0, inv, t.to(acc_dtype))
    counts = torch.bincount(inv, minlength=n).to(acc_dtype).unsqueeze(1)
    return sums / counts, counts


def fuse_embeddings(emb: ArrayLike, inverse: ArrayLike, n: int) -> ArrayLike:
    """Mean embedding per group, rescaled to the mean norm of the group's inputs.

    Unit-norm inputs therefore give unit-norm outputs ("re-normalised like the
    inputs"); raw inputs keep their typical scale. ``[N, D] -> [n, D]``, same
    type and dtype as ``emb``.
    """
    t, is_numpy = _as_tensor(emb, "fuse_embeddings")
    inv = _check_inverse(inverse, t.shape[0], n, "fuse_embeddings")
    mean, counts = _group_mean(t, inv, n)
    norms = torch.linalg.vector_norm(t.to(mean.dtype), dim=1, keepdim=True)
    target_norm = torch.zeros((n, 1), dtype=mean.dtype, device=t.device).index_add_(0, inv.to(t.device), norms) / counts
    mean_norm = torch.linalg.vector_norm(mean, dim=1, keepdim=True)
    # Views pointing in opposite directions can cancel: leave such a (near-)zero mean as it is.
    scale = torch.where(mean_norm > 1e-12, target_norm / mean_norm.clamp_min(1e-12), torch.ones_like(mean_norm))
    out = (mean * scale).to(t.dtype)
    return out.numpy() if is_numpy else out


def fuse_probs(probs: ArrayLike, inverse: ArrayLike, n: int) -> ArrayLike:
    """Mean class probabilities per group: ``[N, C] -> [n, C]`` (rows still sum to 1)."""
    t, is_numpy = _as_tensor(probs, "fuse_probs")
    inv = _check_inverse(inverse, t.shape[0], n, "fuse_probs")
    mean, _ = _group_mean(t, inv, n)
    out = mean.to(t.dtype)
    return out.numpy() if is_numpy else out
