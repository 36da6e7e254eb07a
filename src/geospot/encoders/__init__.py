"""Image encoders: a registry of named backbones that turn photos into embeddings.

    >>> from geospot.encoders import create_encoder, list_encoders
    >>> list_encoders()                      # e.g. ['efficientnet-lite0', 'efficientnet-lite2', 'tiny']
    >>> enc = create_encoder("efficientnet-lite0")
    >>> emb = enc(torch.from_numpy(enc.preprocess(img))[None])   # [1, 1280]

The built-in encoders are imported on first use so that `import geospot.encoders`
stays cheap. Third-party code adds its own with `@register_encoder("name")` on a
factory `f(pretrained: bool = True) -> Encoder`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from geospot.encoders.base import Encoder

EncoderFactory = Callable[..., "Encoder"]

#: The encoder `geospot embed`, `train` and `cv` use unless told otherwise (chosen
#: leave-one-collection-out, docs/accuracy.md).
DEFAULT_ENCODER = "efficientnet-lite0-ms"

_REGISTRY: dict[str, EncoderFactory] = {}
_BUILTIN_MODULES = ("geospot.encoders.efficientnet_lite", "geospot.encoders.multiscale", "geospot.encoders.tiny",
                    "geospot.encoders.clip", "geospot.encoders.geoclip")
_builtins_loaded = False


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator registering `factory(pretrained: bool = True) -> Encoder` under `name`."""

    def decorator(factory: EncoderFactory) -> EncoderFactory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"an encoder named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def list_encoders() -> list[str]:
    """Names of all registered encoders, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def encoder_info(name: str) -> dict | None:
    """What a registered encoder declares about itself without being built, or None.

    Large encoders (the CLIP family, 88M-300M parameters, weights downloaded on
    request) declare ``{"large": True, "embed_dim": ..., "input_size": ...}`` so
    that listings and test suites need not build them."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(sorted(_REGISTRY))}")
    return getattr(_REGISTRY[name], "info", None)


def encoder_is_large(name: str) -> bool:
    """True for encoders too big to build casually (see `encoder_info`)."""
    return bool((encoder_info(name) or {}).get("large", False))


def create_encoder(name: str, pretrained: bool = True) -> "Encoder":
    """Build the encoder `name` in eval mode; `pretrained=False` gives random weights."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(sorted(_REGISTRY))}")
    encoder = _REGISTRY[name](pretrained=pretrained).eval()
    if pretrained:
        # Lets EncoderRuntime tell untouched pretrained weights from fine-tuned ones (only the
        # former may be found by the torch-free ONNX path, see geospot.encoders.onnx_runtime).
        encoder.pristine_weights_id = encoder.weights_id
    return encoder


__all__ = ["register_encoder", "list_encoders", "create_encoder", "encoder_info", "encoder_is_large", "Encoder",
           "Preprocess"]


def __getattr__(name: str):
    # `from geospot.encoders import Encoder, Preprocess` without importing torch up front
    if name in ("Encoder", "Preprocess"):
        from geospot.encoders import base

        return getattr(base, name)
    raise AttributeError(f"module 'geospot.encoders' has no attribute {name!r}")
