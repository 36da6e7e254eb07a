"""Head training that streams batches from (memory-mapped) embeddings, on one process or many.

`train_head_streaming` is `fit.train_head` for data that does not fit in
memory: the embeddings stay where they are (an `np.memmap` of float16 rows, see
`geospot.encoders.store`), each step reads only its batch's rows, and what
grows with the dataset is a handful of per-row scalars (labels, coordinates,
weights: ~40 bytes a row). Same head, loss, optimiser, schedule, seeded
permutation and early stopping as `train_head` (imported from `fit`), so with
dropout 0 on one process the two give the same weights to float tolerance.

Under `torchrun` the head is wrapped in `DistributedDataParallel`: every rank
draws the same global batch, takes the positions `rank, rank + W, ...` of it,
and scales its loss so that DDP's gradient average equals the gradient of the
global batch's mean loss; dropout masks are drawn for the whole global batch
from a per-step seed and sliced the same way. Hence the same global batch
size and seed give the same weights on 1, 2 or N processes (to float
tolerance), and a checkpoint written by rank 0 after each epoch resumes on
any number of ranks.
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geospot.geo.distance import haversine_km
from geospot.models.estimate import point_estimates
from geospot.models.head import GeoCellHead, normalize_embeddings
from geospot.train import dist
from geospot.train.config import TrainConfig
from geospot.train.fit import (_adamw, _deterministic, _lr_factor, class_weights, effective_batch_size,
                               holdout_split)
from geospot.train.losses import haversine_smoothing_targets, soft_cross_entropy

__all__ = ["train_head_streaming"]

_EVAL_ROWS = 4096
STATE_JSON, STATE_TENSORS = "stream_state.json", "stream_state.safetensors"


class _GlobalBatchDropout(nn.Module):
    """Dropout whose mask is drawn for the whole global batch and sliced to this rank's rows."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.gen: torch.Generator | None = None
        self.positions: torch.Tensor | None = None
        self.global_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(self.global_rows, x.shape[1], generator=self.gen) >= self.p
        return x * keep[self.positions].to(x.device, x.dtype) / (1.0 - self.p)


