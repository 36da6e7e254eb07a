"""Evaluate albums on synthetic trips from held-out photos: single-photo answers, probability averaging,
embedding averaging (same-place fusion) and the album model, per photo against its own true position.

Arrays in, errors out; `benchmarks/bench_albums.py` runs it cross- and in-collection.
"""
from __future__ import annotations

import numpy as np

METHODS = ("single photo", "average probs", "average embeddings", "album model")


def album_answers(ctx, base, album, emb, probs, trips, top_k: int = 5, estimate: str | None = None) -> dict:
    """Per (trip, photo) answers of every method: ``{method: (lat [M], lon [M])}`` and ``rows`` [M], ``trip`` [M].

    ``ctx``: the base model's `AnswerContext`; ``base``: an object with ``predict_proba(emb)``;
    ``album``: a `NumpyAlbumModel` (or None); ``probs``: the base's probabilities of ``emb``."""
    from geospot.models.album import average_probs, pad_albums
    from geospot.models.answer import DEFAULT_ESTIMATE

    estimate = estimate or DEFAULT_ESTIMATE
    rows = np.concatenate([r for r, _ in trips])
    trip_of = np.concatenate([np.full(len(r), i) for i, (r, _) in enumerate(trips)])
    out = {"rows": rows, "trip": trip_of}
    p_pad, mask = pad_albums([probs[r] for r, _ in trips])
    e_pad, _ = pad_albums([emb[r] for r, _ in trips])
    h_pad, _ = pad_albums([h for _, h in trips], fill=np.nan)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    fused = np.stack([unit[r].mean(0) for r, _ in trips])
    per_method = {
        "single photo": probs[rows],
        "average probs": average_probs(p_pad, mask)[mask],
        "average embeddings": base.predict_proba(fused)[trip_of],
    }
    if album is not None:
        per_method["album model"] = album.predict_proba(e_pad, p_pad, h_pad, mask, base=base)[mask]
    for name, p in per_method.items():
        ans = ctx.answer(p, top_k=top_k, estimate=estimate, estimates=(estimate,), levels=(0.5,), within_km=())
        out[name] = (ans["lat"], ans["lon"])
    return out


def album_errors(answers: dict, lat, lon) -> dict[str, np.ndarray]:
    """Great-circle error (km) of every method's answer against each photo's own position."""
    from geospot.geo.distance import haversine_km

    rows = answers["rows"]
    return {m: haversine_km(np.asarray(lat)[rows], np.asarray(lon)[rows], *answers[m])
            for m in METHODS if m in answers}


def run_fold(emb_tr, lat_tr, lon_tr, g_tr, emb_te, lat_te, lon_te, g_te, *, cell_params=None, train_config=None,
             album_config=None, n_trips: int | None = None, seed: int = 0, log=print) -> dict:
    """Train base + album model on one side, evaluate on trips built from the other.

    Returns ``{"errors": {method: [M]}, "trip": [M], "photos": [M], "summary": ...}``."""
    from geospot.models.answer import AnswerContext
    from geospot.train.album import AlbumConfig, TripMaker, base_probs, fit_album, oof_heads, torch_base
    from geospot.train.config import TrainConfig
    from geospot.workflows.training import _head_and_support, build_model_cells

    cfg = album_config or AlbumConfig(seed=seed)
    tcfg = train_config or TrainConfig(seed=seed)
    cells = build_model_cells(lat_tr, lon_tr, g_tr, cell_params)
    cells, head, support, _ = _head_and_support(emb_tr, lat_tr, lon_tr, g_tr, cells, cell_params, tcfg, False)
    log(f"  base head: {len(cells)} cells on {len(lat_tr)} photos")
    oof, folds, heads = oof_heads(emb_tr, lat_tr, lon_tr, g_tr, cells, tcfg, cfg.oof_folds, seed)
    net, summary = fit_album(emb_tr, oof, lat_tr, lon_tr, g_tr, cells, folds,
                             [torch_base(h, tcfg.normalize) for h in heads], cfg)
    log(f"  album model: loss {summary['loss_history'][0]:.3f} -> {summary['loss_history'][-1]:.3f}")

    class _Base:
        def predict_proba(self, e):
            return base_probs(head, e, tcfg.normalize)

    base = _Base()
    probs_te = base.predict_proba(emb_te)
    maker = TripMaker(lat_te, lon_te, g_te, cfg.hop_km, cfg.max_places, cfg.max_views, cfg.max_photos, cfg.p_untimed)
    trips = maker.make(n_trips or len(maker.rows), np.random.default_rng(seed + 1000))
    ctx = AnswerContext(cells, support)
    answers = album_answers(ctx, base, net.to_numpy(), emb_te, probs_te, trips)
    return {"errors": album_errors(answers, lat_te, lon_te), "trip": answers["trip"],
            "photos": answers["rows"], "trips": len(trips), "summary": summary}
