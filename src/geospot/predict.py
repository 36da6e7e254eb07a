"""The Predictor: image files in, locations out. All I/O of inference lives here.

`Predictor.load(model_dir)` reads a model directory (the bundled default when
None), `predict(paths)` decodes each photo safely (a bad file becomes a
`PredictionError`, the batch carries on), embeds, classifies, fuses views of
one place when asked, and turns cell probabilities into a location: the top
cell's centroid, the probability-weighted spherical mean of the top cells
(the practitioner article's estimate), and that mean restricted to the top cells
near the top one (reported as `lat`/`lon`; see `geospot.models.estimate`), a
confidence radius holding 50% / 90% of the probability mass, and an offline
reverse geocode.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".heic", ".heif", ".webp", ".bmp", ".gif"}


@dataclass
class Prediction:
    """Where one photo (or one place seen in several photos) was taken."""

    path: str
    lat: float
    lon: float
    radius_km: dict[str, float]
    top_cells: list[dict]
    country: str = ""
    country_code: str = ""
    region: str = ""
    city: str = ""
    paths: list[str] = field(default_factory=list)
    estimates: dict[str, dict[str, float]] = field(default_factory=dict)
    countries: list[dict] = field(default_factory=list)  # [{code, name, prob}], most probable first
    regions: list[dict] = field(default_factory=list)  # [{code, name, country_code, prob}]

    def to_dict(self) -> dict:
        """The stable JSON object of `geospot locate --json` (see README)."""
        return {
            "path": self.path,
            "paths": self.paths or [self.path],
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "country": self.country,
            "country_code": self.country_code,
            "region": self.region,
            "city": self.city,
            "radius_km": {k: round(v, 1) for k, v in self.radius_km.items()},
            "top_cells": self.top_cells,
            "countries": self.countries,
            "regions": self.regions,
            "estimates": {
                name: {"lat": round(v["lat"], 6), "lon": round(v["lon"], 6)} for name, v in self.estimates.items()
            },
        }


@dataclass
class PredictionError:
    """A photo that could not be located, and why."""

    path: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error}


def expand_paths(items: Iterable[str]) -> tuple[list[str], list[PredictionError]]:
    """Files, folders (recursively, image extensions only) and globs -> sorted file list.

    Names that match nothing come back as errors rather than vanishing.
    """
    files: list[str] = []
    errors: list[PredictionError] = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                errors.append(PredictionError(item, "folder holds no images"))
            files.extend(found)
        elif os.path.exists(item):
            files.append(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                errors.append(PredictionError(item, "no file matches this pattern"))
            files.extend(found)
        else:
            errors.append(PredictionError(item, "no such file or folder"))
    return files, errors


class Predictor:
    """Locate photos with a trained geospot model."""

    def __init__(self, model, runtime, preprocess, mask=None, geocode: bool = True):
        self.model = model
        self.runtime = runtime
        self.preprocess = preprocess
        self.mask = mask
        self.geocode = geocode

    @classmethod
    def load(
        cls, model_dir: str | Path | None = None, backend: str = "auto", device: str = "auto", geocode: bool = True
    ) -> "Predictor":
        """Load a model directory (None: the bundled default model)."""
        from geospot.data.masks import Mask
        from geospot.encoders import create_encoder
        from geospot.encoders.base import Preprocess
        from geospot.encoders.runtime import EncoderRuntime
        from geospot.pipeline import load_model

        model = load_model(model_dir)
        encoder = create_encoder(model.encoder_name, pretrained=True)
        if model.encoder_state is not None:
            encoder.load_state_dict(model.encoder_state)
        runtime = EncoderRuntime(model.encoder_name, backend=backend, device=device, encoder=encoder)
        preprocess = Preprocess.from_dict(model.preprocess) if model.preprocess else encoder.preprocess
        mask = Mask.from_dict(model.mask) if model.mask else None
        from geospot.models.checkpoint import default_model_dir
        from geospot.models.hierarchy import model_shares

        model.cell_shares = model_shares(model_dir or default_model_dir(), model.cells, model.train_coords)
        return cls(model, runtime, preprocess, mask=mask, geocode=geocode)

    # ------------------------------------------------------------------ decoding
    def embed(self, paths: Sequence[str], batch_size: int = 16) -> tuple[np.ndarray, list[PredictionError | None]]:
        """Embeddings [N, D] (zero rows for failures) and a per-path error or None.

        The same decoding pipeline as training (`embed_paths`: decode + mask +
        preprocess in threads, overlapped with inference), without a cache."""
        from geospot.encoders.embed import embed_paths

        result = embed_paths(paths, self.runtime, self.preprocess, cache_dir=None, batch_size=batch_size,
                             workers=None, mask=self.mask, progress=False)
        outcomes: list[PredictionError | None] = [None] * len(paths)
        for i, message in result.errors.items():
            # embed_paths prefixes the absolute path; report the path as the user gave it
            prefix = f"{os.path.abspath(paths[i])}: "
            outcomes[i] = PredictionError(paths[i], message[len(prefix):] if message.startswith(prefix) else message)
        return result.embeddings, outcomes

    # ------------------------------------------------------------------ prediction
    def predict(
        self, paths: Sequence[str | os.PathLike], top_k: int = 5, same_place: bool = False, batch_size: int = 16
    ) -> list[Prediction | PredictionError]:
        """One result per photo, or one per place (`same_place=True`: all
        photos show one place; their embeddings are averaged, as in PIGEON)."""
        paths = [str(p) for p in paths]
        emb, outcomes = self.embed(paths, batch_size=batch_size)
        good = [i for i, o in enumerate(outcomes) if o is None]
        errors = [o for o in outcomes if o is not None]
        if not good:
            return list(errors)
        from geospot.pipeline import l2_normalize

        emb = l2_normalize(emb[good])
        if same_place:
            fused = emb.mean(0, keepdims=True)
            preds = self.predict_embeddings(fused, [paths[good[0]]], top_k=top_k)
            preds[0].paths = [paths[i] for i in good]
            return preds + list(errors)
        preds = self.predict_embeddings(emb, [paths[i] for i in good], top_k=top_k)
        by_index = dict(zip(good, preds))
        return [by_index.get(i, outcomes[i]) for i in range(len(paths))]

    def predict_embeddings(self, emb: np.ndarray, names: Sequence[str], top_k: int = 5) -> list[Prediction]:
        """Cell probabilities -> `Prediction`s (no I/O; used by `predict`)."""
        from geospot.models.estimate import confidence_radius_km, point_estimates
        from geospot.models.hierarchy import hierarchy_probs

        cells = self.model.cells
        probs = self.model.predict_proba(emb)
        k = max(1, min(top_k, probs.shape[1]))
        est = point_estimates(probs, cells.centroid_lat, cells.centroid_lon, top_k=k)
        radius = confidence_radius_km(
            probs, cells.centroid_lat, cells.centroid_lon, est["local_lat"], est["local_lon"], levels=(0.5, 0.9)
        )
        places = self._geocode(est["local_lat"], est["local_lon"])
        shares = getattr(self.model, "cell_shares", None)
        hier = hierarchy_probs(probs, shares) if shares is not None else ([[]] * len(names), [[]] * len(names))
        out = []
        for b, name in enumerate(names):
            top = [
                {
                    "id": cells.ids[int(i)],
                    "prob": round(float(p), 6),
                    "lat": round(float(cells.centroid_lat[int(i)]), 6),
                    "lon": round(float(cells.centroid_lon[int(i)]), 6),
                    **({"name": cells.names[int(i)]} if cells.names else {}),
                }
                for i, p in zip(est["top_idx"][b], est["top_prob"][b])
            ]
            place = places[b] if places else None
            out.append(
                Prediction(
                    path=name,
                    lat=float(est["local_lat"][b]),
                    lon=float(est["local_lon"][b]),
                    radius_km={"50": float(radius[b, 0]), "90": float(radius[b, 1])},
                    top_cells=top,
                    country=place.country if place else "",
                    country_code=place.country_code if place else "",
                    region=place.region if place else "",
                    city=place.city if place else "",
                    countries=hier[0][b],
                    regions=hier[1][b],
                    estimates={
                        "local_mean": {"lat": float(est["local_lat"][b]), "lon": float(est["local_lon"][b])},
                        "top_k_mean": {"lat": float(est["mean_lat"][b]), "lon": float(est["mean_lon"][b])},
                        "top_cell": {"lat": float(est["top_lat"][b, 0]), "lon": float(est["top_lon"][b, 0])},
                    },
                )
            )
        return out

    def _geocode(self, lat, lon):
        if not self.geocode:
            return None
        from geospot.geo.geocode import reverse_geocode

        return reverse_geocode(lat, lon)


def format_prediction(result: Prediction | PredictionError) -> str:
    """A readable, multi-line answer for the terminal."""
    if isinstance(result, PredictionError):
        return f"{result.path}\n  error: {result.error}"
    names = result.paths if len(result.paths) > 1 else [result.path]
    where = ", ".join(x for x in (result.city, result.region, result.country) if x) or "unknown place"
    ns = "N" if result.lat >= 0 else "S"
    ew = "E" if result.lon >= 0 else "W"
    lines = [" + ".join(names)]
    lines.append(f"  {abs(result.lat):.4f}°{ns}, {abs(result.lon):.4f}°{ew}  — near {where}")
    lines.append(
        f"  50% of the probability within {result.radius_km['50']:.0f} km, 90% within {result.radius_km['90']:.0f} km"
    )
    cells = ", ".join(f"{c.get('name', c['id'])} {100 * c['prob']:.1f}%" for c in result.top_cells)
    lines.append(f"  top cells: {cells}")
    if result.countries:
        lines.append("  countries: " + ", ".join(f"{c['name']} {100 * c['prob']:.0f}%" for c in result.countries[:3]))
    return "\n".join(lines)
