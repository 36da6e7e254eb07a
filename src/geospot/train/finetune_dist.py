"""Fine-tuning (`--unfreeze N`) on one or several processes: DDP over the last N encoder blocks + head.

The recipe of `geospot.train.finetune.finetune` (AdamW on two learning rates, cosine
per epoch, augmentation drawn from ``(seed, epoch, row)``, the same losses and
checkpoint files) with the global-batch semantics of the streamed head training
(`geospot.train.stream`), so that 1, 2 or N processes give the same weights to
float tolerance for the same global batch and seed:

- every rank draws the same permutation per epoch and cuts it into the same global
  batches of ``config.batch_size``; rank r of W loads and trains positions r, r+W, ...
  of each batch (images are read from files or tar/zip shards, virtual paths alike);
- its loss is its rows' share of the global batch's (weighted) mean loss, times W, so
  DDP's gradient average is exactly the global batch's gradient. The global number (and
  class-weight sum) of the rows that loaded is all-reduced at each step, so an unreadable
  image changes a batch the same way on any number of ranks; unreadable rows are shared
  between ranks after each epoch and left out of the next epochs' batches;
- **BatchNorm statistics are frozen**: every BatchNorm layer stays in eval mode (its
  running mean/variance do not move; its affine weight and bias still train). Batch
  statistics of one rank's slice are not the global batch's, and SyncBatchNorm does not
  run on CPU. This is the one difference from the one-process `finetune` (which updates
  the statistics of the unfrozen blocks); with small per-GPU batches it is also the usual
  choice;
- dropout masks of the head and the stochastic-depth draws of EfficientNet blocks are
  drawn for the whole global batch from ``(seed, epoch, step)`` and sliced to the rank's rows.
  (Kernels are not forced deterministic: CPU kernels are, and on GPUs cuDNN's choices only
  move results within float tolerance, while forcing them refuses some backward kernels.)

Rank 0 writes the checkpoints (``finetune-state.json`` + ``finetune-epochNNNN.safetensors``,
never pickle) after every epoch; a rerun resumes from them on any number of ranks.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geospot.data.images import open_image
from geospot.train import dist
from geospot.train.finetune import (FinetuneConfig, _evaluate, _result_model, _row_rng, augment, iter_loaded,
                                    model_mask, model_preprocess, normalise_image, trainable_parts)
from geospot.train.finetune_state import _fingerprint, _load_checkpoint, _save_checkpoint, resume_state
from geospot.train.stream import _GlobalBatchDropout, _step_seed

__all__ = ["finetune_distributed"]

# Fingerprint marks: a one-process `finetune` state (BN statistics updated) is not resumed here.
_SEMANTICS = {"batchnorm": "frozen", "batches": "global, sliced by rank"}


class _Net(nn.Module):
    """encoder -> the model's normalisation -> head: one module for DDP (frozen parameters are ignored)."""

    def __init__(self, encoder: nn.Module, work) -> None:
        super().__init__()
        self.encoder, self.head, self._work = encoder, work.head, work

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._work.logits(self.encoder(x))


class _RowDraws:
    """Uniform draws for the rows of one global batch, sliced to this rank's positions."""

    def __init__(self) -> None:
        self.seed, self.positions, self.global_rows = 0, torch.zeros(0, dtype=torch.long), 0

    def for_stream(self, stream: int):
        def draw(n: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed((self.seed + 7919 * (stream + 1)) % (2**63 - 1))
            u = torch.rand(self.global_rows, generator=gen)[self.positions]
            if len(u) != n:
                raise RuntimeError(f"row draws: {len(u)} positions for a batch of {n} rows")
            return u
        return draw


def _train_modes(encoder: nn.Module, tail: list[nn.Module], head: nn.Module) -> None:
    encoder.eval()
    for m in tail:
        m.train(True)
    head.train(True)
    for m in encoder.modules():  # frozen statistics (see the module docstring)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _gather_errors(local: dict[str, str], ctx: dist.Context) -> dict[str, str]:
    """Every rank's `{row: reason}` on every rank (JSON bytes in a tensor, never a pickle)."""
    if not ctx.distributed:
        return dict(local)
    import torch.distributed as tdist

    data = torch.frombuffer(bytearray(json.dumps(local).encode("utf-8")), dtype=torch.uint8)
    size = torch.tensor([len(data)], dtype=torch.int64, device=ctx.device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=ctx.device) for _ in range(ctx.world_size)]
    tdist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[:len(data)] = data
    outs = [torch.zeros(longest, dtype=torch.uint8, device=ctx.device) for _ in range(ctx.world_size)]
    tdist.all_gather(outs, padded.to(ctx.device))
    merged: dict[str, str] = {}
    for out, s in zip(outs, sizes):
        merged.update(json.loads(out[:int(s)].cpu().numpy().tobytes().decode("utf-8")))
    return merged


