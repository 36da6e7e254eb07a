"""Scoring a model's answers beside the skeptic's baselines, with confidence intervals.

Every report scores, on the same photos: each of the model's estimates (from its
calibrated distribution), the training medoid, a random training location and
the article's recipe (plain cross-entropy, top cell). Every metric gets a
bootstrap interval (resampling places), and the model's main estimate a paired
comparison with each baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from geospot.workflows.embedding import l2_normalize

MODEL_PREFIX = "geospot: "
MEDOID = "baseline: training medoid"
RANDOM = "baseline: random training location"
RECIPE = "baseline: article recipe (CE, top cell)"
BASELINES = (MEDOID, RANDOM, RECIPE)


@dataclass
class Predictions:
    """Per-place predictions of one method, aligned with the true coordinates."""

    lat: np.ndarray
    lon: np.ndarray
    probs: np.ndarray | None = None  # [n, C] when the method has cell probabilities


def method_name(estimate: str) -> str:
    return MODEL_PREFIX + estimate


def fuse_views(emb: np.ndarray, lat, lon, groups, fuse: str):
    """Group the views of a place. Returns (emb, lat, lon, inverse, n_places, first_row).

    fuse="embeddings": average the L2-normalised embeddings per place (PIGEON);
    "probs": keep views, average probabilities later; "none": every view alone.
    ``first_row[i]`` is a row of the input behind output place i (for names).
    """
    from geospot.models.fusion import fuse_embeddings, group_index

    emb = l2_normalize(emb)
    if fuse == "none":
        n = len(emb)
        return emb, np.asarray(lat, float), np.asarray(lon, float), np.arange(n), n, np.arange(n)
    inverse, n = group_index(groups)
    first = np.full(n, -1, dtype=np.int64)
    order = np.arange(len(inverse))[::-1]
    first[inverse[order]] = order
    p_lat, p_lon = np.asarray(lat, float)[first], np.asarray(lon, float)[first]
    if fuse == "embeddings":
        return fuse_embeddings(emb, inverse, n), p_lat, p_lon, np.arange(n), n, first
    if fuse == "probs":
        return emb, p_lat, p_lon, inverse, n, first
    raise ValueError(f"fuse must be 'embeddings', 'probs' or 'none', not {fuse!r}")


def place_probs(proba_fn: Callable[[np.ndarray], np.ndarray], emb, inverse, n) -> np.ndarray:
    from geospot.models.fusion import fuse_probs

    probs = proba_fn(emb)
    if len(probs) == n and np.array_equal(inverse, np.arange(n)):
        return probs
    return fuse_probs(probs, inverse, n)


def gated_name(main: str, fallback: str) -> str:
    """The method that answers ``main``, and ``fallback`` for unfamiliar photos (what `locate` does)."""
    return f"{MODEL_PREFIX}{main}, {fallback} if unfamiliar"


def main_method_name(main: str, familiarity=None) -> str:
    return gated_name(main, familiarity.fallback) if familiarity is not None else method_name(main)


def place_embeddings(emb: np.ndarray, inverse, n: int) -> np.ndarray:
    """One embedding per place: ``emb`` when it already is (``fuse_views`` gave places), else
    each place's views averaged (``fuse="probs"`` keeps one row per photo)."""
    from geospot.models.fusion import fuse_embeddings

    return emb if len(emb) == n else fuse_embeddings(emb, inverse, n)


def model_methods(context, raw_probs: np.ndarray, main: str, top_k: int = 5, familiarity=None, emb=None):
    """``(methods, answer)``: every registered estimate of the model (main first), and
    the full answer of the main estimate (radii, probability within, calibrated probs).

    With a `Familiarity` (and the rows' embeddings ``emb``), the main method answers
    unfamiliar rows with its fallback, as the predictor does (`main_method_name`); each
    estimate alone is scored too."""
    from geospot.models.answer import ESTIMATES

    answer = context.gated_answer(raw_probs, familiarity, emb, top_k=top_k, estimate=main)
    methods = {main_method_name(main, familiarity): Predictions(answer["lat"], answer["lon"], answer["probs"])}
    for name in ESTIMATES:
        if name != main or familiarity is not None:
            lat, lon = answer["estimates"][name]
            methods[method_name(name)] = Predictions(lat, lon, answer["probs"])
    return methods, answer


