"""Predictions over a set of candidate points (a GPS gallery, or region centroids) instead of geocells.

Pretrained models that do not classify geospot cells (GeoCLIP's 100K GPS
gallery, zero-shot country/region prompts) produce the same thing our models
do: for each photo, probabilities over a fixed list of candidate locations.

    probs   float32 [B, G]  each row sums to 1 (softmax over candidates)
    lat/lon float64 [G]     the candidates' coordinates (degrees)
    ids     list[str] (G)   stable names ("gallery:123", "FR", "FR/Île-de-France")

`GalleryCells` puts the candidates behind the part of the `CellTable` interface
that prediction and evaluation use (ids, centroids, counts, nearest assignment),
and `GalleryPredictor` turns probabilities into `Prediction`s with the same
estimate and radius functions as `geospot.predict.Predictor`, so `--json`
answers share one schema (the top candidates become `top_cells`).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from geospot.predict import Prediction, PredictionError


class GalleryCells:
    """Candidate points as a duck-typed `CellTable` (scheme "gallery")."""

    scheme = "gallery"

    def __init__(self, lat, lon, ids: Sequence[str] | None = None, name: str = "gallery") -> None:
        self.centroid_lat = np.asarray(lat, np.float64).reshape(-1)
        self.centroid_lon = np.asarray(lon, np.float64).reshape(-1)
        if self.centroid_lat.shape != self.centroid_lon.shape or not self.centroid_lat.size:
            raise ValueError(f"{name}: needs as many latitudes as longitudes, and at least one point")
        self.ids = list(ids) if ids is not None else [f"{name}:{i}" for i in range(self.centroid_lat.size)]
        if len(self.ids) != self.centroid_lat.size:
            raise ValueError(f"{name}: {len(self.ids)} ids for {self.centroid_lat.size} points")
        self.count = np.ones(self.centroid_lat.size, np.int64)  # every candidate counts once (baselines)
        self.name = name
        self.params: dict = {}

    def __len__(self) -> int:
        return self.centroid_lat.size

    def __repr__(self) -> str:
        return f"GalleryCells({self.name!r}, {len(self)} points)"

    def assign(self, lat, lon, nearest: bool = True) -> np.ndarray:
        """Index of the candidate nearest to each point (great circle: largest unit-vector dot product)."""
        from geospot.geo.distance import latlon_to_xyz

        q = latlon_to_xyz(np.asarray(lat, float).reshape(-1), np.asarray(lon, float).reshape(-1))
        g = latlon_to_xyz(self.centroid_lat, self.centroid_lon)
        out = np.empty(len(q), np.int64)
        step = max(1, 2_000_000 // len(self))
        for s in range(0, len(q), step):
            out[s:s + step] = np.argmax(q[s:s + step] @ g.T, axis=1)
        return out


#: Spread of a gallery point's probability (km): a gallery point stands for the photos around it.
GALLERY_SIGMA_KM = 25.0
_GALLERY_ESTIMATES = ("top_cell", "top_k_mean", "local_mean")  # the Bayes estimates need [G, G] tables


def gallery_answer_context(cells):
    """An `AnswerContext` whose support points are the gallery points, each spread over 25 km, so
    radii are never 0 km; built once per gallery."""
    from geospot.models.answer import AnswerContext
    from geospot.models.distribution import Support

    n = len(cells)
    support = Support(cells.centroid_lat, cells.centroid_lon, np.arange(n), np.ones(n), np.full(n, GALLERY_SIGMA_KM))
    return AnswerContext(cells, support, prior=np.full(n, 1.0 / n))


def predictions_from_probs(probs: np.ndarray, cells, names: Sequence[str], top_k: int, geocode: bool,
                           context=None) -> list[Prediction]:
    """[B, G] probabilities over candidates -> `Prediction`s (the estimates and radii of our own models)."""
    k = max(1, min(top_k, probs.shape[1]))
    ctx = context if context is not None else gallery_answer_context(cells)
    ans = ctx.answer(probs, top_k=k, estimate="local_mean", estimates=_GALLERY_ESTIMATES)
    places = None
    if geocode:
        from geospot.geo.geocode import reverse_geocode

        places = reverse_geocode(ans["lat"], ans["lon"])
    out = []
    for b, name in enumerate(names):
        top = [{"id": cells.ids[int(i)], "prob": round(float(p), 6), "lat": round(float(cells.centroid_lat[int(i)]), 6),
                "lon": round(float(cells.centroid_lon[int(i)]), 6)} for i, p in zip(ans["top_idx"][b], ans["top_prob"][b])]
        place = places[b] if places else None
        out.append(Prediction(
            path=name, lat=float(ans["lat"][b]), lon=float(ans["lon"][b]),
            radius_km={"50": float(ans["radius_km"][b, 0]), "90": float(ans["radius_km"][b, 1])}, top_cells=top,
            country=place.country if place else "", country_code=place.country_code if place else "",
            region=place.region if place else "", city=place.city if place else "",
            estimates={n: {"lat": float(v[0][b]), "lon": float(v[1][b])} for n, v in ans["estimates"].items()},
            estimate="local_mean",
            within_km={f"{r:g}": float(ans["within"][b, j]) for j, r in enumerate(ans["within_km"])},
        ))
    return out


class GalleryPredictor:
    """`Predictor`'s interface for a model with `cells` and `predict_proba(L2-normalised embeddings)`.

    `model.encoder_name` names a registered encoder; `runtime` is its
    `EncoderRuntime` (built by the loader, never downloading anything).
    """

    def __init__(self, model, runtime, geocode: bool = True) -> None:
        self.model = model
        self.runtime = runtime
        self.preprocess = runtime.preprocess
        self.mask = None
        self.geocode = geocode

    def embed(self, paths: Sequence[str], batch_size: int = 16) -> tuple[np.ndarray, list[PredictionError | None]]:
        from geospot.encoders.embed import embed_paths

        result = embed_paths(paths, self.runtime, self.preprocess, cache_dir=None, batch_size=batch_size,
                             workers=None, mask=None, progress=False)
        outcomes: list[PredictionError | None] = [None] * len(paths)
        for i, message in result.errors.items():
            prefix = f"{os.path.abspath(paths[i])}: "
            outcomes[i] = PredictionError(paths[i], message[len(prefix):] if message.startswith(prefix) else message)
        return result.embeddings, outcomes

    def hypotheses(self, emb: np.ndarray) -> dict:
        """The arrays behind a prediction: probs [B, G], lat/lon [G], ids (see the module docstring)."""
        from geospot.pipeline import l2_normalize

        cells = self.model.cells
        return {"probs": self.model.predict_proba(l2_normalize(emb)), "lat": cells.centroid_lat,
                "lon": cells.centroid_lon, "ids": cells.ids}

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 5, same_place: bool = False,
                batch_size: int = 16) -> list[Prediction | PredictionError]:
        """One result per photo, or one per place: `Predictor.predict`'s flow over this model's
        `embed` and `predict_embeddings`."""
        from geospot.predict import Predictor

        return Predictor.predict(self, paths, top_k=top_k, same_place=same_place, batch_size=batch_size)

    def predict_embeddings(self, emb: np.ndarray, names: Sequence[str], top_k: int = 5) -> list[Prediction]:
        h = self.hypotheses(emb)
        if getattr(self, "_context", None) is None:  # built once per predictor (the gallery does not change)
            self._context = gallery_answer_context(self.model.cells)
        return predictions_from_probs(h["probs"], self.model.cells, names, top_k, self.geocode, self._context)
