"""Image preprocessing and the cache folder: the torch-free part of the encoder contract.

The ONNX prediction path (`geospot.encoders.onnx_runtime`) runs without torch,
so what it needs from an encoder -- its `Preprocess` -- lives here.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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

# Views -> crops per photo. A photo's embedding is the mean of its views' embeddings.
# "full" is one view of the whole frame: the shorter side resized to the crop size, so a square
# photo loses nothing (ImageNet's "center" crop of 224 out of 256 drops 12.5% on every side);
# the others crop the ImageNet frame (test-time augmentation).
VIEW_COUNTS = {"center": 1, "full": 1, "flip": 2, "five": 5, "ten": 10}
#: The views geospot trains and embeds with unless told otherwise: chosen leave-one-collection-out
#: (docs/accuracy.md: the full frame beat the centre crop by +47 GeoScore [29, 66] pooled, at 1x cost).
DEFAULT_VIEWS = "full"


@dataclass(frozen=True)
class Preprocess:
    """PIL image -> float32 [3, size, size]: resize shorter side, centre crop, normalise.

    `views` (test-time augmentation) names the crops `all_views` returns per photo.

    `mean` and `std` are per-channel (RGB) in [0, 1] pixel units, the torchvision
    convention: out = (pixel / 255 - mean) / std.
    """

    size: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    # Test-time views embedded per photo and averaged (see `all_views`, docs/encoders.md).
    views: str = "center"

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
        if self.views not in VIEW_COUNTS:
            raise ValueError(f"unknown views {self.views!r}; known: {list(VIEW_COUNTS)}")

    def with_views(self, views: str) -> "Preprocess":
        """The same preprocessing with other test-time views."""
        return dataclasses.replace(self, views=views)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """Return the normalised, centre-cropped image as float32 [3, size, size].

        Always one view, whatever `views`: Grad-CAM, audits and fine-tuning need one image
        per photo (the full frame for "full", else the centre crop). `all_views` gives every view."""
        return self.all_views(img, "full" if self.views == "full" else "center")[0]

    @property
    def n_views(self) -> int:
        """How many crops `all_views` returns per photo (the encoder runs this many times)."""
        return VIEW_COUNTS[self.views]

    def all_views(self, img: Image.Image, views: str | None = None) -> np.ndarray:
        """Every view of `img` as float32 [V, 3, size, size] (V = `n_views`), `views` overriding.

        "center": [centre]; "full": [the whole frame, shorter side resized to `size`, the
        longer side centre-cropped]; "flip": [centre, mirrored centre]; "five": the corners and
        centre of the resized image, torchvision's FiveCrop order [tl, tr, bl, br, centre];
        "ten": "five" then the mirror of each of those five crops."""
        views = self.views if views is None else views
        if views not in VIEW_COUNTS:
            raise ValueError(f"unknown views {views!r}; known: {list(VIEW_COUNTS)}")
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ValueError(f"empty image ({w}x{h})")
        resize = self.size if views == "full" else self.resize
        scale = resize / min(w, h)
        new_w, new_h = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        corners = views in ("five", "ten")
        crops: list[Image.Image] = []
        if max(new_w, new_h) > _MAX_ASPECT * resize:
            # Extreme aspect ratio (a 20000 x 1 strip): resizing the whole image would blow the
            # long side up to millions of pixels. Resize only the source region of each crop.
            side = self.size / scale
            left, top = (w - side) / 2 if w > side else 0.0, (h - side) / 2 if h > side else 0.0
            lefts = [0.0, max(0.0, w - side)] if corners else []
            tops = [0.0, max(0.0, h - side)] if corners else []
            boxes = [(x, y) for y in tops for x in lefts] + [(left, top)]
            crops = [img.resize((self.size, self.size), _RESAMPLING[self.interpolation],
                                box=(x, y, min(w, x + side), min(h, y + side)), reducing_gap=3.0)
                     for x, y in boxes]
        else:
            if (new_w, new_h) != (w, h):
                # reducing_gap decodes huge photos through a cheap box pre-reduction first.
                img = img.resize((new_w, new_h), _RESAMPLING[self.interpolation], reducing_gap=3.0)
            left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
            offsets = [(0, 0), (new_w - self.size, 0), (0, new_h - self.size),
                       (new_w - self.size, new_h - self.size)] if corners else []
            crops = [img.crop((x, y, x + self.size, y + self.size)) for x, y in offsets + [(left, top)]]
        pixels = np.stack([np.asarray(c, dtype=np.uint8) for c in crops]).transpose(0, 3, 1, 2)  # [V, 3, S, S]
        mean = np.asarray(self.mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)
        # One pass from uint8 straight into the float32 output, channels first: the same numbers as
        # converting, normalising and transposing in turn, ~8x faster (0.1 ms against 0.85 ms a photo).
        arr = np.empty(pixels.shape, np.float32)
        np.subtract(pixels, mean[None, :, None, None], out=arr, dtype=np.float32)
        arr *= inv_std[None, :, None, None]
        if views in ("flip", "ten"):
            # Per-channel normalisation commutes with mirroring: mirror the normalised crops.
            arr = np.concatenate([arr, arr[:, :, :, ::-1]])
        return np.ascontiguousarray(arr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in model configs and cache fingerprints)."""
        return {
            "size": self.size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            # Only when not the default: models, ONNX records and embedding-cache keys made
            # before test-time views existed stay byte-identical.
            **({"views": self.views} if self.views != "center" else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        """Inverse of `to_dict`."""
        known = {"size", "resize", "mean", "std", "interpolation", "views"}
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


