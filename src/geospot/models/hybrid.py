"""OSV-5M's hybrid head: classification plus a per-cell regression of the offset from the cell centroid.

A classifier answers with cell centroids, so every photo of a cell gets the
same point (1,532 global photos, 767 distinct answers). The hybrid head adds,
for every cell, a linear regression from the embedding to the photo's offset
from that cell's centroid: east and north kilometres in the tangent plane at
the centroid (azimuthal equidistant), divided by the cell's scale (the RMS
distance of its training places to the centroid, at least ``min_scale_km``),
so targets are O(1) whatever the cell size. It is trained on the frozen
embeddings after (and independently of) the classifier, with a Huber loss on
the true cell's two outputs and weight decay that shrinks offsets toward the
centroid where the embedding says nothing. At prediction the top cell's
centroid moves by its predicted offset, clipped to ``max_scales`` scales.

Stored as ``hybrid.safetensors`` (weights, scales) + ``hybrid.json`` (cells hash).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geospot.geo.tangent import destination, tangent_offsets_km  # noqa: F401 (re-exported; torch-free)


class HybridOffsets(nn.Module):
    """Per-cell linear offset regression: embeddings ``[B, D]`` -> ``[B, C, 2]`` (cell-scale units)."""

    def __init__(self, embed_dim: int, num_cells: int):
        super().__init__()
        self.embed_dim, self.num_cells = int(embed_dim), int(num_cells)
        self.linear = nn.Linear(self.embed_dim, 2 * self.num_cells)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("scale_km", torch.ones(self.num_cells, dtype=torch.float64))
        self.cells_hash = ""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear(emb).view(-1, self.num_cells, 2)

    def save(self, directory) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "hybrid.safetensors"))
        (directory / "hybrid.json").write_text(json.dumps({"format_version": 1, "embed_dim": self.embed_dim,
                                                           "num_cells": self.num_cells,
                                                           "cells_hash": self.cells_hash}) + "\n")

    @classmethod
    def load(cls, directory, cells=None) -> "HybridOffsets":
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / "hybrid.json").read_text())
            head = cls(meta["embed_dim"], meta["num_cells"])
            head.load_state_dict(load_file(str(directory / "hybrid.safetensors")))
            head.cells_hash = str(meta["cells_hash"])
        except Exception as exc:
            raise ValueError(f"{directory / 'hybrid.json'}: unreadable hybrid head ({exc})") from exc
        if cells is not None and head.cells_hash != cells.hash():
            raise ValueError(f"{directory / 'hybrid.json'}: built for another cell table")
        return head.eval()


def _normalize(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def fit_hybrid(emb, lat, lon, cells, epochs: int = 40, lr: float = 1e-2, weight_decay: float = 1e-3,
               batch_size: int = 256, min_scale_km: float = 5.0, seed: int = 0) -> HybridOffsets:
    """Train the offset regression on (L2-normalised) embeddings of training images at ``lat/lon``."""
    lat = np.asarray(lat, np.float64).reshape(-1)
    lon = np.asarray(lon, np.float64).reshape(-1)
    label = cells.assign(lat, lon, nearest=True)
    off = tangent_offsets_km(lat, lon, cells.centroid_lat[label], cells.centroid_lon[label])
    sq = np.bincount(label, weights=(off ** 2).sum(1), minlength=len(cells))
    n = np.bincount(label, minlength=len(cells))
    scale = np.sqrt(sq / np.maximum(n, 1))
    scale = np.where(n > 0, np.maximum(scale, min_scale_km), max(min_scale_km, float(np.median(scale[n > 0]))))
    target = torch.as_tensor(off / scale[label][:, None], dtype=torch.float32)
    x = _normalize(emb)
    y_cell = torch.as_tensor(label)
    head = HybridOffsets(x.shape[1], len(cells))
    head.scale_km.copy_(torch.as_tensor(scale))
    head.cells_hash = cells.hash()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    rows = torch.arange(len(x))
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            pred = head(x[batch])[rows[: len(batch)], y_cell[batch]]
            loss = nn.functional.huber_loss(pred, target[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def hybrid_estimate(head: HybridOffsets, emb, cell_idx, cells, max_scales: float = 2.0):
    """Centroid of ``cell_idx [B]`` (e.g. the top cell) moved by the predicted offset of that cell."""
    idx = torch.as_tensor(np.asarray(cell_idx, np.int64))
    with torch.no_grad():
        pred = head(_normalize(emb))[torch.arange(len(idx)), idx].double()
    norm = pred.norm(dim=1, keepdim=True)
    pred = pred * (max_scales / norm.clamp_min(max_scales)).clamp(max=1.0)  # clip the length to max_scales
    off_km = (pred * head.scale_km[idx][:, None]).numpy()
    idx = idx.numpy()
    return destination(cells.centroid_lat[idx], cells.centroid_lon[idx], off_km)
