"""Training a model: cells from the training places, a head on frozen embeddings,
its calibration on out-of-fold predictions, support points; saving and loading.

Calibration needs predictions for photos the model did not train on. With a
``collections`` column holding two or more collections, the training data is
split leave-one-collection-out (each fold's model predicts a collection it never
saw, which is what users' photos are); otherwise group K-fold by place (which
flatters: calibration is then fitted in-collection, and the model card says so).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geospot.data.manifest import Manifest
from geospot.encoders.preprocess import DEFAULT_VIEWS
from geospot.models.familiarity import DEFAULT_QUANTILE
from geospot.workflows.embedding import DEFAULT_ENCODER, embeddings_or_compute, log

DEFAULT_CELLS: dict[str, Any] = {"scheme": "s2", "min_per_cell": 8, "max_per_cell": 60}
TRAIN_PLACES_FILE = "train_places.safetensors"
#: Inner folds for calibration when there are no collections to hold out.
CALIBRATION_FOLDS = 5


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
    cells = build_cells(loc_lat, loc_lon, scheme=scheme, **params)
    if len(cells) < 2:  # a 1-cell model answers the same place for every photo: refuse, say why
        raise ValueError(
            f"only {len(cells)} geocell from {len(loc_lat)} places with {scheme} cells "
            f"(min_per_cell={params.get('min_per_cell')}); a model needs at least 2 cells: "
            "add places or lower --min-per-cell (or use smaller grid cells)")
    return cells


def calibration_folds(groups, collections=None, n_folds: int = CALIBRATION_FOLDS, seed: int = 0):
    """``(folds, how)``: leave-one-collection-out when two or more collections are
    present, else group K-fold by place; ``folds`` is a list of (train_idx, test_idx)."""
    from geospot.data.splits import group_kfold

    groups = np.asarray(groups)
    if collections is not None and len(set(np.asarray(collections).tolist())) >= 2:
        cols = np.asarray(collections)
        names = sorted(set(cols.tolist()))
        folds = [(np.flatnonzero(cols != c), np.flatnonzero(cols == c)) for c in names]
        return folds, f"leave-one-collection-out ({len(names)} collections: {', '.join(names)})"
    n_groups = len(set(groups.tolist()))
    k = min(n_folds, n_groups)
    if k < 2:
        return [], "none (fewer than 2 places)"
    return group_kfold(groups, n_splits=k, seed=seed), f"group {k}-fold by place (in-collection: optimistic)"


@dataclass
class TrainedHead:
    cells: Any
    head: Any
    support: Any
    calibration: Any
    history: dict
    oof: list = field(default_factory=list)  # FoldPredictions of the calibration folds
    familiarity: Any = None  # geospot.models.familiarity.Familiarity (None without calibration folds)


def _head_and_support(emb, lat, lon, groups, cells, cell_params, config, progress, val=None, aux=None):
    from geospot.models.distribution import support_from_places
    from geospot.train.fit import train_head_aux

    if cells is None:
        cells = build_model_cells(lat, lon, groups, cell_params)
    kwargs = {}
    if val is not None:
        kwargs = dict(emb_val=val[0], lat_val=val[1], lon_val=val[2])
    head, aux_heads, history = train_head_aux(emb, lat, lon, cells, config, aux=aux, groups=groups,
                                              progress=progress, **kwargs)
    history["aux_heads"] = aux_heads
    loc_lat, loc_lon = location_table(lat, lon, groups)
    support = support_from_places(cells, loc_lat, loc_lon, seed=config.seed)
    return cells, head, support, history


def head_probs(head, emb, normalize: bool = True) -> np.ndarray:
    """Raw cell probabilities of a head for embeddings (torch inside, NumPy out), with the
    normalisation the head was trained with and predicts with (`normalize_embeddings`, norm sqrt(D);
    unit vectors would give flatter probabilities than the model's, and calibrate it wrongly)."""
    import torch

    from geospot.models.head import normalize_embeddings

    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    x = normalize_embeddings(x) if normalize else x
    head.eval()
    with torch.no_grad():
        return torch.softmax(head(x), dim=1).numpy().astype(np.float64)


def train_calibrated(emb, lat, lon, groups, *, collections=None, cells=None, cell_params=None, config=None,
                     calibrate: bool = True, progress: bool = True, val=None,
                     estimates: tuple[str, ...] | None = None, aux=None,
                     familiarity_quantile: float = DEFAULT_QUANTILE) -> TrainedHead:
    """Train the head on all rows, and calibrate it on out-of-fold predictions
    (see `calibration_folds`). ``cells``: fixed cells for every fold (else built per fold).
    ``aux``: `geospot.models.aux.AuxTarget`s trained with the head (folds too: they may change it).
    ``estimates``: those to fit radius scales for (default: the library's default estimate;
    others then borrow its scales). ``familiarity_quantile``: of the familiarity gate, fitted
    on the same folds (`geospot.models.familiarity`; 0: no gate)."""
    from geospot.models.calibration import Calibration, FoldPredictions, fit_calibration
    from geospot.models.distribution import cell_prior
    from geospot.train.fit import TrainConfig

    config = config or TrainConfig()
    groups = np.asarray(groups)
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    # the model's cells first: too few places fail here, in the user's terms, not inside a fold
    final_cells = cells if cells is not None else build_model_cells(lat, lon, groups, cell_params)
    oof: list = []
    calibration = familiarity = None
    if calibrate:
        folds, how = calibration_folds(groups, collections, seed=config.seed)
        familiarity = fit_gate(emb, folds, how, quantile=familiarity_quantile)
        if folds:
            log(f"calibrating on out-of-fold predictions: {how}")
        for k, (tr, te) in enumerate(folds):
            try:
                f_cells, f_head, f_support, _ = _head_and_support(
                    emb[tr], lat[tr], lon[tr], groups[tr], cells, cell_params, config, progress=False,
                    aux=[a.subset(tr) for a in aux] if aux else None)
            except ValueError as exc:  # e.g. a fold too small for 2 cells: calibrate on the others
                log(f"calibration fold {k + 1}: skipped ({exc})")
                continue
            probs = head_probs(f_head, emb[te], config.normalize)
            oof.append(FoldPredictions(probs, cell_prior(f_cells), f_support, lat[te], lon[te], f_cells))
        if oof:
            from geospot.models.calibration import fit_radius_scales

            calibration = fit_calibration(oof, fitted_on=f"{how}; {len(lat)} images")
            calibration.radius_scale = fit_radius_scales(oof, calibration, scaled_estimates(estimates, familiarity),
                                                         seed=config.seed)
            log(f"calibration: temperature {calibration.temperature:.2f}, prior weight "
                f"{calibration.prior_weight:.3f}, kernel {calibration.kernel_km:.0f} km, radius scales "
                + ", ".join(f"{k} {v['50']:.2f}/{v['90']:.2f}" for k, v in calibration.radius_scale.items()))
        else:
            calibration = Calibration(fitted_on=how)
    cells, head, support, history = _head_and_support(emb, lat, lon, groups, final_cells, cell_params, config,
                                                      progress, val=val, aux=aux)
    return TrainedHead(cells, head, support, calibration, history, oof, familiarity)


def fit_gate(emb, folds, how: str, rows=None, quantile: float = DEFAULT_QUANTILE):
    """The familiarity gate fitted on calibration ``folds`` (None when ``quantile <= 0``), said on stderr;
    ``how`` names the folds for the model's config (shared by `train` and streamed training)."""
    from geospot.models.familiarity import fit_familiarity

    if quantile <= 0:
        return None
    n = len(emb) if rows is None else len(rows)
    fam = fit_familiarity(emb, folds, rows=rows, fitted_on=f"{how}; {n} images", quantile=quantile)
    if fam is not None:
        log(f"familiarity: photos less like the training photos than {100 * fam.quantile:g}% of held-out ones "
            f"(cosine to the mean embedding < {fam.threshold:.3f}) answer with {fam.fallback}")
    return fam


def scaled_estimates(estimates, familiarity) -> list[str]:
    """The estimates to fit radius scales for: those asked (default: the library's), and the
    familiarity fallback, whose answers carry their own radii."""
    from geospot.models.answer import DEFAULT_ESTIMATE

    names = list(estimates or (DEFAULT_ESTIMATE,))
    if familiarity is not None and familiarity.fallback not in names:
        names.append(familiarity.fallback)
    return names


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
    collection_column: str | None = "collection",
    calibrate: bool = True,
    estimate: str | None = None,
    cache_dir=None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
    aux: dict[str, float] | None = None,
    refine: str | None = None,
    hybrid: bool = False,
    views: str = DEFAULT_VIEWS,
    familiarity_quantile: float = DEFAULT_QUANTILE,
):
    """Train a calibrated geocell head on frozen embeddings of `manifest`; returns a `GeoModel`.

    `embeddings` (an `EmbeddingResult` or an `[N, D]` array) skips embedding.
    `collection_column`: when the manifest has it (e.g. from `geospot data combine`),
    calibration holds out one collection at a time.
    `aux`: auxiliary heads ``{name: loss weight}`` (`geospot.models.aux`; ``month`` reads the
    manifest's date column). `refine`: ``"prototypes"`` or ``"knn"`` stores a refiner,
    `hybrid` an OSV-5M offset head (`geospot.models.methods`); answers then use them.
    `views`: test-time views averaged per photo (`Preprocess.all_views`), for training and
    validation embeddings; recorded in the model's preprocess, so prediction uses them too.
    `familiarity_quantile`: photos less familiar than this share of held-out photos answer with
    the fallback estimate (`geospot.models.familiarity`; 0: no gate; needs `calibrate`).
    """
    from geospot.models.checkpoint import GeoModel
    from geospot.train.config import TrainConfig

    config = config or TrainConfig()
    emb, ok = embeddings_or_compute(manifest, embeddings, encoder, mask, cache_dir, backend, device, progress, "train",
                                    views=views)
    lat, lon, groups = manifest.lat[ok], manifest.lon[ok], np.asarray(manifest.groups)[ok]
    collections = None
    if collection_column and collection_column in manifest.df.columns:
        collections = manifest.df[collection_column].astype(str).to_numpy()[ok]
    val = None
    if val_manifest is not None:
        v_emb, v_ok = embeddings_or_compute(
            val_manifest, val_embeddings, encoder, mask, cache_dir, backend, device, progress, "validation",
            views=views)
        val = (v_emb[v_ok], val_manifest.lat[v_ok], val_manifest.lon[v_ok])
    if refine is not None and refine not in ("prototypes", "knn"):
        raise ValueError(f"refine must be 'prototypes' or 'knn', not {refine!r}")
    aux_targets = None
    if aux:
        from geospot.models.aux import build_targets, date_column

        col = date_column(manifest.df.columns)
        dates = manifest.df[col].astype(str).to_numpy()[ok] if col else None
        aux_targets = build_targets(aux, lat, lon, dates)
        log("auxiliary heads: " + ", ".join(f"{a.name} ({len(a.classes)} classes, {int((a.labels >= 0).sum())} "
                                            f"labelled images, weight {a.weight:g})" for a in aux_targets))
    log(f"training on {int(ok.sum())} images of {len(set(groups.tolist()))} places")
    trained = train_calibrated(emb[ok], lat, lon, groups, collections=collections, cells=cells,
                               cell_params=cell_params, config=config, calibrate=calibrate, progress=progress,
                               val=val, estimates=(estimate,) if estimate else None, aux=aux_targets,
                               familiarity_quantile=familiarity_quantile)
    loc_lat, loc_lon = location_table(lat, lon, groups)
    hist = trained.history
    metrics = {
        "train": {
            "images": int(ok.sum()),
            "places": int(len(loc_lat)),
            "cells": len(trained.cells),
            "history": {k: v for k, v in hist.items() if not isinstance(v, list) and k != "aux_heads"},
            "medoid": list(_medoid(loc_lat, loc_lon)),
        }
    }
    model = GeoModel(
        encoder_name=encoder,
        preprocess=encoder_preprocess(encoder, views),
        head=trained.head,
        cells=trained.cells,
        train_config=config.to_dict(),
        metrics=metrics,
        mask=mask.to_dict() if mask is not None and not mask.is_empty else None,
        support=trained.support,
        calibration=trained.calibration,
        estimate=estimate,
    )
    model.train_coords = (loc_lat, loc_lon)
    model.oof = trained.oof
    model.familiarity = trained.familiarity
    model.aux = hist.get("aux_heads")
    if refine is not None:
        from geospot.models.methods import knn_gallery
        from geospot.models.refine import build_prototypes

        model.refine_method = refine
        model.refiner = (build_prototypes(emb[ok], lat, lon, trained.cells, groups=groups) if refine == "prototypes"
                         else knn_gallery(emb[ok], lat, lon, trained.cells))
        log(f"refiner: {refine}, {len(model.refiner.lat)} candidates")
    if hybrid:
        from geospot.models.hybrid import fit_hybrid
        from geospot.models.methods import HybridNumpy

        model.hybrid = HybridNumpy.from_torch(fit_hybrid(emb[ok], lat, lon, trained.cells, seed=config.seed))
        log("hybrid head: per-cell offsets trained")
    return model


