"""The encoder contract: an image model that maps [B, 3, S, S] tensors to [B, D] embeddings.

Every encoder exposes the same pieces so that the embedding pipeline, Grad-CAM
and partial fine-tuning can work with any of them:

- `forward_features(x)` -> last feature map [B, C, h, w] (Grad-CAM hooks here);
- `forward_head(fmap)`  -> [B, D] global-average-pooled, *un-normalised* features;
- `forward(x)`          == `forward_head(forward_features(x))`;
- `blocks`              -> the ordered stages of the backbone (for `--unfreeze N`);
- `preprocess`          -> the `Preprocess` that turns a PIL image into the input;
- `weights_id`          -> a short hash of the current weights (changes when fine-tuned).

Embeddings are returned raw (not L2-normalised): the pooled features of a
ReLU6 network are non-negative and their norm carries information; callers
that want cosine geometry (retrieval, fusion) normalise themselves.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import nn

# Preprocessing and the cache folder are torch-free (the ONNX prediction path uses them);
# they are re-exported here for the encoders.
from geospot.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, cache_root  # noqa: F401

def state_dict_hash(module: nn.Module, length: int = 16) -> str:
    """sha256 prefix of a module's state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        # view as bytes: numpy has no bfloat16, and this avoids a copy
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()[:length]


class Encoder(nn.Module):
    """Base class of geospot image encoders (see the module docstring for the contract)."""

    name: str = "encoder"
    embed_dim: int = 0
    #: True when `forward_head` is the global average pool of `forward_features`' map (then the
    #: embedding is the mean of the map and a Grad-CAM heatmap accounts for all of it).
    pools_feature_map: bool = True

    def __init__(self, preprocess: Preprocess) -> None:
        super().__init__()
        self.preprocess = preprocess

    @property
    def input_size(self) -> int:
        """Side length S of the square input the network expects."""
        return self.preprocess.size

    @property
    def blocks(self) -> Sequence[nn.Module]:
        """The backbone's stages in order; `tail_modules(n)` builds on it."""
        raise NotImplementedError

    def head_modules(self) -> list[nn.Module]:
        """Parametrised modules after the last block (e.g. the 1x1 head conv + BN)."""
        return []

    def tail_modules(self, n: int) -> list[nn.Module]:
        """The modules to train when unfreezing the last `n` blocks: those blocks plus the head."""
        if n < 0:
            raise ValueError(f"cannot unfreeze a negative number of blocks ({n})")
        blocks = list(self.blocks)
        if n > len(blocks):
            raise ValueError(f"{self.name} has {len(blocks)} blocks; cannot unfreeze {n}")
        return (blocks[len(blocks) - n:] if n else []) + self.head_modules()

    @property
    def weights_id(self) -> str:
        """Hash of the current weights; fine-tuning changes it (it keys the ONNX cache)."""
        return state_dict_hash(self)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the (statically padded) network cannot take."""
        if torch.jit.is_tracing():
            return  # shapes are fixed during ONNX export; a check here would only warn
        s = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"{self.name} expects input [B, 3, {s}, {s}], got {list(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map [B, C, h, w]."""
        raise NotImplementedError

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Global average pooling: [B, C, h, w] -> [B, C] (raw, not L2-normalised)."""
        return fmap.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding [B, embed_dim]."""
        return self.forward_head(self.forward_features(x))
