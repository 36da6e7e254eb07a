"""Cross-validation by place (the article's protocol) or by collection
(leave-one-collection-out: the honest check of how a model does on photos from
elsewhere). Each outer fold trains exactly what `fit` trains, calibration
included (with inner folds inside the training part), and scores it beside
the baselines rebuilt on that fold's training data."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from geospot.data.manifest import Manifest
from geospot.encoders.preprocess import DEFAULT_VIEWS
from geospot.workflows.embedding import DEFAULT_ENCODER, collections_of, embeddings_or_compute, log
from geospot.workflows.scoring import (
    MEDOID, baseline_methods, calibration_report, fuse_views, main_method_name, method_name, model_methods,
    paired_comparisons, place_embeddings, place_probs, predictions_table, score_methods,
)
from geospot.workflows.training import DEFAULT_CELLS, head_probs, location_table, recipe_config, train_calibrated


def outer_folds(groups, collections, folds: int, seed: int):
    """``[(label, train_idx, test_idx)]``: one fold per collection, or group K-fold by place."""
    from geospot.data.splits import group_kfold

    if collections is not None:
        names = sorted(set(collections.tolist()))
        if len(names) < 2:
            raise ValueError(f"cross-validation by collection needs at least 2 collections, found {names}")
        return [(name, np.flatnonzero(collections != name), np.flatnonzero(collections == name)) for name in names]
    n_groups = len(set(np.asarray(groups).tolist()))
    if folds < 2 or folds > n_groups:
        raise ValueError(f"--folds must be between 2 and the number of places ({n_groups}), got {folds}")
    return [(f"fold {k + 1}", tr, te) for k, (tr, te) in enumerate(group_kfold(groups, n_splits=folds, seed=seed))]


def cross_validate(
    manifest: Manifest,
    *,
    folds: int = 5,
    group_by: str | None = None,
    encoder: str = DEFAULT_ENCODER,
    cell_params: dict | None = None,
    config=None,
    mask=None,
    fuse: str = "embeddings",
    top_k: int = 5,
    estimate: str | None = None,
    calibrate: bool = True,
    embeddings=None,
    test_embeddings=None,
    countries: bool = True,
    seed: int = 0,
    out_dir: str | Path | None = None,
    cache_dir=None,
    backend: str = "auto",
    device: str = "auto",
    progress: bool = True,
    views: str = DEFAULT_VIEWS,
) -> dict:
    """Out-of-fold evaluation. ``group_by=None``: group K-fold by ``location_id``
    (views of one place never straddle folds); ``group_by="collection"`` (any
    column): one fold per value, trained on all the others. `views`: test-time views averaged
    per photo (`Preprocess.all_views`). ``test_embeddings`` (same rows as ``embeddings``, e.g. the
    photos through the int8 encoder): what the held-out photos are answered from, while every model
    still trains on ``embeddings`` (a model trained at full precision, used with a cheaper encoder);
    a photo either set could not read is left out of both."""
    from geospot.eval.metrics import summarize_folds
    from geospot.models.answer import DEFAULT_ESTIMATE, AnswerContext
    from geospot.train.config import TrainConfig
    from geospot.train.fit import train_head

    config = config or TrainConfig()
    main = estimate or DEFAULT_ESTIMATE
    main_name = method_name(main)
    emb, ok = embeddings_or_compute(manifest, embeddings, encoder, mask, cache_dir, backend, device, progress, "cv",
                                    views=views)
    if test_embeddings is not None:
        test_emb, test_ok = embeddings_or_compute(manifest, test_embeddings, encoder, mask, cache_dir, backend,
                                                  device, progress, "cv (test embeddings)", views=views)
        if test_emb.shape != emb.shape:
            raise ValueError(f"test embeddings have shape {test_emb.shape}, the training ones {emb.shape}")
        ok = ok & test_ok  # a photo is scored only where both encoders read it
    lat, lon, groups = manifest.lat[ok], manifest.lon[ok], np.asarray(manifest.groups)[ok]
    cols = collections_of(manifest, group_by)
    cols = cols[ok] if cols is not None else None
    emb = emb[ok]
    test_emb = emb if test_embeddings is None else test_emb[ok]
    paths = np.asarray(manifest.paths, dtype=object)[ok]
    fold_results, pooled, tables = [], {}, []
    t0 = time.time()
    plan = outer_folds(groups, cols, folds, seed)
    for k, (label, tr, te) in enumerate(plan):
        trained = train_calibrated(emb[tr], lat[tr], lon[tr], groups[tr], collections=None if cols is None else cols[tr],
                                   cell_params=cell_params, config=config, calibrate=calibrate, progress=False,
                                   estimates=(main,))
        cells = trained.cells
        r_head, _ = train_head(emb[tr], lat[tr], lon[tr], cells, recipe_config(config), groups=groups[tr],
                               progress=False)
        ctx = AnswerContext(cells, trained.support, trained.calibration)
        f_emb, t_lat, t_lon, inverse, n, first = fuse_views(test_emb[te], lat[te], lon[te], groups[te], fuse)
        raw = place_probs(lambda e: head_probs(trained.head, e, config.normalize), f_emb, inverse, n)
        familiarity = trained.familiarity if estimate is None else None  # as `locate` (see evaluate)
        methods, answer = model_methods(ctx, raw, main, top_k=top_k, familiarity=familiarity,
                                        emb=place_embeddings(f_emb, inverse, n))
        main_name = main_method_name(main, familiarity)
        recipe = place_probs(lambda e: head_probs(r_head, e, config.normalize), f_emb, inverse, n)
        tr_lat, tr_lon = location_table(lat[tr], lon[tr], groups[tr])
        methods.update(baseline_methods(tr_lat, tr_lon, n, seed=seed + k, recipe_probs=recipe, cells=cells))
        place_groups = groups[te][first] if fuse == "none" else None
        results, errors = score_methods(methods, t_lat, t_lon, cells=cells, countries=countries,
                                        groups=place_groups, seed=seed)
        calib = calibration_report(answer, errors[main_name], raw, cells, t_lat, t_lon)
        fold_results.append({
            "fold": label, "n_test_places": int(n), "n_train_images": int(len(tr)), "n_cells": len(cells),
            "calibration_fit": trained.calibration.to_dict() if trained.calibration else None,
            "methods": results, "calibration": _scalars(calib),
            "unfamiliar": None if answer["unfamiliar"] is None else int(answer["unfamiliar"].sum()),
            "comparisons": paired_comparisons(errors, main_name, groups=place_groups, seed=seed),
        })
        for name, e in errors.items():
            pooled.setdefault(name, []).append(e)
        pooled.setdefault("_lat", []).append(t_lat)
        pooled.setdefault("_lon", []).append(t_lon)
        pooled.setdefault("_groups", []).append(groups[te][first])
        tables.append(predictions_table(paths[te][first], t_lat, t_lon, answer, errors[main_name], cells,
                                        extra={"fold": label}))
        m, b = results[main_name], results.get(MEDOID, {})
        log(f"{label}: {len(cells)} cells, {n} test places: GeoScore {m['geoscore']:.0f} "
            f"(medoid {b.get('geoscore', float('nan')):.0f}), median {m['median_km']:.0f} km, "
            f"90% radius covers {100 * calib['coverage_90']:.0f}%"
            + (f", {int(answer['unfamiliar'].sum())} unfamiliar" if answer["unfamiliar"] is not None else "")
            + f" ({time.time() - t0:.0f} s)")
    names = list(fold_results[0]["methods"])
    cv = {name: summarize_folds([{k: v for k, v in f["methods"][name].items() if k != "ci"} for f in fold_results])
          for name in names}
    pooled_groups = np.concatenate(pooled.pop("_groups"))
    t_lat, t_lon = np.concatenate(pooled.pop("_lat")), np.concatenate(pooled.pop("_lon"))
    errors = {k: np.concatenate(v) for k, v in pooled.items()}
    from geospot.eval.bootstrap import error_metric_cis
    from geospot.eval.metrics import error_metrics

    pooled_methods = {name: dict(error_metrics(e), ci=error_metric_cis(e, groups=pooled_groups, seed=seed))
                      for name, e in errors.items()}
    how = (f"leave-one-{group_by}-out ({len(plan)} {group_by}s)" if cols is not None
           else f"group {len(plan)}-fold by location_id")
    report = {
        "title": f"geospot cross-validation: {how}",
        "model": {"encoder": encoder, "cells": cell_params or DEFAULT_CELLS, "train_config": config.to_dict(),
                  "estimate": main, "calibrate": calibrate,
                  "mask": mask.to_dict() if mask is not None and not mask.is_empty else None},
        "dataset": {"manifest": str(manifest.source), "n_images": int(ok.sum()),
                    "n_places": int(len(set(groups.tolist()))), "failed_images": int((~ok).sum()), "fuse": fuse},
        "main_method": main_name,
        "protocol": how,
        "methods": {name: {m: v["mean"] for m, v in cv[name].items()} for name in names},
        "cv": cv,
        "pooled": pooled_methods,
        "comparisons": paired_comparisons(errors, main_name, groups=pooled_groups, seed=seed),
        "folds": fold_results,
        "notes": [
            f"{how}: cells, head, calibration (inner folds inside each training part) and baselines rebuilt "
            "on each training fold.",
            "Intervals are 95% bootstrap intervals over places; comparisons are paired on the same photos.",
        ],
    }
    if out_dir is not None:
        import pandas as pd

        from geospot.eval.plots import error_cdf
        from geospot.eval.report import write_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from geospot.viz.evalmaps import write_eval_maps

        error_cdf(errors, out / "error_cdf.png")
        table = pd.concat(tables, ignore_index=True)
        table.to_csv(out / "predictions.csv", index=False)
        report["figures"] = {"error CDF (out-of-fold)": "error_cdf.png"}
        report["figures"].update(write_eval_maps({"true_lat": table["true_lat"].to_numpy(),
                                                  "true_lon": table["true_lon"].to_numpy(),
                                                  "pred_lat": table["lat"].to_numpy(),
                                                  "pred_lon": table["lon"].to_numpy()}, out))
        report["predictions"] = "predictions.csv"
        write_report(report, out)
    return report


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, list)}
