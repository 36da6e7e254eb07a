"""Evaluate a saved model on a manifest, beside the skeptic's baselines, and write the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from geospot.data.manifest import Manifest
from geospot.workflows.embedding import embeddings_or_compute, log
from geospot.workflows.scoring import (
    baseline_methods, calibration_report, fuse_views, main_method_name, model_methods,
    paired_comparisons, place_embeddings, place_probs, predictions_table, score_methods,
)
from geospot.workflows.training import head_config, location_table, recipe_config

#: Training and test places closer than this are "the same place" (a leak).
OVERLAP_KM = 0.05


def check_overlap(train_lat, train_lon, train_groups, test_lat, test_lon, test_groups,
                  within_km: float = OVERLAP_KM) -> dict:
    """Test places that also appear in training: the same location id, or within
    ``within_km`` of a training place. Returns ``{"same_id": n, "nearby": n, "examples": [...]}``."""
    from scipy.spatial import cKDTree

    from geospot.geo.distance import EARTH_RADIUS_KM, latlon_to_xyz

    same = np.isin(np.asarray(test_groups).astype(str), np.asarray(train_groups).astype(str))
    tree = cKDTree(latlon_to_xyz(np.asarray(train_lat, float), np.asarray(train_lon, float)))
    d, _ = tree.query(latlon_to_xyz(np.asarray(test_lat, float), np.asarray(test_lon, float)), k=1)
    near = d * EARTH_RADIUS_KM <= within_km
    bad = np.flatnonzero(same | near)
    return {"same_id": int(same.sum()), "nearby": int(near.sum()), "n_test": int(len(same)),
            "examples": [str(np.asarray(test_groups)[i]) for i in bad[:5]]}


def evaluate(
    model,
    manifest: Manifest,
    *,
    embeddings=None,
    fuse: str = "embeddings",
    top_k: int = 5,
    estimate: str | None = None,
    train_manifest: Manifest | None = None,
    train_embeddings=None,
    allow_overlap: bool = False,
    out_dir: str | Path | None = None,
    cache_dir=None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Evaluate a `GeoModel` on a manifest, next to the skeptic's baselines.

    Baselines: the training medoid and a random training location (from the
    model's stored training places, or `train_manifest`), and — when
    `train_manifest` is given — the article's recipe (cross-entropy, top cell)
    trained on the same embeddings and cells. A test place that also appears in
    `train_manifest` (same location id or within 50 m) makes this raise
    `ValueError`, unless ``allow_overlap`` (then the report says so loudly).
    """
    from geospot.data.masks import Mask
    from geospot.models.answer import DEFAULT_ESTIMATE

    mask = Mask.from_dict(model.mask) if model.mask else None
    views = (model.preprocess or {}).get("views", "center")  # the model's test-time views (see fit)
    main = estimate or getattr(model, "estimate", None) or DEFAULT_ESTIMATE
    emb, ok = embeddings_or_compute(
        manifest, embeddings, model.encoder_name, mask, cache_dir, backend, device, progress, "test",
        encoder_state=getattr(model, "encoder_state", None), views=views,
    )
    lat, lon, groups = manifest.lat[ok], manifest.lon[ok], np.asarray(manifest.groups)[ok]
    notes = []
    train_lat = train_lon = recipe_probs_fn = None
    overlap = None
    places = None  # real training places (degrees) for the hierarchy's city shares
    if train_manifest is not None:
        t_emb, t_ok = embeddings_or_compute(
            train_manifest, train_embeddings, model.encoder_name, mask, cache_dir, backend, device, progress,
            "train", encoder_state=getattr(model, "encoder_state", None), views=views,
        )
        t_groups = np.asarray(train_manifest.groups)[t_ok]
        overlap = check_overlap(train_manifest.lat[t_ok], train_manifest.lon[t_ok], t_groups, lat, lon, groups)
        if overlap["same_id"] or overlap["nearby"]:
            msg = (f"{overlap['same_id'] + overlap['nearby']} of {overlap['n_test']} test photos are training "
                   f"places too ({overlap['same_id']} share a location_id, {overlap['nearby']} lie within "
                   f"{1000 * OVERLAP_KM:.0f} m of one; e.g. {', '.join(overlap['examples'])}): the baselines "
                   f"trained on --train would have seen the test places")
            if not allow_overlap:
                raise ValueError(msg + "; pass the training split (e.g. --train-split train) or --allow-overlap")
            log("WARNING: " + msg)
            notes.append("WARNING: " + msg)
        train_lat, train_lon = location_table(train_manifest.lat[t_ok], train_manifest.lon[t_ok], t_groups)
        places = (train_lat, train_lon)
        recipe_probs_fn = _recipe_probs_fn(model, t_emb[t_ok], train_manifest.lat[t_ok],
                                           train_manifest.lon[t_ok], t_groups)
    elif getattr(model, "train_coords", None) is not None:
        train_lat, train_lon = model.train_coords
        places = (train_lat, train_lon)
    else:  # no training coordinates shipped: the training distribution at cell resolution
        counts = np.asarray(model.cells.count, dtype=np.int64)
        train_lat = np.repeat(np.asarray(model.cells.centroid_lat, float), counts)
        train_lon = np.repeat(np.asarray(model.cells.centroid_lon, float), counts)
        notes.append("The model ships no training coordinates: the medoid and random-location baselines use "
                     "the cell centroids weighted by their training counts.")
    f_emb, t_lat, t_lon, inverse, n, first = fuse_views(emb[ok], lat, lon, groups, fuse)
    raw = place_probs(model.predict_proba, f_emb, inverse, n)
    # the model's familiarity gate applies as in `locate`, unless an estimate was picked
    familiarity = getattr(model, "familiarity", None) if estimate is None else None
    methods, answer = model_methods(answer_context(model), raw, main, top_k=top_k, familiarity=familiarity,
                                    emb=place_embeddings(f_emb, inverse, n))
    main_name = main_method_name(main, familiarity)
    if familiarity is not None:
        notes.append(f"{int(answer['unfamiliar'].sum())} of {n} places looked unlike the training photos "
                     f"(familiarity below {familiarity.threshold:.3f}) and were answered with {familiarity.fallback}, "
                     f"as `geospot locate` does; pass --estimate to score one estimate for every photo.")
    refined_name = _refined_method(model, methods, answer, f_emb, inverse, n, main_name)
    if refined_name:  # the model's --hybrid / --refine answer is what locate says: it is the main method
        main_name = refined_name
    recipe_probs = place_probs(recipe_probs_fn, f_emb, inverse, n) if recipe_probs_fn else None
    methods.update(baseline_methods(train_lat, train_lon, n, seed=seed, recipe_probs=recipe_probs,
                                    cells=model.cells))
    place_groups = np.asarray(groups)[first] if fuse == "none" else None
    results, errors = score_methods(methods, t_lat, t_lon, cells=model.cells, groups=place_groups, seed=seed)
    report = {
        "title": f"geospot evaluation: {Path(str(manifest.source)).name if manifest.source else 'manifest'}",
        "model": _model_summary(model, main),
        "dataset": {"manifest": str(manifest.source), "n_images": int(ok.sum()), "n_places": int(len(t_lat)),
                    "failed_images": int((~ok).sum()), "fuse": fuse},
        "main_method": main_name,
        "methods": results,
        "comparisons": paired_comparisons(errors, main_name, groups=place_groups, seed=seed),
        "calibration": calibration_report(answer, errors[main_name], raw, model.cells, t_lat, t_lon),
        "overlap": overlap,
        "admin": admin_report(model, answer["probs"], methods[main_name], t_lat, t_lon, places, place_groups, seed),
        "notes": notes + eval_notes(fuse, recipe_probs is not None),
    }
    if out_dir is not None:
        names = np.asarray(manifest.paths, dtype=object)[np.flatnonzero(ok)][first]
        table = predictions_table(names, t_lat, t_lon, answer, errors[main_name], model.cells)
        report = write_full_report(report, out_dir, methods, errors, t_lat, t_lon, model.cells, table)
    return report


