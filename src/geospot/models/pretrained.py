"""Pretrained models addressed by name instead of a model folder: `geoclip`, `zeroshot:<clip encoder>`.

`geospot locate --model geoclip`, `geospot eval geoclip ...` and
`Predictor.load("geoclip")` resolve here. A folder of that name, if one
exists, still wins (a model folder is always a path). Loading never downloads:
missing weights raise `FileNotFoundError` with one line naming the command
(`geospot models --download NAME`).
"""
from __future__ import annotations

import os
from pathlib import Path

ZEROSHOT_PREFIX = "zeroshot:"


def pretrained_name(model: str | os.PathLike | None) -> str | None:
    """The pretrained model `model` names, or None when it is a folder (or the default model)."""
    if model is None:
        return None
    name = str(model)
    if os.path.exists(name):
        return None
    if name == "geoclip" or name.startswith(ZEROSHOT_PREFIX):
        return name
    return None


def load_pretrained_model(name: str, gallery: str | Path | None = None, **_ignored):
    """The duck-typed `GeoModel` of a pretrained model (for `geospot.pipeline.evaluate`)."""
    if name == "geoclip":
        from geospot.encoders.geoclip import require_local_files
        from geospot.models.geoclip.model import GeoClipModel

        try:
            require_local_files()  # before the (once, ~minutes) gallery embedding
        except FileNotFoundError as exc:
            raise FileNotFoundError(" ".join(str(exc).split())) from None
        return GeoClipModel(gallery=gallery)
    if name.startswith(ZEROSHOT_PREFIX):
        from geospot.models.zeroshot import load_zeroshot_model

        if gallery is not None:
            raise ValueError(f"{name}: --gallery applies to geoclip only (zero-shot models use country/region prompts)")
        return load_zeroshot_model(name[len(ZEROSHOT_PREFIX):])
    raise ValueError(f"unknown pretrained model {name!r}; known: geoclip, zeroshot:streetclip, zeroshot:clip-vit-b32")


def load_pretrained_predictor(name: str, backend: str = "auto", device: str = "auto", geocode: bool = True,
                              gallery: str | Path | None = None):
    """A predictor with `Predictor.predict`'s interface for a pretrained model."""
    from geospot.encoders.clip import WeightsNotAvailable
    from geospot.encoders.runtime import EncoderRuntime
    from geospot.models.gallery import GalleryPredictor

    if name == "geoclip":
        from geospot.models.geoclip.model import load_geoclip_predictor

        return load_geoclip_predictor(backend=backend, device=device, geocode=geocode, gallery=gallery)
    model = load_pretrained_model(name, gallery=gallery)
    try:
        from geospot.encoders import create_encoder

        encoder = create_encoder(model.encoder_name, pretrained=True)
    except WeightsNotAvailable as exc:
        raise FileNotFoundError(" ".join(str(exc).split())) from None
    return GalleryPredictor(model, EncoderRuntime(model.encoder_name, backend=backend, device=device, encoder=encoder),
                            geocode=geocode)
