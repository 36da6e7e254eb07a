"""Train a geocell head on frozen embeddings.

Mini-batch AdamW with a cosine or step schedule; haversine label smoothing
(PIGEON) or plain cross-entropy; optional inverse-sqrt class weighting; early
stopping on the validation GeoScore of the top-k weighted-mean estimate.
Seeded and deterministic: the same inputs and seed give bit-identical weights.
Time and memory grow linearly with the number of rows (smoothing targets are
built per batch from the [C] centroid table, never as an [N, C] matrix).
"""
from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from geospot.geo.distance import haversine_km
from geospot.models.estimate import point_estimates
from geospot.models.fusion import group_index
from geospot.models.head import GeoCellHead, normalize_embeddings
from geospot.train.config import CLASS_WEIGHTINGS, LOSSES, LR_SCHEDULES, TrainConfig  # noqa: F401 (re-exported)
from geospot.train.losses import haversine_smoothing_targets, soft_cross_entropy

_EVAL_BATCH = 4096


def effective_batch_size(n_rows: int, batch_size: int, min_steps: int = 8) -> int:
    """Shrink the batch on small datasets so an epoch still takes ``min_steps``
    optimiser steps (never below 16 rows): with a few hundred images, batches
    of 256 give so few updates that early stopping fires before learning starts."""
    return max(1, min(batch_size, max(16, math.ceil(n_rows / min_steps))))


def class_weights(labels: np.ndarray, num_cells: int, scheme: str = "inv_sqrt") -> np.ndarray:
    """Per-class loss weights ``[num_cells]`` from the training labels.

    ``"none"``: all ones. ``"inv_sqrt"``: ``1 / sqrt(count)`` for classes present
    in ``labels``, normalised to mean 1 over those classes; absent classes get 0
    (they have no rows to weight).
    """
    if scheme not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got {scheme!r}")
    if scheme == "none":
        return np.ones(num_cells, dtype=np.float64)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_cells).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_cells, dtype=np.float64)
    w[present] = 1.0 / np.sqrt(counts[present])
    return w / w[present].mean()


def train_head(
    emb,
    lat,
    lon,
    cells,
    config: TrainConfig | dict | None = None,
    groups=None,
    emb_val=None,
    lat_val=None,
    lon_val=None,
    progress: bool = True,
) -> tuple[GeoCellHead, dict[str, Any]]:
    """Fit a `GeoCellHead` mapping embeddings ``[N, D]`` to the cells of ``cells``
    (`train_head_aux` without auxiliary targets).

    Labels are ``cells.assign(lat, lon, nearest=True)``. Validation: the given
    ``emb_val/lat_val/lon_val``; else a seeded hold-out of ``val_fraction`` of the
    groups (``groups``, e.g. ``location_id``; rows when None); when that is empty
    (tiny data) training runs the fixed ``epochs``. Early stopping keeps the epoch
    with the best validation GeoScore and restores its weights.

    Returns ``(head in eval mode, history)``; ``history`` holds per-epoch lists
    ``train_loss``, ``val_loss``, ``val_geoscore``, ``val_median_km``, ``lr``
    (val lists empty without validation) and ``best_epoch`` (1-based),
    ``epochs_run``, ``stopped_early``, ``n_train``, ``n_val``, ``validation``,
    ``seconds``.
    """
    head, _, history = train_head_aux(emb, lat, lon, cells, config, groups=groups, emb_val=emb_val,
                                      lat_val=lat_val, lon_val=lon_val, progress=progress)
    return head, history


