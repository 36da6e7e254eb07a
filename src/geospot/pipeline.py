"""End-to-end workflows over the library: embed a manifest, fit a model,
evaluate it honestly, cross-validate.

These functions own the glue (embedding caches, cell building, baselines);
the maths lives in `geo`, `models`, `train` and `eval`.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from geospot.data.manifest import Manifest

DEFAULT_ENCODER = "efficientnet-lite0"
DEFAULT_CELLS: dict[str, Any] = {"scheme": "s2", "min_per_cell": 8, "max_per_cell": 60}
# The headline estimate: the top-k weighted mean restricted to cells near the top cell.
MAIN_METHOD = "geospot (local top-k mean)"


def cache_root() -> Path:
    """Where embeddings and ONNX exports are cached (`$GEOSPOT_CACHE`, default ~/.cache/geospot)."""
    return Path(os.environ.get("GEOSPOT_CACHE", Path.home() / ".cache" / "geospot"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- embedding


def embed_manifest(
    manifest: Manifest,
    encoder: str = DEFAULT_ENCODER,
    *,
    mask=None,
    encoder_state: dict | None = None,
    cache_dir: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = True,
):
    """Embed every image of a manifest (cached, resumable). Returns an `EmbeddingResult`.

    Failed images are kept as rows with `ok=False` and a per-file reason, so
    row indices always match the manifest. `workers=None` picks the number of
    decoding threads for the runtime (1 on 2 CPU cores, more beside a GPU).
    """
    from geospot.encoders import create_encoder
    from geospot.encoders.embed import embed_paths
    from geospot.encoders.runtime import EncoderRuntime

    enc = create_encoder(encoder, pretrained=True)
    if encoder_state is not None:
        enc.load_state_dict(encoder_state)
    runtime = EncoderRuntime(encoder, backend=backend, device=device, encoder=enc)
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "embeddings"
    return embed_paths(
        list(manifest.paths),
        runtime,
        enc.preprocess,
        cache_dir=cache,
        batch_size=batch_size,
        workers=workers,
        mask=mask,
        progress=progress,
    )


def _report_failures(result, manifest: Manifest, what: str) -> None:
    n_bad = int((~result.ok).sum())
    if n_bad:
        log(f"{what}: {n_bad} of {len(manifest)} images could not be used:")
        for i, reason in list(sorted(result.errors.items()))[:20]:
            log(f"  {reason}")
        if n_bad > 20:
            log(f"  ... and {n_bad - 20} more")


def l2_normalize(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- cells


def location_table(lat, lon, groups) -> tuple[np.ndarray, np.ndarray]:
    """One coordinate per place (views of one location count once when building cells)."""
    from geospot.models.fusion import group_index

    inverse, n = group_index(groups)
    first = np.full(n, -1, dtype=np.int64)
    order = np.arange(len(inverse))[::-1]
    first[inverse[order]] = order  # last write wins -> first occurrence
    return np.asarray(lat, float)[first], np.asarray(lon, float)[first]


def build_model_cells(lat, lon, groups, cell_params: dict | None = None):
    from geospot.geo.cells import build_cells

    params = dict(DEFAULT_CELLS if cell_params is None else cell_params)
    scheme = params.pop("scheme", "s2")
    loc_lat, loc_lon = location_table(lat, lon, groups)
    return build_cells(loc_lat, loc_lon, scheme=scheme, **params)


# --------------------------------------------------------------------------- fit


def fit(
    manifest: Manifest,
    *,
    encoder: str = DEFAULT_ENCODER,
    cells=None,
    cell_params: dict | None = None,
    config=None,
    mask=None,
    val_manifest: Manifest | None = None,
    embeddings=None,
    val_embeddings=None,
    cache_dir=None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
):
    """Train a geocell head on frozen embeddings of `manifest`; returns a `GeoModel`.

    `embeddings` (an `EmbeddingResult` or an `[N, D]` array) skips embedding.
    """
    from geospot.models.checkpoint import GeoModel
    from geospot.train.fit import TrainConfig, train_head
    from geospot.encoders import create_encoder

    config = config or TrainConfig()
    emb, ok = _embeddings_or_compute(manifest, embeddings, encoder, mask, cache_dir, backend, device, progress, "train")
    lat, lon, groups = manifest.lat[ok], manifest.lon[ok], np.asarray(manifest.groups)[ok]
    if cells is None:
        cells = build_model_cells(lat, lon, groups, cell_params)
    log(f"training on {int(ok.sum())} images of {len(set(groups))} places, {len(cells)} cells")
    val_kwargs = {}
    if val_manifest is not None:
        v_emb, v_ok = _embeddings_or_compute(
            val_manifest, val_embeddings, encoder, mask, cache_dir, backend, device, progress, "validation"
        )
        val_kwargs = dict(emb_val=v_emb[v_ok], lat_val=val_manifest.lat[v_ok], lon_val=val_manifest.lon[v_ok])
    head, history = train_head(emb[ok], lat, lon, cells, config, groups=groups, progress=progress, **val_kwargs)
    preprocess = create_encoder(encoder, pretrained=False).preprocess.to_dict()
    loc_lat, loc_lon = location_table(lat, lon, groups)
    metrics = {
        "train": {
            "images": int(ok.sum()),
            "places": int(len(loc_lat)),
            "history": {k: v for k, v in history.items() if not isinstance(v, list)},
            "medoid": list(_medoid(loc_lat, loc_lon)),
        }
    }
    model = GeoModel(
        encoder_name=encoder,
        preprocess=preprocess,
        head=head,
        cells=cells,
        train_config=config.to_dict(),
        metrics=metrics,
        mask=mask.to_dict() if mask is not None and not mask.is_empty else None,
    )
    model.train_coords = (loc_lat, loc_lon)
    return model


TRAIN_PLACES_FILE = "train_places.safetensors"


def save_model(model, out_dir: str | Path, include_train_places: bool = True) -> Path:
    """Save a `GeoModel` plus the coordinates of its training places (for the
    random-location baseline in `geospot eval`; a few KB per thousand places).

    `include_train_places=False` leaves them out (e.g. a model you publish whose
    data's terms forbid redistributing it): `geospot eval` then approximates the
    baselines from the cell centroids weighted by their counts."""
    from safetensors.numpy import save_file

    from geospot.models.hierarchy import cell_shares

    out = Path(out_dir)
    model.save(out)
    coords = getattr(model, "train_coords", None)
    # Country/region shares of each cell (aggregates only), for hierarchical answers.
    cell_shares(model.cells, *(coords if coords is not None else (None, None))).save(out)
    if coords is not None and include_train_places:
        save_file({"lat": np.asarray(coords[0], np.float64), "lon": np.asarray(coords[1], np.float64)},
                  str(out / TRAIN_PLACES_FILE))
    return out


def load_model(model_dir: str | Path | None = None):
    """Load a `GeoModel` (the bundled default when `model_dir` is None)."""
    from safetensors.numpy import load_file

    from geospot.models.checkpoint import GeoModel, default_model_dir

    path = Path(model_dir) if model_dir is not None else default_model_dir()
    model = GeoModel.load(path)
    places = path / TRAIN_PLACES_FILE
    model.train_coords = None
    if places.is_file():
        t = load_file(str(places))
        model.train_coords = (t["lat"], t["lon"])
    return model


def _medoid(lat, lon) -> tuple[float, float]:
    from geospot.geo.distance import geographic_medoid

    m_lat, m_lon = geographic_medoid(lat, lon)
    return float(m_lat), float(m_lon)


def _embeddings_or_compute(manifest, embeddings, encoder, mask, cache_dir, backend, device, progress, what,
                           encoder_state=None):
    if embeddings is None:
        embeddings = embed_manifest(
            manifest, encoder, mask=mask, encoder_state=encoder_state, cache_dir=cache_dir, backend=backend,
            device=device, progress=progress,
        )
    if hasattr(embeddings, "embeddings"):
        _report_failures(embeddings, manifest, what)
        emb, ok = embeddings.embeddings, np.asarray(embeddings.ok, bool)
    else:
        emb = np.asarray(embeddings, np.float32)
        ok = np.ones(len(emb), bool)
    if len(emb) != len(manifest):
        raise ValueError(f"{len(emb)} embeddings for {len(manifest)} manifest rows")
    if not ok.any():
        raise ValueError(f"no usable images in the {what} manifest {manifest.source}")
    return emb, ok


# --------------------------------------------------------------------------- evaluate


@dataclass
class Predictions:
    """Per-place predictions of one method, aligned with `true_lat/true_lon`."""

    lat: np.ndarray
    lon: np.ndarray
    probs: np.ndarray | None = None  # [n, C] when the method has cell probabilities


def fuse_views(emb: np.ndarray, lat, lon, groups, fuse: str):
    """Group the views of a place. Returns (emb, lat, lon, inverse, n_places).

    fuse="embeddings": average the L2-normalised embeddings per place (PIGEON);
    "probs": keep views, average probabilities later; "none": every view alone.
    """
    from geospot.models.fusion import fuse_embeddings, group_index

    emb = l2_normalize(emb)
    if fuse == "none":
        n = len(emb)
        return emb, np.asarray(lat, float), np.asarray(lon, float), np.arange(n), n
    inverse, n = group_index(groups)
    p_lat, p_lon = location_table(lat, lon, groups)
    if fuse == "embeddings":
        return fuse_embeddings(emb, inverse, n), p_lat, p_lon, np.arange(n), n
    if fuse == "probs":
        return emb, p_lat, p_lon, inverse, n
    raise ValueError(f"fuse must be 'embeddings', 'probs' or 'none', not {fuse!r}")


def place_probs(proba_fn: Callable[[np.ndarray], np.ndarray], emb, inverse, n) -> np.ndarray:
    from geospot.models.fusion import fuse_probs

    probs = proba_fn(emb)
    if len(probs) == n and np.array_equal(inverse, np.arange(n)):
        return probs
    return fuse_probs(probs, inverse, n)


def score_methods(
    methods: dict[str, Predictions], true_lat, true_lon, cells=None, countries: bool = True
) -> tuple[dict, dict]:
    """Metrics per method plus the raw errors (km) for plots."""
    from geospot.eval.metrics import accuracy, distance_metrics, topk_accuracy
    from geospot.geo.distance import haversine_km

    true_cc = None
    if countries:
        from geospot.geo.geocode import country_codes

        true_cc = country_codes(true_lat, true_lon)
    true_cell = cells.assign(true_lat, true_lon, nearest=True) if cells is not None else None
    results, errors = {}, {}
    for name, p in methods.items():
        m = distance_metrics(p.lat, p.lon, true_lat, true_lon)
        if p.probs is not None and true_cell is not None:
            m.update(topk_accuracy(p.probs, true_cell, ks=(1, 5)))
        if true_cc is not None:
            m["country_acc"] = accuracy(country_codes(p.lat, p.lon), true_cc)["accuracy"]
        results[name] = m
        errors[name] = haversine_km(p.lat, p.lon, true_lat, true_lon)
    return results, errors


def predict_methods(
    model,
    emb: np.ndarray,
    lat,
    lon,
    groups,
    *,
    fuse: str = "embeddings",
    top_k: int = 5,
    train_lat=None,
    train_lon=None,
    recipe_model=None,
    seed: int = 0,
) -> tuple[dict[str, Predictions], np.ndarray, np.ndarray]:
    """The model's two point estimates and the skeptic's baselines, per place."""
    from geospot.eval.baselines import medoid_baseline, random_location_baseline
    from geospot.models.estimate import point_estimates

    f_emb, t_lat, t_lon, inverse, n = fuse_views(emb, lat, lon, groups, fuse)
    cell_lat, cell_lon = model.cells.centroid_lat, model.cells.centroid_lon
    probs = place_probs(model.predict_proba, f_emb, inverse, n)
    est = point_estimates(probs, cell_lat, cell_lon, top_k=top_k)
    methods = {
        MAIN_METHOD: Predictions(est["local_lat"], est["local_lon"], probs),
        "geospot (top cell)": Predictions(est["top_lat"][:, 0], est["top_lon"][:, 0], probs),
        "geospot (top-k weighted mean)": Predictions(est["mean_lat"], est["mean_lon"], probs),
    }
    if recipe_model is not None:
        r_probs = place_probs(recipe_model.predict_proba, f_emb, inverse, n)
        r_est = point_estimates(r_probs, cell_lat, cell_lon, top_k=1)
        methods["baseline: article recipe (CE, top cell)"] = Predictions(
            r_est["top_lat"][:, 0], r_est["top_lon"][:, 0], r_probs
        )
    if train_lat is not None and len(train_lat):
        m_lat, m_lon = medoid_baseline(train_lat, train_lon, n)
        methods["baseline: training medoid"] = Predictions(np.asarray(m_lat), np.asarray(m_lon))
        r_lat, r_lon = random_location_baseline(train_lat, train_lon, n, seed=seed)
        methods["baseline: random training location"] = Predictions(np.asarray(r_lat), np.asarray(r_lon))
    return methods, t_lat, t_lon


def head_config(train_config: dict | None):
    """The head-training part of a model's stored config (fine-tuning adds other keys)."""
    from dataclasses import fields

    from geospot.train.fit import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in (train_config or {}).items() if k in known})


