"""The geocell classifier: embeddings in, one logit per geographic cell out."""
from __future__ import annotations

import torch
from torch import nn


def normalize_embeddings(emb: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to L2 norm ``sqrt(D)`` (unit RMS per component); all-zero rows stay zero.

    The one normalisation used both when training a head and when predicting
    with it (``normalize: true`` in the config), so the two can never drift
    apart. Scaling unit vectors by ``sqrt(D)`` keeps logits of a default-
    initialised linear layer at O(1) and lets AdamW reach confident predictions
    in a few epochs (on unit vectors the weights would have to grow ~sqrt(D)x).
    Differentiable; invariant to the input's scale.
    """
    scale = emb.shape[-1] ** 0.5
    return emb * (scale / torch.linalg.vector_norm(emb, dim=-1, keepdim=True).clamp_min(eps))


class GeoCellHead(nn.Module):
    """Linear (``hidden == 0``) or one-hidden-layer MLP classifier over geocells.

    ``forward(emb [B, D]) -> logits [B, C]``. Dropout is applied to the input
    embedding (and after the hidden activation for the MLP); it is inactive in
    ``eval()`` mode. Parameter names are stable because checkpoints store them:
    ``out.weight``/``out.bias`` and, for the MLP, ``hidden_layer.weight``/``.bias``.
    """

    def __init__(self, embed_dim: int, num_cells: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_cells", num_cells)):
            if int(value) != value or value < 1:
                raise ValueError(f"GeoCellHead: {name} must be a positive integer, got {value!r}")
        if int(hidden) != hidden or hidden < 0:
            raise ValueError(f"GeoCellHead: hidden must be an integer >= 0, got {hidden!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"GeoCellHead: dropout must be in [0, 1), got {dropout!r}")
        self.embed_dim = int(embed_dim)
        self.num_cells = int(num_cells)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.drop = nn.Dropout(self.dropout)
        if self.hidden > 0:
            self.hidden_layer: nn.Linear | None = nn.Linear(self.embed_dim, self.hidden)
            self.act = nn.GELU()
            self.out = nn.Linear(self.hidden, self.num_cells)
        else:
            self.hidden_layer = None
            self.out = nn.Linear(self.embed_dim, self.num_cells)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_cells]`` for embeddings ``[B, embed_dim]``."""
        return self.out(self.features(emb))

    def features(self, emb: torch.Tensor) -> torch.Tensor:
        """What the output layer (and any auxiliary head) reads: the embedding, or the hidden layer."""
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"GeoCellHead: expected embeddings of shape [B, {self.embed_dim}], got {list(emb.shape)}")
        x = self.drop(emb)
        if self.hidden_layer is not None:
            x = self.drop(self.act(self.hidden_layer(x)))
        return x

    @property
    def feature_dim(self) -> int:
        return self.hidden or self.embed_dim

    def config(self) -> dict:
        """The constructor arguments, as stored in a checkpoint's ``config.json``."""
        return {"embed_dim": self.embed_dim, "num_cells": self.num_cells, "hidden": self.hidden, "dropout": self.dropout}

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_cells={self.num_cells}, hidden={self.hidden}, dropout={self.dropout}"


class AuxHeads(nn.Module):
    """Linear auxiliary classifiers on a `GeoCellHead`'s features (see `geospot.models.aux`).

    Zero-initialised: creating them draws no random numbers, so adding heads
    never changes the geocell head's initialisation or dropout masks.
    """

    def __init__(self, feature_dim: int, sizes: dict[str, int]) -> None:
        super().__init__()
        # skip_init: nn.Linear's default initialisation would draw from the global generator
        self.heads = nn.ModuleDict({name: torch.nn.utils.skip_init(nn.Linear, feature_dim, k)
                                    for name, k in sizes.items()})
        for layer in self.heads.values():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: layer(features) for name, layer in self.heads.items()}

    def arrays(self) -> dict:
        """``{"<name>.weight": [K, F], "<name>.bias": [K]}`` as float32 NumPy (the stored layout)."""
        return {f"{name}.{k}": v.detach().cpu().float().numpy().copy()
                for name, layer in self.heads.items() for k, v in layer.state_dict().items()}