def baseline_methods(train_lat, train_lon, n: int, seed: int = 0, recipe_probs=None, cells=None) -> dict:
    from geospot.eval.baselines import medoid_baseline, random_location_baseline

    methods = {}
    if recipe_probs is not None:
        top = np.asarray(recipe_probs).argmax(1)
        methods[RECIPE] = Predictions(np.asarray(cells.centroid_lat, float)[top],
                                      np.asarray(cells.centroid_lon, float)[top], recipe_probs)
    if train_lat is not None and len(train_lat):
        m_lat, m_lon = medoid_baseline(train_lat, train_lon, n)
        methods[MEDOID] = Predictions(np.asarray(m_lat), np.asarray(m_lon))
        r_lat, r_lon = random_location_baseline(train_lat, train_lon, n, seed=seed)
        methods[RANDOM] = Predictions(np.asarray(r_lat), np.asarray(r_lon))
    return methods


def score_methods(methods: dict[str, Predictions], true_lat, true_lon, cells=None, countries: bool = True,
                  groups=None, seed: int = 0) -> tuple[dict, dict]:
    """Metrics (with ``ci``: 95% bootstrap intervals) per method, plus the raw errors (km)."""
    from geospot.eval.bootstrap import error_metric_cis
    from geospot.eval.metrics import accuracy, distance_metrics, topk_accuracy
    from geospot.geo.distance import haversine_km

    true_cc = None
    if countries:
        from geospot.geo.geocode import country_codes, geonames_country_codes

        true_cc = country_codes(true_lat, true_lon)
        true_gn = geonames_country_codes(true_lat, true_lon)
    true_cell = cells.assign(true_lat, true_lon, nearest=True) if cells is not None else None
    results, errors = {}, {}
    for name, p in methods.items():
        m = distance_metrics(p.lat, p.lon, true_lat, true_lon)
        if p.probs is not None and true_cell is not None:
            m.update(topk_accuracy(p.probs, true_cell, ks=(1, 5)))
        if true_cc is not None:
            m["country_acc"] = accuracy(country_codes(p.lat, p.lon), true_cc)["accuracy"]
            # OSV-5M's definition (nearest GeoNames town's country), for comparison with published numbers.
            m["country_acc_geonames"] = accuracy(geonames_country_codes(p.lat, p.lon), true_gn)["accuracy"]
        e = haversine_km(p.lat, p.lon, true_lat, true_lon)
        m["ci"] = error_metric_cis(e, groups=groups, seed=seed)
        results[name] = m
        errors[name] = e
    return results, errors


def paired_comparisons(errors: dict[str, np.ndarray], main: str, groups=None, seed: int = 0) -> dict:
    """The main method against each baseline present: ``{baseline: paired dict + "text"}``."""
    from geospot.eval.bootstrap import describe_paired, paired_geoscore

    out = {}
    for name in BASELINES:
        if name in errors and main in errors:
            d = paired_geoscore(errors[main], errors[name], groups=groups, seed=seed)
            label = {MEDOID: "the medoid", RANDOM: "a random training location", RECIPE: "the article's recipe"}[name]
            d["text"] = describe_paired(label, d)
            out[name] = d
    return out


def calibration_report(answer: dict, main_errors: np.ndarray, raw_probs: np.ndarray, cells, true_lat,
                       true_lon) -> dict:
    """NLL/ECE before and after calibration and the coverage of the 50%/90% radii."""
    from geospot.eval.calibration import calibration_summary

    true_cell = cells.assign(true_lat, true_lon, nearest=True)
    radii = {str(int(round(100 * lv))): answer["radius_km"][:, j] for j, lv in enumerate(answer["levels"])}
    return calibration_summary(raw_probs, answer["probs"], true_cell, main_errors, radii)


def predictions_table(names, true_lat, true_lon, answer: dict, main_errors, cells, extra: dict | None = None):
    """One row per place: path, truth, estimate, error, top cells, radii, probability within."""
    import pandas as pd

    ids = np.asarray(cells.ids, dtype=object)
    top = [";".join(f"{ids[i]}:{p:.4f}" for i, p in zip(ti, tp)) for ti, tp in
           zip(answer["top_idx"], answer["top_prob"])]
    df = pd.DataFrame({
        "path": list(names), "true_lat": true_lat, "true_lon": true_lon,
        "lat": np.round(answer["lat"], 6), "lon": np.round(answer["lon"], 6),
        "error_km": np.round(main_errors, 3), "top_cells": top,
    })
    if answer.get("unfamiliar") is not None:  # the estimate each row answered with (familiarity gate)
        df["estimate"] = answer["used"]
    for j, lv in enumerate(answer["levels"]):
        df[f"radius{int(round(100 * lv))}_km"] = np.round(answer["radius_km"][:, j], 1)
    for j, r in enumerate(answer["within_km"]):
        df[f"p_within_{int(r)}km"] = np.round(answer["within"][:, j], 4)
    for k, v in (extra or {}).items():
        df[k] = v
    return df
