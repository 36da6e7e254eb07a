"""`tiny`: a small, seeded random-weights CNN for tests and quick pipeline checks.

Same contract as the real encoders (blocks, feature map, pooled embedding,
preprocess), 64 px input, 32-d embedding, a few milliseconds per batch on CPU.
Its weights are a fixed function of `SEED`, so every process builds the same
network; it has no pretrained weights (`pretrained` is accepted and ignored).
"""
from __future__ import annotations

import torch
from torch import nn

from geospot.encoders import register_encoder
from geospot.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, Preprocess

SEED = 0
INPUT_SIZE = 64
EMBED_DIM = 32


def _conv_bn(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    )


class TinyEncoder(Encoder):
    """Stem + 3 strided conv blocks: [B, 3, 64, 64] -> [B, 32, 4, 4] -> [B, 32]."""

    name = "tiny"
    embed_dim = EMBED_DIM
    weights_sources = ()  # a fixed function of SEED: no files (see geospot.encoders.onnx_runtime)

    def __init__(self) -> None:
        super().__init__(Preprocess(size=INPUT_SIZE, resize=INPUT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD))
        # Module constructors draw their default init from the global RNG; fork it so
        # building a test encoder never shifts the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            self.stem = _conv_bn(3, 8, 2)
            self._blocks = nn.ModuleList([_conv_bn(8, 16, 2), _conv_bn(16, 24, 2), _conv_bn(24, EMBED_DIM, 2)])
        self._init_weights()
        self.eval()

    def _init_weights(self) -> None:
        # A private generator: deterministic weights without touching the global RNG.
        gen = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=gen)

    @property
    def blocks(self) -> nn.ModuleList:
        """The three conv blocks after the stem."""
        return self._blocks

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, 64, 64] -> [B, 32, 4, 4]."""
        self.check_input(x)
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return x


@register_encoder("tiny")
def build_tiny(pretrained: bool = True) -> TinyEncoder:
    """The seeded test encoder (no pretrained weights exist; `pretrained` is ignored)."""
    return TinyEncoder()