def encoder_preprocess(encoder: str, views: str = "center") -> dict:
    """An encoder's preprocessing with test-time `views`, without building a large encoder when its
    info declares it."""
    from geospot.encoders import create_encoder, encoder_info
    from geospot.encoders.preprocess import Preprocess

    info = encoder_info(encoder) or {}
    if "preprocess" in info:
        pre = dict(info["preprocess"])
    else:
        pre = create_encoder(encoder, pretrained=False).preprocess.to_dict()
    # "center" adds nothing: configs stay byte-identical to those made before views existed.
    return Preprocess.from_dict(pre).with_views(views).to_dict() if views != "center" else pre


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
    from geospot.models.checkpoint import CheckpointError, GeoModel, default_model_dir

    path = Path(model_dir) if model_dir is not None else default_model_dir()
    model = GeoModel.load(path)
    places = path / TRAIN_PLACES_FILE
    model.train_coords = None
    if places.is_file():
        from geospot.models.validate import load_train_places

        try:
            model.train_coords = load_train_places(places)
        except (OSError, ValueError) as exc:
            raise CheckpointError(str(exc)) from None
    model.model_dir = path  # its saved hierarchy shares, for eval's country/region accuracy
    return model


def _medoid(lat, lon) -> tuple[float, float]:
    from geospot.geo.distance import geographic_medoid

    m_lat, m_lon = geographic_medoid(lat, lon)
    return float(m_lat), float(m_lon)


def head_config(train_config: dict | None):
    """The head-training part of a model's stored config (fine-tuning adds other keys)."""
    from dataclasses import fields

    from geospot.train.config import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in (train_config or {}).items() if k in known})


def recipe_config(config):
    """The article's recipe on the same embeddings and cells: plain cross-entropy."""
    from geospot.train.config import TrainConfig

    d = config.to_dict()
    d.update(loss="ce", class_weighting="none")
    return TrainConfig.from_dict(d)