def _rows_of(emb, idx: np.ndarray, device: torch.device, normalize: bool) -> torch.Tensor:
    """Rows `idx` of `emb` as float32 on `device` (only these rows are read from a memmap)."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(emb[idx]), dtype=np.float32)).to(device)
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"train_head_streaming: embedding row {int(idx[int(torch.nonzero(bad)[0])])} has NaN/inf values")
    return normalize_embeddings(x) if normalize else x


def train_head_streaming(
    emb,
    lat,
    lon,
    cells,
    config: TrainConfig | dict | None = None,
    groups=None,
    rows=None,
    *,
    ctx: dist.Context | None = None,
    state_dir: str | os.PathLike | None = None,
    progress: bool = True,
    val: tuple | None = None,
) -> tuple[GeoCellHead, dict[str, Any]]:
    """Fit a `GeoCellHead` on rows of `emb` ``[N, D]`` (any array indexable by row arrays, e.g. a memmap).

    - `lat`, `lon`, `groups`: per row of `emb` (in memory); `rows`: the usable rows (default all).
    - validation: a seeded hold-out of `config.val_fraction` of the groups (as `train_head`),
      scored on rank 0 in chunks; the decision to stop is broadcast.
    - `ctx`: from `dist.init()` (default: this process's context; one process without torchrun).
    - `state_dir`: rank 0 writes the full training state there after every epoch and a rerun
      (on any number of ranks) resumes from the last finished epoch.
    - `val`: ``(emb_val, lat_val, lon_val[, rows_val])``, a validation set of its own (e.g. another
      store's memory map; only rows `rows_val`, default all, are read, in chunks); then every
      row trains and `config.val_fraction` is not used (as `train_head`'s ``emb_val``).

    Returns ``(head on the CPU in eval mode, history)`` with the keys of `train_head`'s history
    plus ``world_size``, ``rows_per_s`` and ``resumed_from_epoch``.
    """
    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict(config) if isinstance(config, dict) else (config or TrainConfig())
    ctx = ctx or dist.current()
    n_all, dim = int(emb.shape[0]), int(emb.shape[1])
    rows = np.arange(n_all) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ValueError("train_head_streaming: no training rows")
    lat_np = np.asarray(lat, dtype=np.float64)[rows]
    lon_np = np.asarray(lon, dtype=np.float64)[rows]
    labels = np.asarray(cells.assign(lat_np, lon_np, nearest=True), dtype=np.int64)
    g = None if groups is None else np.asarray(groups, dtype=object)[rows]
    if val is not None:  # a validation set of its own: every row trains
        v_emb, v_lat, v_lon = val[:3]
        if int(v_emb.shape[1]) != dim:
            raise ValueError(f"train_head_streaming: validation embeddings have {v_emb.shape[1]} dimensions, not {dim}")
        v_rows = np.asarray(val[3], dtype=np.int64) if len(val) > 3 else np.arange(int(v_emb.shape[0]))
        v_lat = np.asarray(v_lat, dtype=np.float64)[v_rows]
        v_lon = np.asarray(v_lon, dtype=np.float64)[v_rows]
        train_pos, val_pos = np.arange(len(rows)), np.arange(len(v_rows))
    else:
        train_pos, val_pos = holdout_split(len(rows), g, cfg.val_fraction, cfg.seed)
        v_emb, v_lat, v_lon, v_rows = emb, lat_np[val_pos], lon_np[val_pos], rows[val_pos]
    weights = class_weights(labels[train_pos], len(cells), cfg.class_weighting)[labels]
    dev = ctx.device
    cell_lat = torch.as_tensor(np.asarray(cells.centroid_lat, dtype=np.float32), device=dev)
    cell_lon = torch.as_tensor(np.asarray(cells.centroid_lon, dtype=np.float32), device=dev)
    lat_t, lon_t, lab_t, w_t = (torch.as_tensor(a) for a in (lat_np, lon_np, labels, weights))

    with _deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = GeoCellHead(dim, len(cells), hidden=cfg.hidden, dropout=cfg.dropout)
    head.drop = _GlobalBatchDropout(cfg.dropout)
    head.to(dev)
    opt = _adamw(head, cfg)
    batch_size = effective_batch_size(len(train_pos), cfg.batch_size)
    steps_per_epoch = math.ceil(len(train_pos) / batch_size)
    factor = _lr_factor(cfg, steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    hist: dict[str, Any] = {"train_loss": [], "val_loss": [], "val_geoscore": [], "val_median_km": [], "lr": []}
    track = {"best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "epoch": 0, "stopped": False}
    best_state = None
    fingerprint = {"config": cfg.to_dict(), "rows": int(len(rows)), "dim": dim, "cells": cells.hash(),
                   "train_sha": _sha(train_pos), "val_sha": _sha(val_pos)}
    if val is not None:  # a different validation set is a different run
        fingerprint["val_set"] = _sha(np.round(np.c_[v_lat, v_lon] * 1e6).astype(np.int64).ravel())
    resumed = _load_state(state_dir, fingerprint, head, opt, gen, hist, track) if state_dir else None
    if resumed is not None:
        best_state = resumed
    start_epoch = int(track["epoch"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor, last_epoch=track["epoch"] * steps_per_epoch - 1
                                              if track["epoch"] else -1)
    model = head
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(head, device_ids=[dev.index] if dev.type == "cuda" else None)
    weighted = cfg.class_weighting != "none"
    from tqdm import tqdm

    first = cfg.epochs + 1 if track.get("stopped") else track["epoch"] + 1  # an early-stopped run is finished
    bar = tqdm(range(first, cfg.epochs + 1), desc=f"train head (rank {ctx.rank}/{ctx.world_size})",
               unit="epoch", file=sys.stderr, disable=not (progress and ctx.is_main))
    seen_rows, t_train = 0, time.perf_counter()
    with _deterministic():
        for epoch in bar:
            head.train()
            hist["lr"].append(float(opt.param_groups[0]["lr"]))
            loss_sum = 0.0
            perm = torch.as_tensor(train_pos)[torch.randperm(len(train_pos), generator=gen)]
            for step, batch in enumerate(perm.split(batch_size)):
                positions = torch.arange(ctx.rank, len(batch), ctx.world_size)
                local = batch[positions]
                head.drop.gen = torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, step))
                head.drop.positions, head.drop.global_rows = positions, len(batch)
                w_batch = w_t[batch] if weighted else None
                x = _rows_of(emb, rows[local.numpy()], dev, cfg.normalize)
                logits = model(x)
                loss = _scaled_loss(logits, local, lat_t, lon_t, lab_t, w_t if weighted else None,
                                    w_batch, len(batch), cell_lat, cell_lon, cfg, ctx.world_size)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) / ctx.world_size * len(batch)
                seen_rows += len(local)
            hist["train_loss"].append(dist.all_reduce_sum([loss_sum], dev)[0] / len(train_pos))
            track["epoch"] = epoch
            if len(val_pos):
                v = _validate(head, v_emb, v_rows, v_lat, v_lon, cells, cell_lat, cell_lon, cfg,
                              dev) if ctx.is_main else (0.0, 0.0, 0.0)
                v_loss, v_score, v_median = dist.broadcast_floats(list(v), device=dev)
                hist["val_loss"].append(v_loss)
                hist["val_geoscore"].append(v_score)
                hist["val_median_km"].append(v_median)
                bar.set_postfix(loss=f"{hist['train_loss'][-1]:.3f}", val_geoscore=f"{v_score:.0f}")
                if v_score > track["best_score"]:
                    track.update(best_score=v_score, best_epoch=epoch, bad_epochs=0)
                    best_state = copy.deepcopy(head.state_dict())
                else:
                    track["bad_epochs"] += 1
            else:
                track["best_epoch"] = epoch
            track["stopped"] = bool(len(val_pos) and 0 < cfg.patience <= track["bad_epochs"])
            if state_dir and ctx.is_main:
                _save_state(state_dir, fingerprint, head, opt, gen, hist, track, best_state)
            if track["stopped"]:
                break
    bar.close()
    t_train = time.perf_counter() - t_train
    if best_state is not None:
        head.load_state_dict(best_state)
    head.drop = nn.Dropout(cfg.dropout)
    head.cpu().eval()
    total_rows = dist.all_reduce_sum([float(seen_rows)], dev)[0]
    hist.update(best_epoch=int(track["best_epoch"]), epochs_run=len(hist["train_loss"]),
                stopped_early=len(hist["train_loss"]) < cfg.epochs, n_train=int(len(train_pos)),
                n_val=int(len(val_pos)), validation=("given" if val is not None else "held-out groups"
                                                     if groups is not None else "held-out rows")
                if len(val_pos) else "none", world_size=ctx.world_size,
                rows_per_s=float(total_rows / t_train) if t_train > 0 else 0.0,
                resumed_from_epoch=start_epoch,
                seconds=float(time.perf_counter() - t0))
    return head, hist


def _step_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * 1_000_003 + epoch * 65_537 + step) % (2**63 - 1)


def _sha(idx: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def _scaled_loss(logits, local, lat_t, lon_t, lab_t, w_all, w_batch, n_global, cell_lat, cell_lon,
                 cfg: TrainConfig, world: int) -> torch.Tensor:
    """This rank's share of the global batch's (weighted) mean loss, times `world` (DDP averages)."""
    if len(local) == 0:  # more ranks than rows in a last, short batch: take part with zero gradient
        return logits.sum() * 0.0
    denom = float(w_batch.sum()) if w_batch is not None else float(n_global)
    sw = w_all[local].to(logits.device) if w_all is not None else None
    local_denom = float(sw.sum()) if sw is not None else float(len(local))
    if cfg.loss == "haversine":
        targets = haversine_smoothing_targets(cell_lat, cell_lon, lat_t[local].to(logits.device),
                                              lon_t[local].to(logits.device), cfg.tau_km)
        mean = soft_cross_entropy(logits, targets.to(logits.dtype), sample_weight=sw)
    else:
        per_row = nn.functional.cross_entropy(logits, lab_t[local].to(logits.device), reduction="none")
        mean = per_row.mean() if sw is None else (per_row * sw.to(per_row.dtype)).sum() / sw.sum()
    return mean * (local_denom / denom * world)


@torch.no_grad()
def _validate(head, emb, rows, lat, lon, cells, cell_lat, cell_lon, cfg, dev) -> tuple[float, float, float]:
    """Validation loss, GeoScore and median error (km), streamed in chunks of rows."""
    from geospot.eval.metrics import geoscore

    head.eval()
    loss_sum, d_km = 0.0, []
    for a in range(0, len(rows), _EVAL_ROWS):
        x = _rows_of(emb, rows[a:a + _EVAL_ROWS], dev, cfg.normalize)
        logits = head(x)
        t_lat = torch.as_tensor(lat[a:a + _EVAL_ROWS], device=dev)
        t_lon = torch.as_tensor(lon[a:a + _EVAL_ROWS], device=dev)
        if cfg.loss == "haversine":
            targets = haversine_smoothing_targets(cell_lat, cell_lon, t_lat, t_lon, cfg.tau_km)
            loss = soft_cross_entropy(logits, targets.to(logits.dtype))
        else:
            lab = torch.as_tensor(cells.assign(lat[a:a + _EVAL_ROWS], lon[a:a + _EVAL_ROWS], nearest=True), device=dev)
            loss = nn.functional.cross_entropy(logits, lab)
        loss_sum += float(loss) * len(x)
        est = point_estimates(torch.softmax(logits, 1).cpu().numpy(), cells.centroid_lat, cells.centroid_lon,
                              top_k=cfg.estimate_top_k)
        d_km.append(haversine_km(est["local_lat"], est["local_lon"], lat[a:a + _EVAL_ROWS], lon[a:a + _EVAL_ROWS]))
    head.train()
    d = np.concatenate(d_km)
    return loss_sum / len(rows), float(np.mean(geoscore(d))), float(np.median(d))


# ---------------------------------------------------------------- resumable state (JSON + safetensors)


def _save_state(state_dir, fingerprint, head, opt, gen, hist, track, best_state) -> None:
    from safetensors.torch import save_file

    out = Path(state_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    sd = opt.state_dict()
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"opt.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = float(value)
    tensors["generator"] = gen.get_state()
    meta = {"fingerprint": fingerprint, "history": hist, "track": track, "opt_scalars": scalars,
            "param_groups": sd["param_groups"], "has_best": best_state is not None}
    tmp = out / f"{STATE_TENSORS}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / STATE_TENSORS)
    tmp = out / f"{STATE_JSON}.tmp"
    tmp.write_text(json.dumps(meta, default=float), encoding="utf-8")
    os.replace(tmp, out / STATE_JSON)  # written last: its presence marks a complete state


def _load_state(state_dir, fingerprint, head, opt, gen, hist, track):
    """Restore a saved state in place; returns the best weights so far (or None). No state: no-op."""
    from safetensors.torch import load_file

    meta_file, tensor_file = Path(state_dir) / STATE_JSON, Path(state_dir) / STATE_TENSORS
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta["fingerprint"] != fingerprint:
        raise RuntimeError(f"{meta_file}: training state of other settings or data; remove {state_dir} to start over")
    t = load_file(str(tensor_file))
    dev = next(head.parameters()).device
    head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
    state: dict[int, dict] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.to(dev)
    for pid, sc in meta["opt_scalars"].items():
        for name, value in sc.items():
            state.setdefault(int(pid), {})[name] = torch.tensor(value, dtype=torch.float32)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    gen.set_state(t["generator"])
    hist.update(meta["history"])
    track.update(meta["track"])
    return {k[5:]: v.to(dev) for k, v in t.items() if k.startswith("best.")} if meta["has_best"] else None
