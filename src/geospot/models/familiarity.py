"""How familiar a photo looks to a model, and the answer for photos that do not.

A head trained on Street View answers a holiday snapshot or an indoor photo as
confidently as a street scene, and a confident wrong cell scores far below the
training medoid. The calibrated probabilities cannot notice: they were fitted on
held-out *Street View*. What does notice is the embedding itself: its cosine
similarity to the mean training embedding ("familiarity"). Held-out Street View
collections score a median of 0.63-0.71 and a 1st percentile of 0.40-0.52 (each
scored against a model that never saw that collection); camera photos score a
median of 0.45 (docs/accuracy.md).

The rule: a photo less familiar than the ``quantile`` (default 1%) of
out-of-fold photos (the calibration folds' held-out photos, each scored against
its fold's training mean; each fold weighs the same) is answered by the
``fallback`` estimate, ``max_geoscore``: the point of highest expected GeoScore
under the calibrated distribution, which hedges towards the training data's
centre when the cells disagree, instead of the local mean of a confident wrong
cell. By construction about 1% of photos like the training data switch (on the
held-out collections: 0-2%, GeoScore unchanged); photos unlike them switch.

Stored as ``familiarity.safetensors`` (the mean, unit length) and a
``familiarity`` section of ``config.json``. NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

FAMILIARITY_FILE = "familiarity.safetensors"
DEFAULT_QUANTILE = 0.01
DEFAULT_FALLBACK = "max_geoscore"
_CHUNK = 65536


@dataclass
class Familiarity:
    """The mean training embedding (unit length) and the similarity below which a photo is unfamiliar."""

    mean: np.ndarray  # [D] float32, unit length
    threshold: float
    quantile: float = DEFAULT_QUANTILE
    fallback: str = DEFAULT_FALLBACK
    fitted_on: str = ""

    def __post_init__(self) -> None:
        m = np.asarray(self.mean, np.float32).reshape(-1)
        norm = float(np.linalg.norm(m)) if m.size else 0.0
        if not m.size or not np.isfinite(m).all() or abs(norm - 1.0) > 1e-3:
            raise ValueError("familiarity mean must be a finite vector of unit length")
        self.mean = m
        for name, lo, hi in (("threshold", -1.0, 1.0), ("quantile", 0.0, 0.5)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"familiarity {name} must be a number in [{lo}, {hi}], got {v!r}")
        from geospot.models.answer import ESTIMATES

        if self.fallback not in ESTIMATES:
            raise ValueError(f"familiarity fallback {self.fallback!r} is not an estimate ({', '.join(ESTIMATES)})")

    def scores(self, emb) -> np.ndarray:
        """Cosine similarity of each embedding ``[B, D]`` to the training mean ``[B]``."""
        return familiarity_scores(emb, self.mean)

    def unfamiliar(self, emb) -> np.ndarray:
        """``[B]`` bool: the photos answered by the fallback estimate."""
        return self.scores(emb) < self.threshold

    def config(self) -> dict:
        return {"file": FAMILIARITY_FILE, "threshold": float(self.threshold), "quantile": float(self.quantile),
                "fallback": self.fallback, "fitted_on": self.fitted_on}

    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save_file

        save_file({"mean": np.ascontiguousarray(self.mean, np.float32)}, str(Path(directory) / FAMILIARITY_FILE))


def familiarity_scores(emb, mean: np.ndarray) -> np.ndarray:
    x = np.asarray(emb, np.float32)
    if x.ndim != 2 or x.shape[1] != mean.shape[0]:
        raise ValueError(f"familiarity: expected embeddings [B, {mean.shape[0]}], got {list(x.shape)}")
    return (x @ mean) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)


def _unit_rows(emb, rows: np.ndarray) -> np.ndarray:
    x = np.asarray(emb[rows], np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_familiarity(emb, folds: Sequence[tuple[np.ndarray, np.ndarray]], rows=None, fitted_on: str = "",
                    quantile: float = DEFAULT_QUANTILE, fallback: str = DEFAULT_FALLBACK) -> Familiarity | None:
    """The training mean of ``emb[rows]`` (all rows when None) and the ``quantile`` of out-of-fold
    familiarity: each fold's held-out rows scored against the mean of its training rows
    (``folds``: ``(train, test)`` positions into ``rows``, as `calibration_folds` gives).
    Each fold weighs the same. Reads ``emb`` in chunks (a memory map works). None without folds."""
    rows = np.arange(len(emb)) if rows is None else np.asarray(rows, np.int64)
    folds = [(np.asarray(tr, np.int64), np.asarray(te, np.int64)) for tr, te in folds if len(tr) and len(te)]
    if not folds or not len(rows):
        return None

    def unit_sum(pos: np.ndarray) -> np.ndarray:
        return sum((_unit_rows(emb, rows[pos[i:i + _CHUNK]]).sum(0) for i in range(0, len(pos), _CHUNK)),
                   np.zeros(emb.shape[1]))

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    scores, weights = [], []
    for tr, te in folds:
        mu = unit(unit_sum(tr))
        s = np.concatenate([_unit_rows(emb, rows[te[i:i + _CHUNK]]) @ mu for i in range(0, len(te), _CHUNK)])
        scores.append(s)
        weights.append(np.full(len(s), 1.0 / len(s)))
    threshold = _weighted_quantile(np.concatenate(scores), np.concatenate(weights), quantile)
    return Familiarity(unit(unit_sum(np.arange(len(rows)))), float(np.clip(threshold, -1.0, 1.0)), quantile,
                       fallback, fitted_on)


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(cum, q * cum[-1]), len(x) - 1)])


def read_familiarity(root: Path, config: dict) -> Familiarity | None:
    """The model's `Familiarity` named in ``config.json`` (None when absent); CheckpointError otherwise."""
    from geospot.models.checkpoint_read import CONFIG_FILE, CheckpointError

    section = config.get("familiarity")
    if section is None:
        return None
    where = root / CONFIG_FILE
    if not isinstance(section, dict) or section.get("file") != FAMILIARITY_FILE:
        raise CheckpointError(f"{where}: 'familiarity' must be an object with 'file': '{FAMILIARITY_FILE}', "
                              f"got {section!r}")
    path = root / FAMILIARITY_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the model's familiarity reference)")
    try:
        from safetensors.numpy import load_file

        mean = load_file(str(path))["mean"]
    except Exception as exc:  # truncated or garbled files raise several types
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if mean.shape != (config["head"]["embed_dim"],):
        raise CheckpointError(f"{path}: mean has shape {list(mean.shape)}, the model's embeddings "
                              f"{config['head']['embed_dim']}")
    try:
        return Familiarity(mean, section.get("threshold"), section.get("quantile", DEFAULT_QUANTILE),
                           section.get("fallback", DEFAULT_FALLBACK), str(section.get("fitted_on", "")))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: bad 'familiarity': {exc}") from None
