"""The Predictor: image files in, locations out. All I/O of inference lives here.

`Predictor.load(model_dir)` reads a model directory (the bundled default when
None), `predict(paths)` decodes each photo safely (a bad file becomes a
`PredictionError`, the batch carries on), embeds, classifies, fuses views of
one place when asked, and turns cell probabilities into an answer through the
model's calibration (`geospot.models.answer`): every registered point estimate
(the one the model or user picks becomes `lat`/`lon`; by default the local top-k mean; see
`geospot.models.answer`), radii holding 50% / 90% of the probability, the
probability of lying within 25/200/750 km, and an offline reverse geocode.
"""
from __future__ import annotations

import math
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
    estimate: str = ""
    within_km: dict[str, float] = field(default_factory=dict)
    countries: list[dict] = field(default_factory=list)  # [{code, name, prob}], most probable first
    regions: list[dict] = field(default_factory=list)  # [{code, name, country_code, prob}]
    # [{code, name, region, country_code, prob}]; empty where the cells are coarser than districts
    districts: list[dict] = field(default_factory=list)
    aux: dict[str, dict[str, float]] = field(default_factory=dict)  # auxiliary heads: {name: {class: prob}}
    # cosine similarity to the mean training embedding; below the model's threshold the answer
    # is its fallback estimate (geospot.models.familiarity). None: the model has no reference.
    familiarity: float | None = None
    unfamiliar: bool = False
    # Every cell's probability ([C], the model's cell order) for maps; not part of the JSON.
    probs: np.ndarray | None = field(default=None, repr=False, compare=False)

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
            "within_km": {k: round(v, 4) for k, v in self.within_km.items()},
            "estimate": self.estimate,
            "top_cells": self.top_cells,
            "countries": self.countries,
            "regions": self.regions,
            "districts": self.districts,
            "estimates": {
                name: {"lat": round(v["lat"], 6), "lon": round(v["lon"], 6)} for name, v in self.estimates.items()
            },
            **({"aux": self.aux} if self.aux else {}),
            **({"familiarity": round(self.familiarity, 4), "unfamiliar": self.unfamiliar}
               if self.familiarity is not None else {}),
        }


@dataclass
class PredictionError:
    """A photo that could not be located, and why."""

    path: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error}


def expand_paths(items: Iterable[str]) -> tuple[list[str], list[PredictionError]]:
    """Files, folders (recursively, image extensions only) and globs (file names
    case-insensitive) -> sorted file list.

    Names that match nothing, and broken links, FIFOs or unreadable folders met on
    the way, come back as errors rather than vanishing (see `geospot.data.scan`).
    """
    from geospot.data.scan import glob_files, has_magic, is_special, scan_folder

    files: list[str] = []
    errors: list[PredictionError] = []
    for item in items:
        if os.path.isdir(item):
            found, skipped = scan_folder(item, extensions=IMAGE_EXTENSIONS)
            errors.extend(PredictionError(p, reason) for p, reason in skipped)
            if not found and not skipped:
                errors.append(PredictionError(item, "folder holds no images"))
            files.extend(found)
        elif os.path.lexists(item) and is_special(item):
            errors.append(PredictionError(item, is_special(item)))
        elif os.path.exists(item):
            files.append(item)
        elif has_magic(item):
            found, skipped = glob_files(item)
            errors.extend(PredictionError(p, reason) for p, reason in skipped)
            if not found and not skipped:
                errors.append(PredictionError(item, "no file matches this pattern"))
            files.extend(found)
        else:
            errors.append(PredictionError(item, "no such file or folder"))
    return files, errors


