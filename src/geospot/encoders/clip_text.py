"""CLIP's text tower, our own implementation (for zero-shot geolocation with CLIP / StreetCLIP prompts).

Token + position embeddings, the same pre-LN transformer layers as the vision
tower (`geospot.encoders.clip.ClipEncoderLayer`) under a causal mask,
`final_layer_norm`, the hidden state at the end-of-text token, and a bias-free
`text_projection`. Parameter names are Hugging Face's (`text_model.*`,
`text_projection.weight`), so the `model.safetensors` of a `CLIPModel`
(CLIP ViT-B/32, ViT-L/14, StreetCLIP) loads strictly; the vision keys are
skipped. Only safetensors are read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geospot.encoders.clip import _ACTIVATIONS, ClipEncoderLayer, WeightsNotAvailable


@dataclass(frozen=True)
class ClipTextSpec:
    """Shape of a CLIP text tower (the fields of Hugging Face's `CLIPTextConfig`)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    projection_dim: int = 512
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 2  # 2 in older configs: the end token is then found as the largest id (see forward)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: {', '.join(_ACTIVATIONS)}")

    @classmethod
    def from_hf_config(cls, config: dict) -> "ClipTextSpec":
        """From a `CLIPModel` config (nested `text_config`, top-level `projection_dim`)."""
        text = config.get("text_config") or {}
        if not isinstance(text, dict):
            raise ValueError("text_config must be a JSON object")
        fields = {k: text[k] for k in cls.__dataclass_fields__ if text.get(k) is not None}
        if config.get("projection_dim") is not None:
            fields["projection_dim"] = config["projection_dim"]
        return cls(**fields)


class ClipTextEmbeddings(nn.Module):
    def __init__(self, spec: ClipTextSpec) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.position_embedding = nn.Embedding(spec.max_position_embeddings, spec.hidden_size)


class ClipTextStack(nn.Module):
    def __init__(self, spec: ClipTextSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipEncoderLayer(spec) for _ in range(spec.num_hidden_layers))  # type: ignore[arg-type]


class ClipTextTransformer(nn.Module):
    """Container whose attribute names give the Hugging Face `text_model.*` keys."""

    def __init__(self, spec: ClipTextSpec) -> None:
        super().__init__()
        self.embeddings = ClipTextEmbeddings(spec)
        self.encoder = ClipTextStack(spec)
        self.final_layer_norm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)


class ClipTextEncoder(nn.Module):
    """Token ids [N, L] -> projected text embeddings [N, projection_dim] (raw, not L2-normalised)."""

    def __init__(self, spec: ClipTextSpec) -> None:
        super().__init__()
        self.spec = spec
        self.text_model = ClipTextTransformer(spec)
        self.text_projection = nn.Linear(spec.hidden_size, spec.projection_dim, bias=False)

    def forward(self, ids: torch.Tensor, eos_positions: torch.Tensor | None = None) -> torch.Tensor:
        """`eos_positions` [N]: index of each row's end token (default: as Hugging Face finds it)."""
        n, length = ids.shape
        if length > self.spec.max_position_embeddings:
            raise ValueError(f"{length} tokens exceed the text context of {self.spec.max_position_embeddings}")
        emb = self.text_model.embeddings
        x = emb.token_embedding(ids) + emb.position_embedding.weight[:length]
        # causal: token i sees tokens <= i, so padding after the end token never reaches it
        mask = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        for layer in self.text_model.encoder.layers:
            x = layer(x, mask)
        x = self.text_model.final_layer_norm(x)
        if eos_positions is None:
            if self.spec.eos_token_id == 2:  # legacy configs: the end token has the largest id
                eos_positions = ids.argmax(dim=-1)
            else:
                eos_positions = (ids == self.spec.eos_token_id).int().argmax(dim=-1)
        return self.text_projection(x[torch.arange(n, device=x.device), eos_positions])


def load_text_tower(folder: str | Path) -> tuple[ClipTextEncoder, float]:
    """The text tower and `logit_scale` of a Hugging Face `CLIPModel` folder (config.json + model.safetensors)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    weights, config_path = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not config_path.is_file():
        raise WeightsNotAvailable(f"{folder}: needs config.json + model.safetensors of a full CLIP model")
    try:
        spec = ClipTextSpec.from_hf_config(json.loads(config_path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{config_path}: not a CLIP model config with a text tower ({exc})") from exc
    with torch.device("meta"):
        model = ClipTextEncoder(spec)
    wanted = set(model.state_dict())
    state: dict[str, torch.Tensor] = {}
    scale = None
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                if key in wanted:
                    state[key] = f.get_tensor(key).to(torch.float32).contiguous()
                elif key == "logit_scale":
                    scale = float(f.get_tensor(key))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights}: unreadable safetensors file ({exc})") from exc
    missing = sorted(wanted - set(state))
    if missing or scale is None:
        raise ValueError(f"{weights}: holds no complete CLIP text tower (missing {(missing or ['logit_scale'])[:3]}); "
                         f"a vision-only checkpoint cannot do zero-shot prompts")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights}: text weights do not match {config_path} ({exc})") from exc
    return model.eval(), scale
