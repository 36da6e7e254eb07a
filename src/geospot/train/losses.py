"""Training losses: PIGEON's haversine label smoothing and a soft-target cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from geospot.geo.distance import haversine_km_torch


def haversine_smoothing_targets(
    cell_lat: torch.Tensor,
    cell_lon: torch.Tensor,
    true_lat: torch.Tensor,
    true_lon: torch.Tensor,
    tau_km: float,
) -> torch.Tensor:
    """Soft targets ``[B, C]`` that reward predicting cells near the true location (PIGEON).

    ``q_i = exp(-(d(c_i, x) - d(c_true, x)) / tau_km)`` normalised over cells, where
    ``d`` is the haversine distance from cell centroid ``c_i`` to the true location
    ``x``. The ``d(c_true, x)`` term is a per-row constant, so after normalisation
    this is ``softmax(-d(c_i, x) / tau_km)``; we compute it as such, subtracting
    the row's largest exponent (its nearest centroid) so nothing overflows or
    underflows to an all-zero row. Rows sum to 1; as ``tau_km -> 0`` a row tends
    to one-hot on the cell whose centroid is nearest to ``x``.

    Distances are computed in the floating dtype of ``cell_lat`` (float32 when it
    is not floating point); the haversine form stays accurate to metres in
    float32 even for nearby points, far below any useful ``tau_km``, at about
    half the cost of float64. The result has that dtype and ``cell_lat``'s device.
    """
    tau = float(tau_km)
    if not tau > 0 or tau != tau or tau == float("inf"):
        raise ValueError(f"haversine_smoothing_targets: tau_km must be a positive finite number, got {tau_km!r}")
    c_lat = torch.as_tensor(cell_lat).reshape(-1)
    c_lon = torch.as_tensor(cell_lon).reshape(-1)
    t_lat = torch.as_tensor(true_lat, device=c_lat.device).reshape(-1)
    t_lon = torch.as_tensor(true_lon, device=c_lat.device).reshape(-1)
    if c_lat.shape != c_lon.shape or c_lat.numel() == 0:
        raise ValueError(f"haversine_smoothing_targets: cell_lat/cell_lon must be non-empty and equal length, got {c_lat.numel()}/{c_lon.numel()}")
    if t_lat.shape != t_lon.shape:
        raise ValueError(f"haversine_smoothing_targets: true_lat/true_lon lengths differ ({t_lat.numel()} vs {t_lon.numel()})")
    dtype = c_lat.dtype if c_lat.is_floating_point() else torch.float32
    d_km = haversine_km_torch(
        t_lat.to(dtype)[:, None], t_lon.to(dtype)[:, None], c_lat.to(dtype)[None, :], c_lon.to(dtype)[None, :]
    )
    logits = d_km.mul_(-1.0 / tau)
    return torch.softmax(logits - logits.amax(dim=1, keepdim=True), dim=1)


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy against soft targets ``[B, C]`` (rows summing to 1), averaged over the batch.

    ``loss_b = -sum_c weight_c * targets_bc * log_softmax(logits)_bc`` — ``weight`` is an
    optional per-class weight ``[C]`` with the same meaning as in
    ``torch.nn.functional.cross_entropy`` for probability targets. ``sample_weight``
    ``[B]`` (optional) turns the batch mean into the weighted mean
    ``sum_b w_b loss_b / sum_b w_b`` (what training uses for class balancing, since it
    keeps the shape of each smoothed target intact).
    """
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ValueError(f"soft_cross_entropy: logits {list(logits.shape)} and targets {list(targets.shape)} must both be [B, C]")
    log_p = F.log_softmax(logits, dim=1)
    terms = targets.to(log_p.dtype) * log_p
    if weight is not None:
        if weight.shape != (logits.shape[1],):
            raise ValueError(f"soft_cross_entropy: weight must have shape [{logits.shape[1]}], got {list(weight.shape)}")
        terms = terms * weight.to(log_p.dtype)[None, :]
    per_row = -terms.sum(dim=1)
    if sample_weight is None:
        return per_row.mean()
    if sample_weight.shape != (logits.shape[0],):
        raise ValueError(f"soft_cross_entropy: sample_weight must have shape [{logits.shape[0]}], got {list(sample_weight.shape)}")
    sw = sample_weight.to(per_row.dtype)
    return (per_row * sw).sum() / sw.sum().clamp_min(torch.finfo(sw.dtype).tiny)