def _refined_method(model, methods, answer, f_emb, inverse, n, main_name) -> str:
    """Add the answer of the model's hybrid head / refiner first in ``methods``; its name, or ``""``."""
    from geospot.models.methods import refined_points
    from geospot.workflows.scoring import Predictions

    if getattr(model, "hybrid", None) is None and getattr(model, "refiner", None) is None:
        return ""
    q = place_embeddings(f_emb, inverse, n)  # one query per place
    # as `locate`: unfamiliar places keep the fallback's point
    lat, lon, how = refined_points(model, q, answer["probs"], answer["lat"], answer["lon"],
                                   keep=answer.get("unfamiliar"))
    name = f"{main_name} + {how}"
    methods_first = {name: Predictions(lat, lon, answer["probs"]), **methods}
    methods.clear()
    methods.update(methods_first)
    return name


def admin_report(model, probs, main, t_lat, t_lon, train_places=None, groups=None, seed: int = 0) -> dict | None:
    """Country / region / district / city accuracy with OSV-5M's definitions (`geospot.eval.admin`), with
    95% bootstrap intervals (whole ``groups`` resampled when given): of the hierarchy's argmax (summed cell
    probabilities) and of the main method's point, reverse-geocoded. City shares come from
    ``train_places`` (``(lat, lon)`` of the training places, `geospot.eval.cities`): none without them."""
    from geospot.eval.admin import hierarchy_accuracy, point_admin_accuracy
    from geospot.eval.cities import cities_listed, city_argmax, city_shares
    from geospot.models.hierarchy import (cell_shares, district_argmax, districts_listed, hierarchy_argmax,
                                          model_shares)

    if not hasattr(model, "predict_aux") or probs is None:  # geospot's own models (not GeoCLIP's gallery)
        return None
    coords = getattr(model, "train_coords", None)
    if getattr(model, "model_dir", None) is not None:
        shares = model_shares(model.model_dir, model.cells, coords)
    else:
        shares = cell_shares(model.cells, *(coords if coords is not None else (None, None)))
    country, region = hierarchy_argmax(probs, shares)
    district = (district_argmax(probs, shares), districts_listed(probs, shares)) if shares.has_districts else ()
    city = {}
    if train_places is not None and np.size(train_places[0]):
        cities = city_shares(model.cells, *train_places)
        city = {"pred_city": city_argmax(probs, cities), "city_listed": cities_listed(probs, cities)}
    return {"hierarchy": hierarchy_accuracy(country, region, t_lat, t_lon, *district, groups=groups, seed=seed,
                                            **city),
            "point": point_admin_accuracy(main.lat, main.lon, t_lat, t_lon, groups=groups, seed=seed),
            "shares_from": shares.source}


