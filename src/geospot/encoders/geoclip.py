"""The `geoclip` encoder: CLIP ViT-L/14 + GeoCLIP's image head (512-d embeddings in GeoCLIP's space).

Its two parts come from two explicit downloads (never from the constructor):
the CLIP ViT-L/14 tower (`geospot models --download clip-vit-l14`, 1.7 GB, into
`weights_folder("clip-vit-l14")`) and the GeoCLIP head, converted from the
`geoclip` package (`geospot models --download geoclip`). The embeddings are
what `geospot.models.geoclip.GeoClipModel` compares with its gallery.
"""
from __future__ import annotations

import os

from geospot.encoders import register_encoder
from geospot.encoders.clip import WeightsNotAvailable, _env_var, load_clip_folder, weights_folder

TOWER = "clip-vit-l14"


def require_local_files() -> None:
    """Raise `WeightsNotAvailable` (saying what to run) unless the tower and GeoCLIP weights are here: cheap,
    so that loaders fail before computing anything."""
    from geospot.models.geoclip.weights import installed_package_dir, weights_path

    folder = weights_folder(TOWER)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise WeightsNotAvailable(
            f"geoclip: the CLIP ViT-L/14 image tower is not in {folder}; download it once (1.7 GB) with "
            f"`geospot models --download geoclip`, or point {_env_var(TOWER)} at a folder holding config.json + "
            f"model.safetensors")
    if not weights_path().is_file() and installed_package_dir() is None:
        raise WeightsNotAvailable(
            f"geoclip: no GeoCLIP weights in {weights_path()}; get them once with `geospot models --download "
            f"geoclip` (network, 40 MB) or `pip install --no-deps geoclip==1.3.0` (converted locally)")


def build_geoclip_encoder(pretrained: bool = True):
    from geospot.models.geoclip.network import VIT_L14, assemble_image_encoder, random_image_encoder
    from geospot.models.geoclip.weights import load_weights

    if not pretrained:
        return random_image_encoder(VIT_L14)
    require_local_files()
    folder = weights_folder(TOWER)
    try:
        tower = load_clip_folder(folder, "geoclip")
    except WeightsNotAvailable as exc:
        raise WeightsNotAvailable(
            f"geoclip: the CLIP ViT-L/14 image tower is not in {folder} ({exc}). Download it once (1.7 GB) with\n"
            f"    geospot models --download geoclip\n"
            f"or point {_env_var(TOWER)} at a folder holding config.json + model.safetensors"
        ) from None
    # An explicitly configured folder may hold another 768-d CLIP tower (tests use a tiny one).
    if tower.spec != VIT_L14 and not os.environ.get(_env_var(TOWER)):
        raise ValueError(f"{folder}: config describes {tower.spec}, not CLIP ViT-L/14 {VIT_L14}")
    try:
        weights = load_weights()
    except FileNotFoundError as exc:
        raise WeightsNotAvailable(str(exc)) from None
    head = {k[len("image_head."):]: v for k, v in weights.items() if k.startswith("image_head.")}
    return assemble_image_encoder(tower, head)


@register_encoder("geoclip")
def _factory(pretrained: bool = True):
    return build_geoclip_encoder(pretrained)


_factory.info = {"large": True, "embed_dim": 512, "input_size": 224}  # type: ignore[attr-defined]
