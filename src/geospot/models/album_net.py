"""The album model in torch, for training (see `geospot.models.album` for what it computes).

Written with explicit layers (not `nn.TransformerEncoderLayer`) so that the
NumPy forward in `geospot.models.album` mirrors it tensor for tensor.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geospot.models.album import (ALBUM_WEIGHTS, EPS, FORMAT, FORMAT_VERSION, N_FEAT, NumpyAlbumModel, write_meta)


class _Block(nn.Module):
    """Pre-norm self-attention with learned time-gap and step-distance biases, then a GELU MLP."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        # softplus(-1) ~ 0.31: attention starts mildly preferring photos close in time and order
        self.time_slope = nn.Parameter(torch.full((heads,), -1.0))
        self.step_slope = nn.Parameter(torch.full((heads,), -1.0))
        self.sim_slope = nn.Parameter(torch.zeros(heads))
        self.drop = nn.Dropout(dropout)

    def forward(self, h, dt, steps, sim, key_ok):
        b, n, d = h.shape
        hd = d // self.heads
        qkv = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, hd)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        s = s - F.softplus(self.time_slope)[None, :, None, None] * dt[:, None] \
            - F.softplus(self.step_slope)[None, :, None, None] * steps[:, None] \
            + self.sim_slope[None, :, None, None] * sim[:, None]
        a = torch.softmax(s.masked_fill(~key_ok[:, None, None, :], -1e9), dim=-1)
        h = h + self.drop(self.proj((a @ v).transpose(1, 2).reshape(b, n, d)))
        return h + self.drop(self.ff2(F.gelu(self.ff1(self.norm2(h)))))


class AlbumNet(nn.Module):
    """``(emb [B, L, D], probs [B, L, C], time features, pair biases, mask) -> logits [B, L, C]``."""

    def __init__(self, embed_dim: int, num_cells: int, d_model: int = 64, n_layers: int = 1, n_heads: int = 4,
                 ff: int = 128, dropout: float = 0.1, correction: bool = False, embedding_input: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "embed_dim": int(embed_dim),
                     "num_cells": int(num_cells), "d_model": int(d_model), "n_layers": int(n_layers),
                     "n_heads": int(n_heads), "ff": int(ff), "cells_hash": ""}
        d = d_model
        # The photo's own embedding as an input lets the model memorise the training photos (measured worse
        # on held-out trips); by default photos meet only through their similarity and their probabilities.
        self.in_emb = nn.Linear(embed_dim, d, bias=False) if embedding_input else None
        self.meta["embedding_input"] = bool(embedding_input)
        self.in_probs = nn.Linear(num_cells, d, bias=False)
        self.in_feat = nn.Linear(N_FEAT, d)
        self.in_norm, self.out_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.layers = nn.ModuleList([_Block(d, n_heads, ff, dropout) for _ in range(n_layers)])
        self.pool_q, self.pool_k = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.pool_time_slope = nn.Parameter(torch.zeros(1))
        self.pool_step_slope = nn.Parameter(torch.full((1,), -2.0))
        self.pool_sim_slope = nn.Parameter(torch.zeros(1))
        self.gate = nn.Linear(d, 3)  # own answer, the neighbours' probabilities, the fused embedding's answer
        nn.init.zeros_(self.gate.weight)
        with torch.no_grad():  # starts near embedding averaging, the strongest simple baseline
            self.gate.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
        self.out = nn.Linear(d, num_cells)
        nn.init.zeros_(self.out.weight)  # the correction starts at zero: the base answer plus the neighbours
        nn.init.zeros_(self.out.bias)
        # A free per-cell correction learns a second classifier on the training photos (in-sample), which
        # measured worse on held-out trips: off by default, the answer is then the base's plus the neighbours'.
        self.out.requires_grad_(bool(correction))
        self.meta["correction"] = bool(correction)

    def forward(self, emb, probs, feats, dt, steps, mask, base):
        """``base``: the frozen base head as a function ``[N, D] embeddings -> [N, C] probabilities``."""
        x = F.normalize(emb, dim=-1)
        sim = x @ x.transpose(-1, -2)
        h = self.in_probs(probs) + self.in_feat(feats)
        if self.in_emb is not None:
            h = h + self.in_emb(x)
        h = self.in_norm(h)
        for block in self.layers:
            h = block(h, dt, steps, sim, mask)
        h = self.out_norm(h)
        n = h.shape[1]
        s = self.pool_q(h) @ self.pool_k(h).transpose(-1, -2) / math.sqrt(h.shape[-1])
        s = s - F.softplus(self.pool_time_slope) * dt - F.softplus(self.pool_step_slope) * steps \
            + self.pool_sim_slope * sim
        others = mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=h.device)[None]
        a = torch.softmax(s.masked_fill(~others, -1e9), dim=-1) * others
        ctx = a @ probs
        valid = mask[:, None, :].expand_as(s)
        fused = (torch.softmax(s.masked_fill(~valid, -1e9), dim=-1) * valid) @ x
        fused_p = torch.zeros_like(probs)
        fused_p[mask] = base(fused[mask]).to(probs.dtype)
        g = self.gate(h)
        g = torch.cat([g[..., :1], g[..., 1:2].masked_fill(~others.any(-1, keepdim=True), -1e9), g[..., 2:]], -1)
        mix = torch.softmax(g, dim=-1)
        q = mix[..., :1] * probs + mix[..., 1:2] * ctx + mix[..., 2:] * fused_p
        out = torch.log(q + EPS) + self.out(h)
        return out.masked_fill(~mask[..., None], 0.0)

    # ------------------------------------------------------------------ storage

    def to_numpy(self) -> NumpyAlbumModel:
        return NumpyAlbumModel(dict(self.meta), {k: v.detach().cpu().numpy().astype(np.float32)
                                                 for k, v in self.state_dict().items()})

    def save(self, directory, cells_hash: str, summary: dict | None = None) -> Path:
        """Write ``album.json`` + ``album.safetensors`` into a model directory (beside the base model)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: model directory not found")
        self.meta["cells_hash"] = cells_hash
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(directory / ALBUM_WEIGHTS))
        meta = dict(self.meta, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    training=summary or {})
        write_meta(directory, meta)  # written last: a model without it simply has no album model
        return directory