class Predictor:
    """Locate photos with a trained geospot model."""

    def __init__(self, model, runtime, preprocess, mask=None, geocode: bool = True, estimate: str | None = None):
        from geospot.models.answer import DEFAULT_ESTIMATE, ESTIMATES

        self.model = model
        self.runtime = runtime
        self.preprocess = preprocess
        self.mask = mask
        self.geocode = geocode
        self.estimate = estimate or getattr(model, "estimate", None) or DEFAULT_ESTIMATE
        # photos unlike the training data answer with the model's fallback estimate, unless the
        # user picked an estimate: then every photo gets that one
        self.familiarity = getattr(model, "familiarity", None) if estimate is None else None
        if self.estimate not in ESTIMATES:
            raise ValueError(f"unknown estimate {self.estimate!r}; choose from {', '.join(ESTIMATES)}")

    @classmethod
    def load(
        cls, model_dir: str | Path | None = None, backend: str = "auto", device: str = "auto", geocode: bool = True,
        estimate: str | None = None, precision: str = "fp32", views: str | None = None, **options,
    ) -> "Predictor":
        """Load a model directory (None: the bundled default model), or a pretrained model by name
        (`geoclip`, `zeroshot:streetclip`; `options` such as `gallery=` go to it; see geospot.models.pretrained).

        A frozen-encoder model on CPU (`backend` "auto"/"onnx", `device`
        "auto"/"cpu") runs without torch: the head in NumPy and the encoder's
        verified ONNX export (`OnnxRuntime.pretrained`). Torch is imported only
        to export the encoder the first time, for fine-tuned encoders, or for
        `backend="torch"`. `precision="int8"` uses the quantised export. `views` overrides the
        test-time views the model records ("center", "flip", "five", "ten"; see `Preprocess`).
        """
        from geospot.models.pretrained import load_pretrained_predictor, pretrained_name

        if pretrained_name(model_dir):
            if views is not None:
                raise ValueError(f"test-time views apply to geospot models, not the pretrained {model_dir}")
            return load_pretrained_predictor(str(model_dir), backend=backend, device=device, geocode=geocode, **options)
        if options:
            raise TypeError(f"options {sorted(options)} apply to pretrained models only (e.g. 'geoclip')")
        from geospot.data.masks import Mask
        from geospot.encoders.preprocess import Preprocess
        from geospot.models.numpy_model import load_numpy_model

        model = load_numpy_model(model_dir)
        runtime = None
        if not model.fine_tuned and backend in ("auto", "onnx") and device in ("auto", "cpu"):
            runtime = _torch_free_runtime(model.encoder_name, precision)
        if runtime is None:
            runtime = _torch_runtime(model, backend, device, precision)
        preprocess = Preprocess.from_dict(model.preprocess) if model.preprocess else runtime.preprocess
        if views is not None:
            if views == "center" and preprocess.views == "full":
                views = "full"  # `--tta none`: one view, in the frame the model was trained on
            preprocess = preprocess.with_views(views)
        _check_against_encoder(model_dir, model, preprocess, runtime)
        mask = Mask.from_dict(model.mask) if model.mask else None
        from geospot.models.checkpoint import default_model_dir
        from geospot.models.hierarchy import model_shares

        model.cell_shares = model_shares(model_dir or default_model_dir(), model.cells, model.train_coords)
        return cls(model, runtime, preprocess, mask=mask, geocode=geocode, estimate=estimate)

    # ------------------------------------------------------------------ decoding
    def embed(self, paths: Sequence[str], batch_size: int = 16) -> tuple[np.ndarray, list[PredictionError | None]]:
        """Embeddings [N, D] (zero rows for failures) and a per-path error or None.

        The same decoding pipeline as training (`embed_paths`: decode + mask +
        preprocess in threads, overlapped with inference), without a cache."""
        from geospot.encoders.embed import embed_paths

        # One photo: decode in this thread (a decoding pool would only add start-up latency).
        result = embed_paths(paths, self.runtime, self.preprocess, cache_dir=None, batch_size=batch_size,
                             workers=0 if len(paths) == 1 else None, mask=self.mask, progress=False)
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
        emb = emb[good] / np.maximum(np.linalg.norm(emb[good], axis=-1, keepdims=True), 1e-12)
        if same_place:
            fused = emb.mean(0, keepdims=True)
            preds = self.predict_embeddings(fused, [paths[good[0]]], top_k=top_k)
            preds[0].paths = [paths[i] for i in good]
            return preds + list(errors)
        preds = self.predict_embeddings(emb, [paths[i] for i in good], top_k=top_k)
        by_index = dict(zip(good, preds))
        return [by_index.get(i, outcomes[i]) for i in range(len(paths))]

    def predict_embeddings(self, emb: np.ndarray, names: Sequence[str], top_k: int = 5) -> list[Prediction]:
        """Embeddings -> `Prediction`s (no I/O; used by `predict`)."""
        return self.predict_probs(self.model.predict_proba(emb), names, top_k=top_k, emb=emb)

    def predict_probs(self, probs: np.ndarray, names: Sequence[str], top_k: int = 5,
                      emb: np.ndarray | None = None) -> list[Prediction]:
        """Raw cell probabilities [B, C] (e.g. an album model's) -> `Prediction`s (no I/O).
        ``emb`` (the photos' embeddings) lets a refiner, hybrid head and auxiliary heads answer too."""
        from geospot.models.hierarchy import district_probs, hierarchy_probs

        from geospot.models.aux import aux_summary
        from geospot.models.methods import refined_points

        if len(names) != len(probs) or (emb is not None and len(emb) != len(probs)):
            sizes = f"{len(probs)} rows of probabilities" + (f", {len(emb)} embeddings" if emb is not None else "")
            raise ValueError(f"predict: {len(names)} name(s) for {sizes}; give one name per row")
        cells = self.model.cells
        ans = self.model.answer_context().gated_answer(probs, self.familiarity if emb is not None else None, emb,
                                                       top_k=max(1, top_k), estimate=self.estimate)
        scores = ans["familiarity"]
        unfamiliar = ans["unfamiliar"] if scores is not None else np.zeros(len(probs), bool)
        refined, aux_probs = "", {}
        aux_model = getattr(self.model, "aux", None)
        if emb is not None:
            # the model's hybrid head / refiner (trained with --hybrid / --refine) move the answer,
            # not an unfamiliar photo's
            r_lat, r_lon, refined = refined_points(self.model, emb, ans["probs"], ans["lat"], ans["lon"],
                                                   keep=unfamiliar)
            if refined:
                ans["estimates"][refined] = (r_lat, r_lon)
                ans["lat"], ans["lon"] = r_lat, r_lon
            aux_probs = self.model.predict_aux(emb) if aux_model is not None else {}
        places = self._geocode(ans["lat"], ans["lon"])
        shares = getattr(self.model, "cell_shares", None)
        if shares is not None:
            hier = (*hierarchy_probs(ans["probs"], shares), district_probs(ans["probs"], shares))
        else:
            hier = ([[]] * len(names),) * 3
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
                for i, p in zip(ans["top_idx"][b], ans["top_prob"][b])
            ]
            place = places[b] if places else None
            out.append(
                Prediction(
                    path=name,
                    lat=float(ans["lat"][b]),
                    lon=float(ans["lon"][b]),
                    radius_km={str(int(round(100 * lv))): float(ans["radius_km"][b, j])
                               for j, lv in enumerate(ans["levels"])},
                    top_cells=top,
                    country=place.country if place else "",
                    country_code=place.country_code if place else "",
                    region=place.region if place else "",
                    city=place.city if place else "",
                    countries=hier[0][b],
                    regions=hier[1][b],
                    districts=hier[2][b],
                    estimates={k: {"lat": float(v[0][b]), "lon": float(v[1][b])} for k, v in ans["estimates"].items()},
                    estimate=(f"{ans['used'][b]}+{refined}" if refined and not unfamiliar[b]
                              else str(ans["used"][b])),
                    aux=aux_summary(aux_probs, aux_model.specs, b) if aux_probs else {},
                    within_km={f"{r:g}": float(ans["within"][b, j]) for j, r in enumerate(ans["within_km"])},
                    probs=ans["probs"][b],
                    familiarity=float(scores[b]) if scores is not None else None,
                    unfamiliar=bool(unfamiliar[b]),
                )
            )
        return out

    def _geocode(self, lat, lon):
        if not self.geocode:
            return None
        from geospot.geo.geocode import reverse_geocode

        return reverse_geocode(lat, lon)


