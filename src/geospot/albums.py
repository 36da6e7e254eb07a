"""Locate an album: photos of one trip answered together, one answer per photo (`geospot locate --album`).

The I/O side of `geospot.models.album`: capture times from EXIF, embedding
through the `Predictor`, the album model from the model directory. Methods:

- ``average``: every photo gets the album's mean cell probabilities (the
  simple baseline);
- ``fuse``: every photo gets the answer for the album's mean embedding
  (same-place fusion, as ``--same-place``; the best simple baseline on
  trips within a few hundred km, see docs/methods.md);
- ``model``: the album model stored with the model (``album.json``), which
  weighs the other photos by their time gap and content and answers per photo;

- ``auto`` (default): ``model`` when the model has one, else ``fuse``. The
  album model tied with fusion in-collection and beat it cross-collection
  (docs/methods.md, "Albums").

Photos are put in time order (EXIF ``DateTimeOriginal``, else ``DateTime``;
photos without a time follow in input order); answers come back in input
order. Photos that cannot be decoded are reported and left out of the album.
"""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

import numpy as np

from geospot.models.album import AlbumError, average_probs, load_album
from geospot.predict import Prediction, PredictionError

ALBUM_METHODS = ("auto", "model", "average", "fuse")


def capture_hours(paths: Sequence[str]) -> np.ndarray:
    """Capture time of each photo in hours since the album's earliest (NaN: unknown). Camera clocks are taken as
    they are: only gaps matter."""
    from geospot.data.importers import read_datetime_original

    times: list[datetime | None] = []
    for p in paths:
        try:
            iso = read_datetime_original(p)
            times.append(datetime.fromisoformat(iso[:19]) if iso else None)
        except (OSError, ValueError):
            times.append(None)
    known = [t for t in times if t is not None]
    t0 = min(known) if known else None
    return np.array([(t - t0).total_seconds() / 3600.0 if t is not None else np.nan for t in times], np.float64)


def album_order(hours) -> np.ndarray:
    """Indices in album order: timed photos by time (stable), then untimed ones in input order."""
    h = np.asarray(hours, np.float64)
    timed = np.flatnonzero(np.isfinite(h))
    return np.concatenate([timed[np.argsort(h[timed], kind="stable")], np.flatnonzero(~np.isfinite(h))]).astype(int)


def album_model_for(predictor):
    """The album model stored with the predictor's model directory (cached), or None."""
    if not hasattr(predictor, "_album_model"):
        model = predictor.model
        root = getattr(model, "root", None)
        predictor._album_model = None if root is None else load_album(
            root, model.cells.hash(), model.num_cells, model.embed_dim)
    return predictor._album_model


def resolve_method(predictor, method: str) -> str:
    """``auto`` -> ``model`` or ``fuse``; `AlbumError` when ``model`` is asked of a model without one."""
    if method not in ALBUM_METHODS:
        raise AlbumError(f"album method must be one of {', '.join(ALBUM_METHODS)}, got {method!r}")
    if not hasattr(predictor.model, "cells") or not hasattr(predictor, "predict_probs"):
        raise AlbumError("albums need a geospot model folder (not a pretrained gallery model)")
    if method == "model" and album_model_for(predictor) is None:
        where = getattr(predictor.model, "root", "the model")
        raise AlbumError(f"{where}: has no album model (album.json); train one with "
                         "`geospot train ... --album-model`, or use --album-method fuse or average")
    if method == "auto":
        return "model" if album_model_for(predictor) is not None else "fuse"
    return method


def locate_album(predictor, paths: Sequence[str], method: str = "auto", top_k: int = 5, hours=None,
                 batch_size: int = 16) -> tuple[list[Prediction | PredictionError], str]:
    """One answer per photo of one album, in input order, and the method used (``model``, ``average``, ``fuse``).

    ``hours``: capture times in hours (NaN unknown); default read from EXIF."""
    method = resolve_method(predictor, method)
    paths = [str(p) for p in paths]
    if hours is None:
        hours = capture_hours(paths)
    hours = np.asarray(hours, np.float64)
    if hours.shape != (len(paths),):
        raise AlbumError(f"hours: expected one per photo ({len(paths)}), got shape {list(hours.shape)}")
    emb, outcomes = predictor.embed(paths, batch_size=batch_size)
    good = [i for i in album_order(hours) if outcomes[i] is None]
    if not good:
        return list(outcomes), method
    probs = predictor.model.predict_proba(emb[good])
    if method == "average":
        out = average_probs(probs[None], np.ones((1, len(good)), bool))[0]
    elif method == "fuse":
        unit = emb[good] / np.maximum(np.linalg.norm(emb[good], axis=1, keepdims=True), 1e-12)
        out = np.repeat(predictor.model.predict_proba(unit.mean(0, keepdims=True)), len(good), axis=0)
    else:
        out = album_model_for(predictor).predict_proba(emb[good][None], probs[None], hours[good][None],
                                                       base=predictor.model)[0]
    preds = predictor.predict_probs(out, [paths[i] for i in good], top_k=top_k)
    by_index = dict(zip(good, preds))
    return [by_index.get(i, outcomes[i]) for i in range(len(paths))], method


def geotag_album(predictor, paths: Sequence[str], method: str = "auto", top_k: int = 5):
    """`geotag --album-by`: per-photo answers from the album model (``model``; ``auto`` when the model has
    one), or one fused answer for the album (``fuse``: the mean embedding, as `locate --same-place`)."""
    try:
        if resolve_method(predictor, method) == "model":
            return locate_album(predictor, paths, method="model", top_k=top_k)[0]
    except AlbumError as exc:
        raise SystemExit(f"error: {exc}") from None
    return predictor.predict(paths, top_k=top_k, same_place=True)