def answer_context(model):
    """A model's `AnswerContext`; pretrained gallery models (GeoCLIP, zero-shot) get one whose
    candidates are their gallery points, each spread over 25 km."""
    if hasattr(model, "answer_context"):
        return model.answer_context()
    from geospot.models.answer import AnswerContext
    from geospot.models.distribution import Support

    cells = model.cells
    n = len(cells)
    support = Support(cells.centroid_lat, cells.centroid_lon, np.arange(n), np.ones(n), np.full(n, 25.0))
    return AnswerContext(cells, support, getattr(model, "calibration", None))


def _recipe_probs_fn(model, emb, lat, lon, groups):
    from geospot.train.fit import train_head
    from geospot.workflows.training import head_probs

    base = head_config(model.train_config)
    head, _ = train_head(emb, lat, lon, model.cells, recipe_config(base), groups=groups, progress=False)
    return lambda e: head_probs(head, e, model.normalize)


def _model_summary(model, main: str) -> dict:
    return {
        "encoder": model.encoder_name,
        "cells": {"scheme": model.cells.scheme, "count": len(model.cells)},
        "estimate": main,
        "calibration": model.calibration.to_dict() if getattr(model, "calibration", None) is not None else None,
        "train_config": getattr(model, "train_config", None),
        "mask": model.mask,
    }


def eval_notes(fuse: str, have_recipe: bool) -> list[str]:
    notes = [
        "Errors are great-circle (haversine) distances; GeoScore = 5000·exp(-d/1492.7 km).",
        "Intervals are 95% bootstrap intervals over places; comparisons are paired on the same photos.",
        {
            "embeddings": "Views of one place are fused by averaging their embeddings (PIGEON); metrics are per place.",
            "probs": "Views of one place are fused by averaging their cell probabilities; metrics are per place.",
            "none": "Every image is scored on its own (intervals resample whole places).",
        }[fuse],
        "Country accuracy compares the countries (Natural Earth 1:50m outlines) of the prediction and the truth; "
        "country acc (GeoNames) uses the nearest GeoNames town's country instead, as OSV-5M does.",
    ]
    if not have_recipe:
        notes.append("The article-recipe baseline needs training data: pass --train MANIFEST to add it.")
    return notes


def write_full_report(report, out_dir, methods, errors, t_lat, t_lon, cells, table=None) -> dict:
    """Figures (error CDF, reliability, country and cell confusion), predictions CSV, JSON/Markdown report."""
    from geospot.eval.metrics import per_group_metrics
    from geospot.eval.plots import confusion_matrix, error_cdf, reliability_diagram
    from geospot.eval.report import write_report
    from geospot.geo.geocode import country_codes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main = report.get("main_method") or next(iter(methods))
    figures = {}
    error_cdf(errors, out / "error_cdf.png")
    figures["error CDF"] = "error_cdf.png"
    if report.get("calibration"):
        reliability_diagram(report["calibration"], out / "reliability.png")
        figures["reliability (before/after calibration)"] = "reliability.png"
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
    from geospot.viz.evalmaps import write_eval_maps

    figures.update(write_eval_maps({"true_lat": t_lat, "true_lon": t_lon, "pred_lat": methods[main].lat,
                                    "pred_lon": methods[main].lon, "true_cc": true_cc, "pred_cc": pred_cc}, out))
    if table is not None:
        table.to_csv(out / "predictions.csv", index=False)
        report = dict(report, predictions="predictions.csv")
    report = dict(report, figures=figures, per_country=per_group_metrics(errors[main], true_cc))
    write_report(report, out)
    return report