def train_head_aux(emb, lat, lon, cells, config: TrainConfig | dict | None = None, aux=None, groups=None,
                   emb_val=None, lat_val=None, lon_val=None, progress: bool = True):
    """`train_head` plus auxiliary heads trained jointly: ``(head, aux_heads or None, history)``.

    ``aux``: a list of `geospot.models.aux.AuxTarget` (per-row labels, -1 unknown,
    and a loss weight). The auxiliary loss of each reaches the shared layers
    scaled by its weight, its own head learns at full strength; a weight of 0
    leaves the geocell head exactly as without it (`geospot.models.aux`).
    ``aux_heads`` is a `geospot.models.aux.AuxHeadsNumpy`; ``history`` gains
    ``aux_train_acc`` per head (accuracy on known training rows).
    """
    t0 = time.perf_counter()
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    x = _embeddings(emb, "emb")
    if x.shape[0] == 0:
        raise ValueError("train_head: no training rows (emb is empty)")
    lat_np, lon_np = _coords(lat, lon, x.shape[0], "lat/lon")
    n_cells = len(cells)
    if n_cells < 1:
        raise ValueError("train_head: the cell table is empty")
    labels = np.asarray(cells.assign(lat_np, lon_np, nearest=True), dtype=np.int64)
    if labels.shape != lat_np.shape or labels.min() < 0 or labels.max() >= n_cells:
        raise ValueError(f"train_head: cells.assign returned labels outside [0, {n_cells})")

    given_val = [v is not None for v in (emb_val, lat_val, lon_val)]
    if any(given_val) and not all(given_val):
        raise ValueError("train_head: give all of emb_val, lat_val and lon_val, or none of them")
    if all(given_val):
        xv = _embeddings(emb_val, "emb_val")
        if xv.shape[1] != x.shape[1]:
            raise ValueError(f"train_head: emb_val has {xv.shape[1]} dimensions but emb has {x.shape[1]}")
        lat_v, lon_v = _coords(lat_val, lon_val, xv.shape[0], "lat_val/lon_val")
        train_idx = np.arange(x.shape[0])
        validation = "given" if xv.shape[0] else "none"
    else:
        train_idx, val_idx = holdout_split(x.shape[0], groups, config.val_fraction, config.seed)
        xv, lat_v, lon_v = x[val_idx], lat_np[val_idx], lon_np[val_idx]
        validation = ("held-out groups" if groups is not None else "held-out rows") if len(val_idx) else "none"
    if config.normalize:
        x, xv = normalize_embeddings(x), normalize_embeddings(xv)

    # float32 centroids: smoothing targets in float32 are accurate to metres and twice as fast.
    cell_lat = torch.as_tensor(np.asarray(cells.centroid_lat, dtype=np.float32))
    cell_lon = torch.as_tensor(np.asarray(cells.centroid_lon, dtype=np.float32))
    sample_w = torch.as_tensor(class_weights(labels[train_idx], n_cells, config.class_weighting)[labels])
    aux = list(aux or [])
    for a in aux:
        if len(a.labels) != x.shape[0]:
            raise ValueError(f"train_head: auxiliary target {a.name!r} has {len(a.labels)} labels for {x.shape[0]} rows")
    aux_y = torch.as_tensor(np.stack([a.labels for a in aux], 1)) if aux else None
    data = _Data(x, torch.as_tensor(lat_np), torch.as_tensor(lon_np), torch.as_tensor(labels), sample_w, aux_y)
    val = None
    if xv.shape[0]:
        labels_v = torch.as_tensor(np.asarray(cells.assign(lat_v, lon_v, nearest=True), dtype=np.int64))
        val = _Data(xv, torch.as_tensor(lat_v), torch.as_tensor(lon_v), labels_v, torch.ones(xv.shape[0], dtype=torch.float64))

    with _deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head, aux_heads, history = _fit(data, torch.as_tensor(train_idx), val, cells, cell_lat, cell_lon, x.shape[1],
                                        config, progress, aux)
    history.update(n_train=int(len(train_idx)), n_val=int(xv.shape[0]), validation=validation,
                   seconds=float(time.perf_counter() - t0))
    stored = None
    if aux_heads is not None:
        from geospot.models.aux import AuxHeadsNumpy, AuxSpec

        stored = AuxHeadsNumpy([AuxSpec(a.name, a.classes, a.weight) for a in aux], aux_heads.arrays())
        with torch.no_grad():
            head.eval()
            feats = head.features(data.x[torch.as_tensor(train_idx)]).numpy()
        pred = stored.predict(feats)
        for a in aux:
            y = a.labels[train_idx]
            known = y >= 0
            acc = float((pred[a.name].argmax(1)[known] == y[known]).mean()) if known.any() else None
            history.setdefault("aux_train_acc", {})[a.name] = acc
    return head, stored, history