def recipe_config(config):
    """The article's recipe on the same embeddings and cells: plain cross-entropy."""
    from geospot.train.fit import TrainConfig

    d = config.to_dict()
    d.update(loss="ce", class_weighting="none")
    return TrainConfig.from_dict(d)


def evaluate(
    model,
    manifest: Manifest,
    *,
    embeddings=None,
    fuse: str = "embeddings",
    top_k: int = 5,
    train_manifest: Manifest | None = None,
    train_embeddings=None,
    out_dir: str | Path | None = None,
    cache_dir=None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Evaluate a `GeoModel` on a manifest, next to the skeptic's baselines.

    Baselines: the training medoid and a random training location (from the
    model's stored training summary, or `train_manifest`), and — when
    `train_manifest` is given — the article's recipe (cross-entropy, top cell)
    trained on the same embeddings and cells.
    """
    from geospot.data.masks import Mask

    mask = Mask.from_dict(model.mask) if model.mask else None
    # a fine-tuned model embeds with its own encoder weights
    emb, ok = _embeddings_or_compute(
        manifest, embeddings, model.encoder_name, mask, cache_dir, backend, device, progress, "test",
        encoder_state=model.encoder_state,
    )
    lat, lon, groups = manifest.lat[ok], manifest.lon[ok], np.asarray(manifest.groups)[ok]
    train_lat = train_lon = recipe = None
    if train_manifest is not None:
        t_emb, t_ok = _embeddings_or_compute(
            train_manifest, train_embeddings, model.encoder_name, mask, cache_dir, backend, device, progress, "train",
            encoder_state=model.encoder_state,
        )
        t_groups = np.asarray(train_manifest.groups)[t_ok]
        train_lat, train_lon = location_table(train_manifest.lat[t_ok], train_manifest.lon[t_ok], t_groups)
        recipe = _train_recipe(model, t_emb[t_ok], train_manifest.lat[t_ok], train_manifest.lon[t_ok], t_groups)
    elif getattr(model, "train_coords", None) is not None:
        train_lat, train_lon = model.train_coords
    else:  # no training coordinates shipped: the training distribution at cell resolution
        counts = np.asarray(model.cells.count, dtype=np.int64)
        train_lat = np.repeat(np.asarray(model.cells.centroid_lat, float), counts)
        train_lon = np.repeat(np.asarray(model.cells.centroid_lon, float), counts)
    methods, t_lat, t_lon = predict_methods(
        model, emb[ok], lat, lon, groups, fuse=fuse, top_k=top_k,
        train_lat=train_lat, train_lon=train_lon, recipe_model=recipe,
    )
    results, errors = score_methods(methods, t_lat, t_lon, cells=model.cells)
    report = {
        "title": f"geospot evaluation: {Path(str(manifest.source)).name if manifest.source else 'manifest'}",
        "model": _model_summary(model),
        "dataset": {"manifest": str(manifest.source), "n_images": int(ok.sum()), "n_places": int(len(t_lat)),
                    "failed_images": int((~ok).sum()), "fuse": fuse},
        "methods": results,
        "notes": _notes(fuse, train_manifest is not None) + (
            [] if train_manifest is not None or getattr(model, "train_coords", None) is not None else
            ["The model ships no training coordinates: the medoid and random-location baselines use the cell "
             "centroids weighted by their training counts."]
        ),
    }
    if out_dir is not None:
        report = write_full_report(report, out_dir, methods, errors, t_lat, t_lon, model.cells)
    return report


def _train_recipe(model, emb, lat, lon, groups):
    from geospot.models.checkpoint import GeoModel
    from geospot.train.fit import TrainConfig, train_head

    base = head_config(model.train_config)
    head, _ = train_head(emb, lat, lon, model.cells, recipe_config(base), groups=groups, progress=False)
    return GeoModel(encoder_name=model.encoder_name, preprocess=model.preprocess, head=head, cells=model.cells)


def _model_summary(model) -> dict:
    return {
        "encoder": model.encoder_name,
        "cells": {"scheme": model.cells.scheme, "count": len(model.cells)},
        "train_config": model.train_config,
        "mask": model.mask,
    }


def _notes(fuse: str, have_recipe: bool) -> list[str]:
    notes = [
        "Errors are great-circle (haversine) distances; GeoScore = 5000·exp(-d/1492.7 km).",
        {
            "embeddings": "Views of one place are fused by averaging their embeddings (PIGEON); metrics are per place.",
            "probs": "Views of one place are fused by averaging their cell probabilities; metrics are per place.",
            "none": "Every image is scored on its own.",
        }[fuse],
        "Country accuracy uses offline GeoNames reverse geocoding of both the prediction and the truth.",
    ]
    if not have_recipe:
        notes.append("The article-recipe baseline needs training data: pass --train MANIFEST to add it.")
    return notes


def write_full_report(report, out_dir, methods, errors, t_lat, t_lon, cells) -> dict:
    """Figures (error CDF, country and cell confusion) + JSON/Markdown report."""
    from geospot.eval.metrics import per_group_metrics
    from geospot.eval.plots import confusion_matrix, error_cdf
    from geospot.eval.report import write_report
    from geospot.geo.geocode import country_codes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main = next(iter(methods))
    figures = {}
    error_cdf(errors, out / "error_cdf.png")
    figures["error CDF"] = "error_cdf.png"
    true_cc = country_codes(t_lat, t_lon)
    pred_cc = country_codes(methods[main].lat, methods[main].lon)
    confusion_matrix(true_cc, pred_cc, out / "confusion_country.png", out / "confusion_country.csv")
    figures["country confusion"] = "confusion_country.png"
    if methods[main].probs is not None:
        true_cell = cells.assign(t_lat, t_lon, nearest=True)
        pred_cell = methods[main].probs.argmax(1)
        ids = np.asarray(cells.ids, dtype=object)
        confusion_matrix(ids[true_cell], ids[pred_cell], out / "confusion_cells.png", out / "confusion_cells.csv")
        figures["cell confusion"] = "confusion_cells.png"
    report = dict(report, figures=figures, per_country=per_group_metrics(errors[main], true_cc))
    write_report(report, out)
    return report


# --------------------------------------------------------------------------- cross-validation


def cross_validate(
    manifest: Manifest,
    *,
    folds: int = 5,
    encoder: str = DEFAULT_ENCODER,
    cell_params: dict | None = None,
    config=None,
    mask=None,
    fuse: str = "embeddings",
    top_k: int = 5,
    embeddings=None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    cache_dir=None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Group K-fold by `location_id` (the article's protocol): views of one place
    never straddle folds. Cells, head and baselines are rebuilt from each
    training fold; reports mean ± std per metric over folds."""
    from geospot.data.splits import group_kfold
    from geospot.eval.metrics import summarize_folds
    from geospot.train.fit import TrainConfig, train_head
    from geospot.models.checkpoint import GeoModel

    config = config or TrainConfig()
    emb, ok = _embeddings_or_compute(manifest, embeddings, encoder, mask, cache_dir, backend, device, progress, "cv")
    lat, lon, groups = manifest.lat[ok], manifest.lon[ok], np.asarray(manifest.groups)[ok]
    emb = emb[ok]
    fold_results, pooled_errors = [], {}
    pooled_lat, pooled_lon = [], []
    t0 = time.time()
    for k, (tr, te) in enumerate(group_kfold(groups, n_splits=folds, seed=seed)):
        cells = build_model_cells(lat[tr], lon[tr], groups[tr], cell_params)
        head, _ = train_head(emb[tr], lat[tr], lon[tr], cells, config, groups=groups[tr], progress=False)
        model = GeoModel(encoder_name=encoder, preprocess={}, head=head, cells=cells)
        r_head, _ = train_head(emb[tr], lat[tr], lon[tr], cells, recipe_config(config), groups=groups[tr], progress=False)
        recipe = GeoModel(encoder_name=encoder, preprocess={}, head=r_head, cells=cells)
        t_lat_all, t_lon_all = location_table(lat[tr], lon[tr], groups[tr])
        methods, t_lat, t_lon = predict_methods(
            model, emb[te], lat[te], lon[te], groups[te], fuse=fuse, top_k=top_k,
            train_lat=t_lat_all, train_lon=t_lon_all, recipe_model=recipe, seed=seed + k,
        )
        results, errors = score_methods(methods, t_lat, t_lon, cells=cells)
        fold_results.append({"fold": k, "n_test_places": int(len(t_lat)), "n_cells": len(cells), "methods": results})
        for name, e in errors.items():
            pooled_errors.setdefault(name, []).append(e)
        pooled_lat.append(t_lat)
        pooled_lon.append(t_lon)
        main = results[MAIN_METHOD]
        log(f"fold {k + 1}/{folds}: {len(cells)} cells, median {main['median_km']:.0f} km, "
            f"acc@750km {100 * main['acc_750km']:.1f}%, GeoScore {main['geoscore']:.0f} ({time.time() - t0:.0f} s)")
    names = list(fold_results[0]["methods"])
    cv = {name: summarize_folds([f["methods"][name] for f in fold_results]) for name in names}
    report = {
        "title": f"geospot {folds}-fold cross-validation (grouped by location_id)",
        "model": {"encoder": encoder, "cells": cell_params or DEFAULT_CELLS, "train_config": config.to_dict(),
                  "mask": mask.to_dict() if mask is not None and not mask.is_empty else None},
        "dataset": {"manifest": str(manifest.source), "n_images": int(ok.sum()),
                    "n_places": int(len(set(groups))), "failed_images": int((~ok).sum()), "fuse": fuse},
        "methods": {name: {m: v["mean"] for m, v in cv[name].items()} for name in names},
        "cv": cv,
        "folds": fold_results,
        "notes": _notes(fuse, True) + [
            f"Group {folds}-fold by location_id; cells, heads and baselines rebuilt on each training fold."
        ],
    }
    if out_dir is not None:
        from geospot.eval.plots import error_cdf
        from geospot.eval.report import write_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        error_cdf({k: np.concatenate(v) for k, v in pooled_errors.items()}, out / "error_cdf.png")
        report["figures"] = {"error CDF (out-of-fold)": "error_cdf.png"}
        write_report(report, out)
    return report