def decimals_for(radius_km: float) -> int:
    """Decimal places of degrees worth printing for an answer this uncertain (0.1° ~ 11 km)."""
    for limit, places in ((1.0, 4), (10.0, 3), (100.0, 2), (1000.0, 1)):
        if radius_km < limit:
            return places
    return 0


def place_phrase(radius50_km: float, city: str = "", region: str = "", country: str = "",
                 sea_off: str = "") -> str:
    """Name no finer a place than an answer with this 50% radius can stand behind.
    ``sea_off``: for a point in no country (a mean of cells on two coasts can land at sea),
    the country of the nearest place, so the reader still learns where the answer is."""
    if radius50_km < 25:
        parts, lead = (city, region, country), "near "
    elif radius50_km < 250:
        parts, lead = (region, country), "in the region of "
    else:
        parts = (country,)
        lead = "most likely around " if radius50_km < 1500 else "a guess, around "
    text = ", ".join(x for x in parts if x)
    if text:
        return lead + text
    if sea_off:
        return ("a guess, " if radius50_km >= 1500 else "") + f"at sea off {sea_off}"
    return "unknown place"


def _where(result: Prediction) -> str:
    sea_off = ""
    if not result.country and math.isfinite(result.lat) and math.isfinite(result.lon):
        from geospot.geo.geocode import geonames_country_codes
        from geospot.geo.regions import country_name

        code = str(geonames_country_codes([result.lat], [result.lon])[0])
        sea_off = country_name(code) if code else ""
    return place_phrase(result.radius_km.get("50", float("inf")), result.city, result.region, result.country,
                        sea_off=sea_off)