def holdout_split(n_rows: int, groups, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_idx, val_idx)`` holding out ``round(fraction * n_groups)`` whole groups.

    Rows are their own groups when ``groups`` is None. The validation side is
    empty when that rounds to 0 or would leave no training group.
    """
    if groups is None:
        codes, n_groups = np.arange(n_rows, dtype=np.int64), n_rows
    else:
        codes, n_groups = group_index(groups)
        if len(codes) != n_rows:
            raise ValueError(f"holdout_split: groups has {len(codes)} rows but there are {n_rows} embeddings")
    n_val = int(round(float(fraction) * n_groups))
    if n_val < 1 or n_val >= n_groups:
        return np.arange(n_rows), np.arange(0)
    is_val = np.zeros(n_groups, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_groups)[:n_val]] = True
    return np.flatnonzero(~is_val[codes]), np.flatnonzero(is_val[codes])


@dataclass
class _Data:
    x: torch.Tensor  # [N, D] float32 (normalised when configured)
    lat: torch.Tensor  # [N] float64
    lon: torch.Tensor
    label: torch.Tensor  # [N] int64
    weight: torch.Tensor  # [N] float64 sample weights
    aux: torch.Tensor | None = None  # [N, A] int64 auxiliary labels, -1 unknown


def _fit(data: _Data, train_idx: torch.Tensor, val: _Data | None, cells, cell_lat, cell_lon,
         embed_dim: int, cfg: TrainConfig, progress: bool, aux: list | None = None):
    head = GeoCellHead(embed_dim, len(cells), hidden=cfg.hidden, dropout=cfg.dropout)
    opt = _adamw(head, cfg)
    batch_size = effective_batch_size(len(train_idx), cfg.batch_size)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg, steps_per_epoch))
    aux_heads = aux_opt = aux_sched = None
    if aux:  # own optimiser and zero init: the geocell head's optimiser state and random draws stay as without
        from geospot.models.head import AuxHeads

        aux_heads = AuxHeads(head.feature_dim, {a.name: len(a.classes) for a in aux})
        aux_opt = _adamw(aux_heads, cfg)
        aux_sched = torch.optim.lr_scheduler.LambdaLR(aux_opt, _lr_factor(cfg, steps_per_epoch))
    gen = torch.Generator().manual_seed(cfg.seed)
    weighted = cfg.class_weighting != "none"
    hist: dict[str, Any] = {"train_loss": [], "val_loss": [], "val_geoscore": [], "val_median_km": [], "lr": []}
    best_score, best_epoch, best_state, bad_epochs = -math.inf, 0, None, 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="train head", unit="epoch", file=sys.stderr, disable=not progress)
    for epoch in bar:
        head.train()
        hist["lr"].append(float(opt.param_groups[0]["lr"]))
        total, seen = 0.0, 0
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for batch in perm.split(batch_size):
            if aux_heads is None:
                loss = _batch_loss(head(data.x[batch]), data, batch, cell_lat, cell_lon, cfg, weighted)
            else:
                feats = head.features(data.x[batch])
                loss = _batch_loss(head.out(feats), data, batch, cell_lat, cell_lon, cfg, weighted)
                aux_loss = _aux_loss(aux_heads, feats, data.aux[batch], aux)
                aux_opt.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            if aux_heads is None:
                loss.backward()
            else:
                (loss + aux_loss).backward()
                aux_opt.step()
                aux_sched.step()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        hist["train_loss"].append(total / max(seen, 1))
        if val is None:
            best_epoch = epoch
            if progress:
                bar.write(f"epoch {epoch}/{cfg.epochs}: train loss {hist['train_loss'][-1]:.4f}", file=sys.stderr)
            continue
        v_loss, v_score, v_median = _validate(head, val, cells, cell_lat, cell_lon, cfg)
        hist["val_loss"].append(v_loss)
        hist["val_geoscore"].append(v_score)
        hist["val_median_km"].append(v_median)
        bar.set_postfix(loss=f"{hist['train_loss'][-1]:.3f}", val_geoscore=f"{v_score:.0f}")
        if progress:
            bar.write(f"epoch {epoch}/{cfg.epochs}: train loss {hist['train_loss'][-1]:.4f}, validation loss "
                      f"{v_loss:.4f}, GeoScore {v_score:.0f}, median {v_median:.0f} km", file=sys.stderr)
        if v_score > best_score:
            best_score, best_epoch, bad_epochs = v_score, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
            best_aux = copy.deepcopy(aux_heads.state_dict()) if aux_heads is not None else None
        else:
            bad_epochs += 1
            if 0 < cfg.patience <= bad_epochs:
                break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
        if aux_heads is not None:
            aux_heads.load_state_dict(best_aux)
    head.eval()
    hist.update(best_epoch=int(best_epoch), epochs_run=len(hist["train_loss"]),
                stopped_early=len(hist["train_loss"]) < cfg.epochs)
    if hist["val_geoscore"]:
        hist["best_val_geoscore"] = float(max(hist["val_geoscore"]))
    return head, (aux_heads.eval() if aux_heads is not None else None), hist


def _aux_loss(aux_heads, feats: torch.Tensor, labels: torch.Tensor, aux: list) -> torch.Tensor:
    """Sum of the auxiliary cross-entropies on known rows; each reaches the shared ``feats`` scaled by
    its weight (its own head gets the full gradient). Weight 0: ``feats`` detached, so nothing flows back."""
    total = feats.new_zeros(())
    for j, a in enumerate(aux):
        known = labels[:, j] >= 0
        if not bool(known.any()):
            continue
        w = float(a.weight)
        f = feats[known]
        f = f.detach() if w == 0 else (f if w == 1 else w * f + (1.0 - w) * f.detach())
        total = total + F.cross_entropy(aux_heads.heads[a.name](f), labels[known, j])
    return total


def _batch_loss(logits: torch.Tensor, data: _Data, idx: torch.Tensor, cell_lat, cell_lon,
                cfg: TrainConfig, weighted: bool) -> torch.Tensor:
    """Mean loss of one batch (rows ``idx`` of ``data``) given its logits."""
    sw = data.weight[idx] if weighted else None
    if cfg.loss == "haversine":
        targets = haversine_smoothing_targets(cell_lat, cell_lon, data.lat[idx], data.lon[idx], cfg.tau_km)
        return soft_cross_entropy(logits, targets.to(logits.dtype), sample_weight=sw)
    per_row = F.cross_entropy(logits, data.label[idx], reduction="none")
    if sw is None:
        return per_row.mean()
    sw = sw.to(per_row.dtype)
    return (per_row * sw).sum() / sw.sum()


@torch.no_grad()
def _validate(head: GeoCellHead, val: _Data, cells, cell_lat, cell_lon, cfg: TrainConfig) -> tuple[float, float, float]:
    """Validation loss, GeoScore and median error (km) of the weighted-mean estimate."""
    from geospot.eval.metrics import geoscore

    head.eval()
    loss_sum, probs = 0.0, []
    for idx in torch.arange(val.x.shape[0]).split(_EVAL_BATCH):
        logits = head(val.x[idx])
        loss_sum += float(_batch_loss(logits, val, idx, cell_lat, cell_lon, cfg, weighted=False)) * len(idx)
        probs.append(torch.softmax(logits, dim=1))
    p = torch.cat(probs).numpy()
    est = point_estimates(p, cells.centroid_lat, cells.centroid_lon, top_k=cfg.estimate_top_k)
    d_km = haversine_km(est["local_lat"], est["local_lon"], val.lat.numpy(), val.lon.numpy())
    return loss_sum / val.x.shape[0], float(np.mean(geoscore(d_km))), float(np.median(d_km))


def _adamw(head: GeoCellHead, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused where this torch supports it on CPU (~6x faster steps; still deterministic)."""
    try:
        return torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    milestones = (0.5 * cfg.epochs, 0.75 * cfg.epochs)
    return lambda step: 0.1 ** sum(step / steps_per_epoch >= m for m in milestones)


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic torch kernels for the duration of training, then the caller's setting back."""
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _embeddings(emb, name: str) -> torch.Tensor:
    t = emb.detach().cpu() if isinstance(emb, torch.Tensor) else torch.from_numpy(np.asarray(emb))
    if t.ndim != 2 or t.shape[1] < 1:
        raise ValueError(f"train_head: {name} must be a 2-D array [N, D], got shape {list(t.shape)}")
    t = t.to(torch.float32).contiguous()
    bad = torch.nonzero(~torch.isfinite(t).all(dim=1)).flatten()
    if bad.numel():
        raise ValueError(f"train_head: {name} row {int(bad[0])} has NaN/inf values ({bad.numel()} bad row(s))")
    return t


def _coords(lat, lon, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    la = np.asarray(lat, dtype=np.float64).reshape(-1)
    lo = np.asarray(lon, dtype=np.float64).reshape(-1)
    if la.shape[0] != n or lo.shape[0] != n:
        raise ValueError(f"train_head: {name} have {la.shape[0]}/{lo.shape[0]} values for {n} embeddings")
    bad = np.flatnonzero(~(np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180)))
    if bad.size:
        raise ValueError(f"train_head: {name} row {int(bad[0])} is not a valid coordinate "
                         f"({la[bad[0]]}, {lo[bad[0]]}); {bad.size} bad row(s)")
    return la, lo
