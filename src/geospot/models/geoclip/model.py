"""GeoCLIP as a geospot model: a classifier over a GPS gallery, with cached gallery embeddings.

GeoCLIP scores a photo against every gallery coordinate: logits =
exp(logit_scale) * <image embedding, location embedding> (both L2-normalised),
softmax over the gallery. The reference package re-encodes its 100K-point
gallery through the location encoder on every call (~2 TFLOP); here the gallery
embeddings are computed once and cached under
`$GEOSPOT_CACHE/models/geoclip/gallery-<key>.safetensors`, where the key hashes
the location-encoder weights and the gallery coordinates, so a prediction is
one [B, 512] x [512, G] product and a top-k.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from geospot.models.gallery import GalleryCells, GalleryPredictor
from geospot.models.geoclip.network import GeoClipLocationEncoder
from geospot.models.geoclip.weights import geoclip_dir, load_weights, read_gallery_csv

DEFAULT_GALLERY = "geoclip-100k"
_CHUNK = 8192


def _location_encoder(weights: dict[str, torch.Tensor]) -> GeoClipLocationEncoder:
    enc = GeoClipLocationEncoder()
    enc.load_state_dict({k[len("location."):]: v for k, v in weights.items() if k.startswith("location.")},
                        strict=True)
    return enc.eval()


def _key(weights: dict[str, torch.Tensor], gallery: np.ndarray) -> str:
    digest = hashlib.sha256()
    for k in sorted(weights):
        if k.startswith("location."):
            digest.update(k.encode())
            digest.update(weights[k].contiguous().numpy().tobytes())
    digest.update(np.ascontiguousarray(gallery, np.float32).tobytes())
    return digest.hexdigest()[:16]


def encode_locations(encoder: GeoClipLocationEncoder, latlon: np.ndarray, progress: bool = False) -> np.ndarray:
    """float32 [N, 512] L2-normalised location embeddings of [N, 2] (lat, lon) degrees, in chunks."""
    from tqdm import tqdm

    x = torch.from_numpy(np.ascontiguousarray(latlon, np.float32))
    out = np.empty((len(x), 512), np.float32)
    with torch.inference_mode():
        for s in tqdm(range(0, len(x), _CHUNK), desc="gallery embeddings (once)", file=sys.stderr,
                      disable=not progress or len(x) <= _CHUNK):
            out[s:s + _CHUNK] = torch.nn.functional.normalize(encoder(x[s:s + _CHUNK]), dim=1).numpy()
    return out


def gallery_embeddings(weights: dict[str, torch.Tensor], gallery: np.ndarray, cache: bool = True,
                       progress: bool = True) -> np.ndarray:
    """The gallery's normalised location embeddings, from the cache when computed before."""
    from safetensors.numpy import load_file, save_file

    path = geoclip_dir() / f"gallery-{_key(weights, gallery)}.safetensors"
    if cache and path.is_file():
        try:
            emb = load_file(str(path))["embeddings"]
            if emb.shape == (len(gallery), 512):
                return emb
        except Exception as exc:  # noqa: BLE001 - an unreadable cache entry is recomputed
            print(f"geospot: {path}: unreadable ({exc}); recomputing", file=sys.stderr)
    emb = encode_locations(_location_encoder(weights), gallery, progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"embeddings": emb}, str(tmp))
        tmp.replace(path)
    return emb


def read_gallery(path: str | Path) -> np.ndarray:
    """A user gallery: CSV with lat/lon columns (e.g. your own coordinates, or a training manifest)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the gallery ({exc})") from None
    return read_gallery_csv(text, str(path))


class GeoClipModel:
    """Duck-typed `GeoModel`: `encoder_name`, `cells` (the gallery) and `predict_proba(embeddings)`.

    It plugs into `geospot.pipeline.evaluate` and `GalleryPredictor` as is.
    """

    encoder_name = "geoclip"
    encoder_state = None
    mask = None
    preprocess = None
    train_config = None
    train_coords = None
    metrics = None

    def __init__(self, weights: dict[str, torch.Tensor] | None = None, gallery: np.ndarray | str | Path | None = None,
                 cache: bool = True, progress: bool = True) -> None:
        weights = weights if weights is not None else load_weights()
        if gallery is None:
            latlon, name = weights["gallery"].numpy().astype(np.float64), DEFAULT_GALLERY
        elif isinstance(gallery, (str, Path)):
            latlon, name = read_gallery(gallery), Path(gallery).stem
        else:
            latlon, name = np.asarray(gallery, np.float64).reshape(-1, 2), "gallery"
        self.logit_scale = float(weights["logit_scale"])
        self.cells = GalleryCells(latlon[:, 0], latlon[:, 1], name=name)
        self.gallery_embeddings = gallery_embeddings(weights, latlon, cache=cache, progress=progress)

    def logits(self, emb: np.ndarray) -> np.ndarray:
        """[B, 512] image embeddings -> [B, G] GeoCLIP logits (cosine similarity x exp(logit_scale))."""
        e = np.asarray(emb, np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return np.float32(np.exp(self.logit_scale)) * (e @ self.gallery_embeddings.T)

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        z = self.logits(emb)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def load_geoclip_predictor(backend: str = "auto", device: str = "auto", geocode: bool = True,
                           gallery: str | Path | None = None) -> GalleryPredictor:
    """`geospot locate --model geoclip`: everything from local files; `FileNotFoundError` (one line) if missing."""
    from geospot.encoders import create_encoder
    from geospot.encoders.clip import WeightsNotAvailable
    from geospot.encoders.runtime import EncoderRuntime

    try:
        encoder = create_encoder("geoclip", pretrained=True)
    except WeightsNotAvailable as exc:
        raise FileNotFoundError(" ".join(str(exc).split())) from None
    model = GeoClipModel(gallery=gallery)
    return GalleryPredictor(model, EncoderRuntime("geoclip", backend=backend, device=device, encoder=encoder),
                            geocode=geocode)