def _check_against_encoder(model_dir, model, preprocess, encoder) -> None:
    """A model's stored preprocessing and head must fit its encoder (or the encoder's runtime):
    refuse before any photo is decoded."""
    from geospot.models.checkpoint import CheckpointError

    where = model_dir if model_dir is not None else "the bundled model"
    if preprocess.size != encoder.preprocess.size:
        raise CheckpointError(f"{where}/config.json: encoder.preprocess.size is {preprocess.size} but "
                              f"{encoder.name} takes {encoder.preprocess.size} px inputs")
    if model.embed_dim != encoder.embed_dim:
        raise CheckpointError(f"{where}/config.json: head.embed_dim is {model.embed_dim} but {encoder.name} "
                              f"gives {encoder.embed_dim}-d embeddings")


def _torch_free_runtime(name: str, precision: str):
    """The verified ONNX export of a pretrained encoder, or None when torch must (re)export it.

    A file whose content differs from its record is refused: with torch
    installed the caller exports a fresh one (one line on stderr says so);
    without torch this is an error naming the file."""
    import importlib.util
    import sys

    from geospot.encoders.onnx_runtime import OnnxRecordMissing, OnnxRuntime, OnnxVerificationError

    try:
        return OnnxRuntime.pretrained(name, precision)
    except OnnxRecordMissing:
        return None  # never exported (or exported for other weights): torch does it once
    except OnnxVerificationError as exc:
        try:
            has_torch = importlib.util.find_spec("torch") is not None
        except ValueError:  # torch blocked in sys.modules
            has_torch = False
        if not has_torch:
            raise
        print(f"geospot: {exc}; exporting again", file=sys.stderr)
        return None


def _torch_runtime(model, backend: str, device: str, precision: str):
    from geospot.encoders import create_encoder
    from geospot.encoders.runtime import EncoderRuntime
    from geospot.models.checkpoint_read import CONFIG_FILE, _check_encoder_name

    if getattr(model, "root", None) is not None:  # an unknown encoder names the model's config.json
        _check_encoder_name(model.root / CONFIG_FILE, model.config)

    encoder = create_encoder(model.encoder_name, pretrained=True)
    if model.encoder_state is not None:
        encoder.load_state_dict(model.encoder_state)
    return EncoderRuntime(model.encoder_name, backend=backend, device=device, encoder=encoder, precision=precision)


def format_prediction(result: Prediction | PredictionError) -> str:
    """A readable, multi-line answer for the terminal, no more precise than the model is."""
    if isinstance(result, PredictionError):
        return f"{result.path}\n  error: {result.error}"
    names = result.paths if len(result.paths) > 1 else [result.path]
    ns = "N" if result.lat >= 0 else "S"
    ew = "E" if result.lon >= 0 else "W"
    dp = decimals_for(result.radius_km.get("50", float("inf")))
    lines = [" + ".join(names)]
    lines.append(f"  {abs(result.lat):.{dp}f}°{ns}, {abs(result.lon):.{dp}f}°{ew}  — {_where(result)}")
    if result.unfamiliar:
        lines.append(f"  unlike the training photos (familiarity {result.familiarity:.2f}): answered with "
                     f"{result.estimate}, the point of best expected score, hedged towards the training data")
    lines.append(
        f"  50% of the probability within {result.radius_km['50']:,.0f} km, 90% within {result.radius_km['90']:,.0f} km"
    )
    if result.within_km:
        within = ", ".join(f"{100 * p:.0f}% within {k} km" for k, p in result.within_km.items())
        lines.append(f"  chance the photo is close: {within}")
    cells = ", ".join(f"{c.get('name', c['id'])} {100 * c['prob']:.1f}%" for c in result.top_cells)
    lines.append(f"  top cells: {cells}")
    if result.countries:
        lines.append("  countries: " + ", ".join(f"{c['name']} {100 * c['prob']:.0f}%" for c in result.countries[:3]))
    if result.districts:  # only where the model's cells are fine enough (geospot.models.hierarchy)
        lines.append("  districts: " + "; ".join(f"{d['name']} {100 * d['prob']:.0f}%" for d in result.districts[:3]))
    return "\n".join(lines)
