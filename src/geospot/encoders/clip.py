"""CLIP-family image encoders (CLIP ViT-B/32, StreetCLIP): our own compact vision transformer.

The network is CLIP's vision tower: patch embedding + class token + learned
position embeddings, `pre_layrnorm`, pre-LN transformer layers (quick_gelu MLP),
`post_layernorm` on the class token and a bias-free `visual_projection`. Its
parameter names are those of Hugging Face `CLIPVisionModelWithProjection` /
`CLIPModel` (`vision_model.encoder.layers.{i}.self_attn.q_proj.weight`, ...), so
a Hugging Face folder (`config.json` + `model.safetensors`) loads strictly; the
text tower of a `CLIPModel` file is skipped. Only safetensors are read, never
pickled `.bin` files.

The embedding is the projected class token (what CLIP, StreetCLIP and PIGEON
use), not a pooled feature map. For Grad-CAM, `forward_features` returns the
patch tokens *entering the last layer* as a [B, width, h, w] grid (the last
layer's output patch tokens do not reach the class token, so they would get no
gradient); `forward_head` runs the last layer, reads out the class token and
projects it. The class token entering the last layer is not part of the grid:
`forward_features` keeps it on the module for the `forward_head` call that
follows (see `ClipVisionEncoder.forward_head`).

Weights are never downloaded implicitly: `download_weights(name)` is the
explicit, opt-in step; `create_encoder(name)` then finds them in
`$GEOSPOT_WEIGHTS_<NAME>` or `$GEOSPOT_CACHE/weights/<name>/`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geospot.encoders import register_encoder
from geospot.encoders.base import Encoder, Preprocess, cache_root

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HF_BASE_URL = "https://huggingface.co"
WEIGHT_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
_ACTIVATIONS = ("quick_gelu", "gelu")


class WeightsNotAvailable(FileNotFoundError):
    """The pretrained weights of an encoder are not on this machine (download them explicitly)."""


@dataclass(frozen=True)
class ClipVisionSpec:
    """Shape of a CLIP vision tower (the fields of Hugging Face's `CLIPVisionConfig`)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    projection_dim: int = 512
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: {', '.join(_ACTIVATIONS)}")
        if self.num_hidden_layers < 2:
            raise ValueError("a CLIP encoder needs at least 2 layers (the last one forms the head)")

    @property
    def grid_size(self) -> int:
        """Patches per side (7 for ViT-B/32 at 224 px, 24 for ViT-L/14 at 336 px)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_hf_config(cls, config: dict) -> "ClipVisionSpec":
        """From a `CLIPModel` config (nested `vision_config`) or a `CLIPVisionConfig` dict."""
        vision = config.get("vision_config", config) or {}
        if not isinstance(vision, dict):
            raise ValueError("vision_config must be a JSON object")
        # Older transformers saved only the fields that differ from the defaults, so
        # missing fields take CLIPVisionConfig's defaults (which are this class's).
        fields = {k: vision[k] for k in cls.__dataclass_fields__ if vision.get(k) is not None}
        if "vision_config" in config and config.get("projection_dim") is not None:
            fields["projection_dim"] = config["projection_dim"]  # CLIPModel projects to its top-level size
        return cls(**fields)


@dataclass(frozen=True)
class ClipVariant:
    """A registered CLIP-family encoder: its Hugging Face repository and architecture."""

    name: str
    repo: str
    spec: ClipVisionSpec


VARIANTS = {
    "clip-vit-b32": ClipVariant("clip-vit-b32", "openai/clip-vit-base-patch32", ClipVisionSpec()),
    # GeoCLIP's frozen image backbone (the `geoclip` encoder adds its head; see geospot.models.geoclip)
    "clip-vit-l14": ClipVariant(
        "clip-vit-l14",
        "openai/clip-vit-large-patch14",
        ClipVisionSpec(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, projection_dim=768),
    ),
    "streetclip": ClipVariant(
        "streetclip",
        "geolocal/StreetCLIP",
        ClipVisionSpec(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14, projection_dim=768),
    ),
}


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class ClipAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (Hugging Face layout)."""

    def __init__(self, spec: ClipVisionSpec) -> None:
        super().__init__()
        d = spec.hidden_size
        self.heads = spec.num_attention_heads
        self.scale = (d // self.heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        # Plain matmul + softmax (not SDPA): exports to ONNX as ordinary ops.
        q, k, v = (p(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if mask is not None:  # additive (0 / -inf), e.g. the text tower's causal mask
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class ClipMlp(nn.Module):
    def __init__(self, spec: ClipVisionSpec) -> None:
        super().__init__()
        self.fc1 = nn.Linear(spec.hidden_size, spec.intermediate_size)
        self.fc2 = nn.Linear(spec.intermediate_size, spec.hidden_size)
        self.act = _quick_gelu if spec.hidden_act == "quick_gelu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClipEncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, spec: ClipVisionSpec) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.self_attn = ClipAttention(spec)
        self.layer_norm2 = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.mlp = ClipMlp(spec)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, spec: ClipVisionSpec) -> None:
        super().__init__()
        d = spec.hidden_size
        self.patch_embedding = nn.Conv2d(3, d, spec.patch_size, stride=spec.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.position_embedding = nn.Embedding(spec.grid_size**2 + 1, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(x).flatten(2).transpose(1, 2)  # [B, h*w, d]
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class ClipEncoderStack(nn.Module):
    def __init__(self, spec: ClipVisionSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipEncoderLayer(spec) for _ in range(spec.num_hidden_layers))


class ClipVisionTransformer(nn.Module):
    """Container whose attribute names give the Hugging Face `vision_model.*` keys."""

    def __init__(self, spec: ClipVisionSpec) -> None:
        super().__init__()
        self.embeddings = ClipEmbeddings(spec)
        self.pre_layrnorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)  # sic: HF's spelling
        self.encoder = ClipEncoderStack(spec)
        self.post_layernorm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)


class ClipVisionEncoder(Encoder):
    """CLIP vision tower; `forward` gives the projected class token [B, projection_dim]."""

    def __init__(self, spec: ClipVisionSpec, name: str = "clip") -> None:
        # CLIP's own evaluation transform: bicubic shorter side -> image size, centre crop.
        super().__init__(Preprocess(size=spec.image_size, resize=spec.image_size, mean=CLIP_MEAN, std=CLIP_STD,
                                    interpolation="bicubic"))
        self.name = name
        self.spec = spec
        self.embed_dim = spec.projection_dim
        self.vision_model = ClipVisionTransformer(spec)
        self.visual_projection = nn.Linear(spec.hidden_size, spec.projection_dim, bias=False)
        self._class_token: torch.Tensor | None = None

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer layers (12 for ViT-B/32, 24 for ViT-L/14)."""
        return self.vision_model.encoder.layers

    def head_modules(self) -> list[nn.Module]:
        return [self.vision_model.post_layernorm, self.visual_projection]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> patch tokens entering the last layer as a grid [B, width, S/P, S/P]."""
        self.check_input(x)
        tokens = self.vision_model.pre_layrnorm(self.vision_model.embeddings(x))
        for layer in self.blocks[:-1]:
            tokens = layer(tokens)
        # The class token is kept for forward_head (it is not a grid cell); see forward_head.
        self._class_token = tokens[:, :1]
        g = self.spec.grid_size
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, g, g)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Last layer + post-LN class token + projection: [B, width, h, w] -> [B, projection_dim].

        Uses the class token of the preceding `forward_features` call on the same
        batch (Grad-CAM and `forward` call the two in that order); the grid itself
        may be a detached or modified copy.
        """
        cls = self._class_token
        if cls is None or cls.shape[0] != fmap.shape[0]:
            raise RuntimeError(f"{self.name}: forward_head needs the class token of a forward_features call on the same batch")
        tokens = torch.cat([cls.to(fmap.dtype), fmap.flatten(2).transpose(1, 2)], dim=1)
        tokens = self.blocks[-1](tokens)
        return self.visual_projection(self.vision_model.post_layernorm(tokens[:, 0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projected class-token embedding [B, projection_dim] (raw, not L2-normalised)."""
        try:
            return self.forward_head(self.forward_features(x))
        finally:
            self._class_token = None  # do not keep activations alive between calls


def random_clip(spec: ClipVisionSpec, name: str = "clip", seed: int = 0) -> ClipVisionEncoder:
    """A `ClipVisionEncoder` with seeded random weights (the global RNG is left alone)."""
    with torch.device("meta"):
        model = ClipVisionEncoder(spec, name)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    for key, p in model.named_parameters():
        with torch.no_grad():
            if "norm" in key:  # LayerNorms start as the identity
                p.fill_(1.0 if key.endswith("weight") else 0.0)
            elif key.endswith("bias"):
                p.zero_()
            else:  # CLIP's own init scale, roughly: 0.02 for embeddings, 1/sqrt(fan_in) elsewhere
                std = 0.02 if "embedding" in key else p.shape[-1] ** -0.5 if p.ndim == 2 else 0.02
                p.normal_(0.0, std, generator=gen)
    return model.eval()


def _read_config(folder: Path) -> ClipVisionSpec:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsNotAvailable(f"{path}: missing (a CLIP weights folder needs config.json + model.safetensors)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable CLIP config ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return ClipVisionSpec.from_hf_config(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a CLIP vision config ({exc})") from exc


def load_clip_folder(folder: str | Path, name: str = "clip") -> ClipVisionEncoder:
    """Load a Hugging Face CLIP folder (`config.json` + `model.safetensors`) strictly.

    Accepts `CLIPModel` and `CLIPVisionModelWithProjection` files; text-tower
    keys are ignored. Pickled `pytorch_model.bin` files are refused.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
        why = f"only pickled {', '.join(pickled)} found, which geospot never loads (use safetensors)" if pickled else "missing"
        raise WeightsNotAvailable(f"{weights}: {why}")
    spec = _read_config(folder)
    with torch.device("meta"):
        model = ClipVisionEncoder(spec, name)
    wanted = set(model.state_dict())
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(weights), framework="pt") as f:  # reads only the vision tensors
            for key in f.keys():
                if key in wanted:
                    state[key] = f.get_tensor(key).to(torch.float32).contiguous()
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights}: unreadable safetensors file ({exc})") from exc
    missing = sorted(wanted - set(state))
    if missing:
        raise ValueError(f"{weights}: not a CLIP vision checkpoint matching {folder / 'config.json'} (missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''})")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shape mismatch between config and weights
        raise ValueError(f"{weights}: weights do not match {folder / 'config.json'} ({exc})") from exc
    return model.eval()


def _env_var(name: str) -> str:
    return "GEOSPOT_WEIGHTS_" + name.upper().replace("-", "_")


def weights_folder(name: str) -> Path:
    """Where `name`'s weights are looked for: $GEOSPOT_WEIGHTS_<NAME>, else $GEOSPOT_CACHE/weights/<name>/."""
    if name not in VARIANTS:
        raise ValueError(f"unknown CLIP encoder {name!r}; known: {', '.join(VARIANTS)}")
    env = os.environ.get(_env_var(name))
    return Path(env) if env else cache_root() / "weights" / name


def build_clip(name: str, pretrained: bool = True, weights_dir: str | Path | None = None) -> ClipVisionEncoder:
    """Build a registered CLIP encoder; pretrained weights come from a local folder only."""
    variant = VARIANTS[name]
    if not pretrained:
        return random_clip(variant.spec, name)
    folder = Path(weights_dir) if weights_dir is not None else weights_folder(name)
    try:
        model = load_clip_folder(folder, name)
    except WeightsNotAvailable as exc:
        raise WeightsNotAvailable(
            f"{name}: no pretrained weights in {folder} ({exc}). Download them once (about "
            f"{'0.6' if name == 'clip-vit-b32' else '1.7'} GB from huggingface.co/{variant.repo}) with\n"
            f"    geospot encoders --download {name}\n"
            f"or point {_env_var(name)} at a folder holding config.json + model.safetensors; "
            f"pretrained=False gives random weights"
        ) from None
    if model.spec != variant.spec:
        raise ValueError(f"{folder}: config describes {model.spec}, not the {name} architecture {variant.spec}")
    # The files the weights came from: the torch-free ONNX path checks they are unchanged.
    model.weights_sources = tuple(str(folder / f) for f in WEIGHT_FILES)
    return model


def download_weights(name: str, dest: str | Path | None = None, progress: bool = True,
                     base_url: str | None = None, tokenizer: bool = False) -> Path:
    """Explicitly download `name`'s `config.json` + `model.safetensors` into `dest` (default: `weights_folder(name)`).

    `tokenizer=True` adds `vocab.json` + `merges.txt` (the text tower's BPE, for
    zero-shot use). Files already present are kept (the download is cached);
    each file is resumed when interrupted, checked (size, and SHA-256 when the
    server gives one) and renamed into place when complete (see
    `geospot.downloads.fetch`); the result is loaded once to check it. Returns
    the folder. Network failures raise `geospot.downloads.DownloadError` (one line).
    """
    from geospot.downloads import RemoteFile, fetch

    if name not in VARIANTS:
        raise ValueError(f"unknown CLIP encoder {name!r}; known: {', '.join(VARIANTS)}")
    folder = Path(dest) if dest is not None else weights_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    for filename in WEIGHT_FILES + (TOKENIZER_FILES if tokenizer else ()):
        target = folder / filename
        if not target.is_file():
            url = f"{(base_url or HF_BASE_URL).rstrip('/')}/{VARIANTS[name].repo}/resolve/main/{filename}"
            fetch(RemoteFile(url), target, progress=progress)
    try:
        load_clip_folder(folder, name)  # fail now, not at first use, on a bad file
    except (ValueError, WeightsNotAvailable):
        for filename in WEIGHT_FILES:  # a corrupt file must not stay cached
            (folder / filename).unlink(missing_ok=True)
        raise
    return folder


def clip_spec(name: str) -> ClipVisionSpec:
    """Architecture of a registered CLIP encoder, without building it."""
    return VARIANTS[name].spec


def _register(name: str) -> None:
    @register_encoder(name)
    def factory(pretrained: bool = True, weights_dir: str | Path | None = None) -> ClipVisionEncoder:
        return build_clip(name, pretrained, weights_dir)

    # Too big to build in every contract test; its code path is tested with tiny configs.
    spec = clip_spec(name)
    factory.info = {"large": True, "embed_dim": spec.projection_dim, "input_size": spec.image_size}  # type: ignore[attr-defined]


for _name in VARIANTS:
    _register(_name)

__all__ = ["ClipVisionEncoder", "ClipVisionSpec", "WeightsNotAvailable", "build_clip", "clip_spec",
           "download_weights", "load_clip_folder", "random_clip", "weights_folder"]