def finetune_distributed(model, df, config: FinetuneConfig | dict | None = None, run_dir="finetune.run", *,
                         ctx: dist.Context | None = None, val_manifest=None, progress: bool = True):
    """Fine-tune ``model``'s last ``config.unfreeze`` encoder blocks and head with DDP; a new `GeoModel`.

    ``df``: the training rows (``path``, ``lat``, ``lon``; paths may be ``ARCHIVE.tar#MEMBER``),
    the same on every rank. ``ctx``: from `dist.init()` (one process without torchrun); the
    device is ``ctx.device`` (``config.device`` is not used). ``val_manifest``: scored on rank 0
    after every epoch. Every rank returns the model (with identical weights); rank 0 saves it.
    ``metrics["finetune"]`` adds ``world_size`` and ``rows_per_s``.
    """
    from geospot.train.fit import class_weights
    from geospot.train.losses import haversine_smoothing_targets

    config = FinetuneConfig.from_dict(config) if isinstance(config, dict) else (config or FinetuneConfig())
    ctx = ctx or dist.current()
    t0 = time.perf_counter()
    df = df.reset_index(drop=True)
    if len(df) == 0:
        raise ValueError("finetune: no training rows")
    device, world = ctx.device, ctx.world_size
    run_dir = Path(run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    encoder, tail, head, work, optimizer = trainable_parts(model, config, device)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    mask, preprocess, cells = model_mask(model, config.mask), model_preprocess(model, encoder), model.cells
    lat_all, lon_all = df["lat"].to_numpy(np.float64), df["lon"].to_numpy(np.float64)
    labels = np.asarray(cells.assign(lat_all, lon_all, nearest=True), dtype=np.int64)
    cell_lat = torch.as_tensor(np.asarray(cells.centroid_lat, dtype=np.float64), device=device)
    cell_lon = torch.as_tensor(np.asarray(cells.centroid_lon, dtype=np.float64), device=device)
    weighted = config.class_weighting != "none"
    row_w = class_weights(labels, len(cells), config.class_weighting)[labels] if weighted else None

    fingerprint = dict(_fingerprint(model, df, config), semantics=_SEMANTICS)
    state = _load_checkpoint(run_dir, fingerprint)  # every rank reads rank 0's files
    history, bad_rows, start_epoch = resume_state(run_dir, state, encoder, head, optimizer)
    if state is not None and ctx.is_main:
        print(f"finetune: resuming {run_dir} after epoch {state['epoch']}/{config.epochs} on {world} "
              f"process(es)", file=sys.stderr)

    draws = _RowDraws()
    head.drop = _GlobalBatchDropout(head.dropout)
    blocks = [m for t in tail for m in t.modules() if hasattr(m, "drop_rate")]  # stochastic depth
    for i, block in enumerate(blocks):
        block.row_uniform = draws.for_stream(i)
    net: nn.Module = _Net(encoder, work)
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # buffers (frozen BN statistics) are equal everywhere: no broadcast at every forward
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    dummy = torch.zeros(1, 3, preprocess.size, preprocess.size, device=device)

    def load_train(row: int, epoch: int) -> np.ndarray:
        img = open_image(df["path"].iat[row])
        if mask is not None:
            img = mask.apply(img)
        return normalise_image(augment(img, preprocess.size, _row_rng(config.seed, epoch, row), config), preprocess)

    try:
        for epoch in range(start_epoch, config.epochs + 1):
            record = _epoch(epoch, config, df, bad_rows, net, encoder, tail, head, optimizer, base_lrs, draws,
                            load_train, labels, row_w, lat_all, lon_all, cell_lat, cell_lon, dummy, ctx,
                            haversine_smoothing_targets)
            if val_manifest is not None and ctx.is_main:
                val_df = val_manifest.df.reset_index(drop=True)
                metrics = _evaluate(work, encoder, val_df, preprocess, mask, config, device)
                record.update({f"val_{k}": v for k, v in metrics.items()})
            history.append(record)
            if ctx.is_main:
                _save_checkpoint(run_dir, epoch, encoder, head, optimizer, fingerprint, history, bad_rows)
                if progress:
                    val_txt = f", val GeoScore {record['val_geoscore']:.0f}" if "val_geoscore" in record else ""
                    print(f"finetune: epoch {epoch}/{config.epochs} loss {record['train_loss']:.4f}{val_txt} "
                          f"({record['seconds']:.0f} s, {record['rows_per_s']:.1f} rows/s on {world} "
                          f"process(es))", file=sys.stderr)
            dist.barrier()
    finally:
        for block in blocks:
            block.row_uniform = None
        head.drop = nn.Dropout(head.dropout)
    out = _result_model(model, encoder, head, mask, config, history, bad_rows, time.perf_counter() - t0)
    ran = [h for h in history[start_epoch - 1:]]
    out.metrics["finetune"].update(world_size=world, rows_per_s=float(
        sum(h["n_train"] for h in ran) / max(sum(h["seconds"] for h in ran), 1e-9)) if ran else 0.0)
    return out


def _epoch(epoch, config, df, bad_rows, net, encoder, tail, head, optimizer, base_lrs, draws, load_train, labels,
           row_w, lat_all, lon_all, cell_lat, cell_lon, dummy, ctx, smoothing) -> dict[str, Any]:
    """One epoch of global batches; updates `bad_rows` (all ranks agree) and returns the epoch's record."""
    t_epoch = time.perf_counter()
    world, rank, device = ctx.world_size, ctx.rank, ctx.device
    factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))  # cosine, per epoch
    for g, lr in zip(optimizer.param_groups, base_lrs):
        g["lr"] = lr * factor
    order = np.random.default_rng([config.seed, epoch]).permutation(len(df))
    order = order[~np.isin(order, np.asarray([int(r) for r in bad_rows], dtype=np.int64))]
    batches = [order[a:a + config.batch_size] for a in range(0, len(order), config.batch_size)]
    local = [b[rank::world] for b in batches]
    _train_modes(encoder, tail, head)
    new_bad: dict[str, str] = {}
    total, seen = 0.0, 0
    loader = iter_loaded(local, lambda row: load_train(int(row), epoch), config.workers)
    for step, (batch, (ok, x, errors)) in enumerate(zip(batches, loader)):
        positions = torch.arange(rank, len(batch), world)
        for i, reason in errors.items():
            row = int(local[step][i])
            new_bad[str(row)] = reason
            print(f"finetune: skipping {df['path'].iat[row]}: {reason}", file=sys.stderr)
        rows = local[step][ok]
        w = torch.as_tensor(row_w[rows] if row_w is not None else np.ones(len(rows)), device=device)
        n_glob, w_glob = dist.all_reduce_sum([float(len(rows)), float(w.sum())], device)
        if n_glob == 0:  # no rank loaded anything: every rank skips the step alike
            continue
        draws.seed = _step_seed(config.seed, epoch, step)
        draws.positions, draws.global_rows = positions[ok], len(batch)
        head.drop.gen = torch.Generator().manual_seed(draws.seed)
        head.drop.positions, head.drop.global_rows = positions[ok], len(batch)
        if x is None:  # this rank has no rows: take part with a zero gradient (DDP needs every rank)
            head.drop.positions = draws.positions = torch.zeros(1, dtype=torch.long)
            loss = net(dummy).sum() * 0.0
            local_sum = 0.0
        else:
            logits = net(torch.from_numpy(x).to(device))
            if config.loss == "haversine":
                targets = smoothing(cell_lat, cell_lon, torch.as_tensor(lat_all[rows], device=device),
                                    torch.as_tensor(lon_all[rows], device=device), config.tau_km)
                per_row = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1)
            else:
                per_row = F.cross_entropy(logits, torch.as_tensor(labels[rows], device=device), reduction="none")
            contrib = (per_row * w.to(per_row.dtype)).sum() / w_glob  # this rank's share of the global mean
            loss = contrib * world  # DDP averages gradients over ranks
            local_sum = float(contrib.detach()) * n_glob
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += local_sum
        seen += int(n_glob)
    total = dist.all_reduce_sum([total], device)[0]
    bad_rows.update(_gather_errors(new_bad, ctx))
    if seen == 0:
        raise ValueError("finetune: no training batch could be loaded (see the errors above)")
    seconds = time.perf_counter() - t_epoch
    return {"epoch": epoch, "train_loss": total / seen, "n_train": seen, "lr_head": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3), "rows_per_s": seen / max(seconds, 1e-9), "world_size": world}
