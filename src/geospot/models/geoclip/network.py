"""GeoCLIP's networks, our own implementation: location encoder, image head, image encoder.

GeoCLIP (Vivanco et al., NeurIPS 2023) aligns a CLIP ViT-L/14 image embedding,
passed through a small MLP ("image head", 768 -> 768 -> 512), with a GPS
embedding (512) in one space: a photo is located by the gallery coordinate whose
embedding has the highest cosine similarity.

The location encoder: (lat, lon) in degrees -> Equal Earth projection (x, y,
scaled by 66.50336 / 180) -> for each of three scales sigma in (1, 16, 256):
random Fourier features [cos 2*pi*Bv, sin 2*pi*Bv] with a fixed B [256, 2] ~
N(0, sigma^2) -> three ReLU layers of 1024 -> a linear 512 output; the three
scale branches are summed. Operations are written in the same order as the
reference package so that float32 results agree to ~1e-6 (the sigma = 256
features reach thousands of radians, where a different op order would differ).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from geospot.encoders.clip import ClipVisionEncoder, ClipVisionSpec, random_clip

# Equal Earth projection (Savric, Patterson & Jenny 2018) and GeoCLIP's scale factor.
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_SCALE = 66.50336
SIGMAS = (2.0**0, 2.0**4, 2.0**8)
FOURIER_FEATURES = 256
LOCATION_WIDTH = 1024
EMBED_DIM = 512
CLIP_EMBED_DIM = 768
# CLIP ViT-L/14 at 224 px (`openai/clip-vit-large-patch14`), GeoCLIP's frozen image backbone.
VIT_L14 = ClipVisionSpec(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                         image_size=224, patch_size=14, projection_dim=CLIP_EMBED_DIM)


def equal_earth_projection(latlon: torch.Tensor) -> torch.Tensor:
    """[N, 2] (lat, lon) in degrees -> [N, 2] Equal Earth (x, y), scaled as GeoCLIP does (|x| <= ~1)."""
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    sqrt3 = torch.sqrt(torch.tensor(3.0))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat))
    denominator = 3 * (9 * _A4 * theta**8 + 7 * _A3 * theta**6 + 3 * _A2 * theta**2 + _A1)
    x = (2 * sqrt3 * lon * torch.cos(theta)) / denominator
    y = _A4 * theta**9 + _A3 * theta**7 + _A2 * theta**3 + _A1 * theta
    return (torch.stack((x, y), dim=1) * _SCALE) / 180


class FourierFeatures(nn.Module):
    """Random Fourier features [cos(2*pi*B v), sin(2*pi*B v)] with a fixed (loaded) B [features, 2]."""

    def __init__(self, features: int = FOURIER_FEATURES) -> None:
        super().__init__()
        self.register_buffer("b", torch.zeros(features, 2))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        vp = 2 * math.pi * v @ self.b.T  # this association order is the reference's
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)


class LocationBranch(nn.Module):
    """One scale: Fourier features -> 3 x (Linear 1024 + ReLU) -> Linear 512."""

    def __init__(self) -> None:
        super().__init__()
        self.rff = FourierFeatures()
        w = LOCATION_WIDTH
        self.mlp = nn.Sequential(nn.Linear(2 * FOURIER_FEATURES, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                                 nn.Linear(w, w), nn.ReLU())
        self.head = nn.Linear(w, EMBED_DIM)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.rff(projected)))


class GeoClipLocationEncoder(nn.Module):
    """[N, 2] (lat, lon) degrees -> [N, 512] location embeddings (raw, not normalised)."""

    def __init__(self, n_scales: int = len(SIGMAS)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(LocationBranch() for _ in range(n_scales))

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        projected = equal_earth_projection(latlon)
        out = torch.zeros(projected.shape[0], EMBED_DIM, dtype=projected.dtype, device=projected.device)
        for branch in self.branches:
            out += branch(projected)
        return out


def image_head() -> nn.Sequential:
    """GeoCLIP's MLP on the CLIP image embedding: 768 -> 768 -> ReLU -> 512."""
    return nn.Sequential(nn.Linear(CLIP_EMBED_DIM, CLIP_EMBED_DIM), nn.ReLU(), nn.Linear(CLIP_EMBED_DIM, EMBED_DIM))


class GeoClipImageEncoder(ClipVisionEncoder):
    """CLIP ViT-L/14 + GeoCLIP's image head: a geospot encoder with 512-d embeddings.

    Everything of `ClipVisionEncoder` (preprocessing, Grad-CAM grid, blocks) is
    kept; `forward_head` adds the MLP after CLIP's projection.
    """

    def __init__(self, spec: ClipVisionSpec = VIT_L14, name: str = "geoclip") -> None:
        super().__init__(spec, name)
        if spec.projection_dim != CLIP_EMBED_DIM:
            raise ValueError(f"GeoCLIP's image head takes {CLIP_EMBED_DIM}-d CLIP embeddings, not {spec.projection_dim}")
        self.geoclip_head = image_head()
        self.embed_dim = EMBED_DIM

    def head_modules(self) -> list[nn.Module]:
        return super().head_modules() + [self.geoclip_head]

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.geoclip_head(super().forward_head(fmap))


def assemble_image_encoder(tower: ClipVisionEncoder, head_state: dict[str, torch.Tensor],
                           name: str = "geoclip") -> GeoClipImageEncoder:
    """A `GeoClipImageEncoder` from a loaded CLIP vision tower and the image-head tensors (`0.*`, `2.*`)."""
    with torch.device("meta"):
        model = GeoClipImageEncoder(tower.spec, name)
    state = {k: v for k, v in tower.state_dict().items()}
    state.update({f"geoclip_head.{k}": v for k, v in head_state.items()})
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def random_image_encoder(spec: ClipVisionSpec = VIT_L14, seed: int = 0, name: str = "geoclip") -> GeoClipImageEncoder:
    """Seeded random tower and head (tests, and `pretrained=False`)."""
    gen = torch.Generator().manual_seed(seed + 1)
    head = image_head()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    return assemble_image_encoder(random_clip(spec, name, seed), head.state_dict(), name)
