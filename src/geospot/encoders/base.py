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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


# Resized images longer than this many times `resize` are cropped before resizing, which
# bounds the memory of preprocessing to ~_MAX_ASPECT x resize^2 pixels whatever the input.
_MAX_ASPECT = 8


@dataclass(frozen=True)
class Preprocess:
    """PIL image -> float32 [3, size, size]: resize shorter side, centre crop, normalise.

    `mean` and `std` are per-channel (RGB) in [0, 1] pixel units, the torchvision
    convention: out = (pixel / 255 - mean) / std.
    """

    size: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # Normalise containers (JSON gives lists) so equality and hashing are stable.
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "resize", int(self.resize))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.size <= 0 or self.resize < self.size:
            raise ValueError(f"Preprocess needs 0 < size <= resize, got size={self.size}, resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Preprocess needs 3 means and 3 stds, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocess stds must be positive, got {self.std}")
        if self.interpolation not in _RESAMPLING:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; known: {sorted(_RESAMPLING)}")

    def __call__(self, img: Image.Image) -> np.ndarray:
        """Return the normalised, centre-cropped image as float32 [3, size, size]."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ValueError(f"empty image ({w}x{h})")
        scale = self.resize / min(w, h)
        new_w, new_h = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if max(new_w, new_h) > _MAX_ASPECT * self.resize:
            # Extreme aspect ratio (a 20000 x 1 strip): resizing the whole image would blow the
            # long side up to millions of pixels. Resize only the source region of the centre crop.
            side = self.size / scale
            left, top = (w - side) / 2 if w > side else 0.0, (h - side) / 2 if h > side else 0.0
            box = (left, top, min(w, left + side), min(h, top + side))
            img = img.resize((self.size, self.size), _RESAMPLING[self.interpolation], box=box, reducing_gap=3.0)
        else:
            if (new_w, new_h) != (w, h):
                # reducing_gap decodes huge photos through a cheap box pre-reduction first.
                img = img.resize((new_w, new_h), _RESAMPLING[self.interpolation], reducing_gap=3.0)
            left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(img, dtype=np.float32)  # [S, S, 3]
        mean = np.asarray(self.mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)
        arr = (arr - mean) * inv_std
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in model configs and cache fingerprints)."""
        return {
            "size": self.size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        """Inverse of `to_dict`."""
        known = {"size", "resize", "mean", "std", "interpolation"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Preprocess fields {sorted(unknown)}")
        return cls(**d)


def cache_root() -> Path:
    """geospot's cache folder: $GEOSPOT_CACHE, default ~/.cache/geospot."""
    root = Path(os.environ.get("GEOSPOT_CACHE") or Path.home() / ".cache" / "geospot")
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"cache folder {root} (GEOSPOT_CACHE) is not a folder; point GEOSPOT_CACHE at a "
                                 f"folder geospot may write")
    return root


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
