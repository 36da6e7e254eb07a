"""From a head's raw cell probabilities to an answer: calibrated probabilities,
point estimates (a registry), confidence radii and the probability of being close.

Estimates (``ESTIMATES``; a refiner joins with `register_estimate`):

- ``top_cell``: the most probable cell's centroid;
- ``top_k_mean``: the article's probability-weighted mean of the top-k centroids;
- ``local_mean``: that mean over the top-k cells near the top cell;
- ``max_geoscore``: the candidate point with the highest *expected* GeoScore under
  the calibrated distribution (decision theory: the Bayes action for GeoScore);
- ``min_distance``: the candidate with the smallest expected distance (a
  geometric median of the distribution).

Candidates are the support points and the cell centroids. When the model knows
little, the calibrated distribution is close to the training prior and the
Bayes answers fall back towards the prior's best guess instead of a confident
wrong cell. NumPy only; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from geospot.geo.distance import latlon_to_xyz
from geospot.models.calibration import Calibration
from geospot.models.distribution import (
    Support, cell_expectations, cell_prior, mixture_weights, radii_and_within, support_from_cells,
)
from geospot.models.estimate import DEFAULT_LOCAL_KM, point_estimates
from geospot.models.familiarity import DEFAULT_FALLBACK

#: The estimate reported as ``lat``/``lon`` unless a model or user picks another
#: (chosen by leave-one-collection-out evaluation, see docs/accuracy.md).
DEFAULT_ESTIMATE = "local_mean"
#: "Probability within" radii reported with every answer (city, region, country scales).
WITHIN_KM = (25.0, 200.0, 750.0)
GEOSCORE_SCALE_KM = 1492.7


@dataclass
class Posterior:
    """Calibrated cell probabilities of a batch, with what is needed to decide."""

    probs: np.ndarray  # [B, C] calibrated
    context: "AnswerContext"
    _basic: dict | None = field(default=None, repr=False)

    def basic(self, top_k: int) -> dict:
        if self._basic is None or self._basic["top_idx"].shape[1] != min(top_k, self.probs.shape[1]):
            c = self.context.cells
            self._basic = point_estimates(self.probs, c.centroid_lat, c.centroid_lon, top_k=top_k,
                                          local_km=DEFAULT_LOCAL_KM, cell_xyz=self.context.cell_xyz)
        return self._basic


EstimateFn = Callable[[Posterior, int], tuple[np.ndarray, np.ndarray]]
ESTIMATES: dict[str, EstimateFn] = {}


def register_estimate(name: str) -> Callable[[EstimateFn], EstimateFn]:
    def deco(fn: EstimateFn) -> EstimateFn:
        ESTIMATES[name] = fn
        return fn
    return deco


@register_estimate("top_cell")
def _top_cell(post: Posterior, top_k: int):
    b = post.basic(top_k)
    return b["top_lat"][:, 0], b["top_lon"][:, 0]


@register_estimate("top_k_mean")
def _top_k_mean(post: Posterior, top_k: int):
    b = post.basic(top_k)
    return b["mean_lat"], b["mean_lon"]


@register_estimate("local_mean")
def _local_mean(post: Posterior, top_k: int):
    b = post.basic(top_k)
    return b["local_lat"], b["local_lon"]


@register_estimate("max_geoscore")
def _max_geoscore(post: Posterior, top_k: int):
    k = np.argmax(post.probs @ post.context.expected_geoscore, axis=1)
    return post.context.cand_lat[k], post.context.cand_lon[k]


@register_estimate("min_distance")
def _min_distance(post: Posterior, top_k: int):
    k = np.argmin(post.probs @ post.context.expected_distance, axis=1)
    return post.context.cand_lat[k], post.context.cand_lon[k]


class AnswerContext:
    """Everything about a model that turns probabilities into answers; built once per model."""

    def __init__(self, cells, support: Support | None = None, calibration: Calibration | None = None,
                 prior: np.ndarray | None = None) -> None:
        self.cells = cells
        self.support = support if support is not None else support_from_cells(cells)
        self.support.check_cells(len(cells))
        self.calibration = calibration or Calibration()
        self.prior = cell_prior(cells) if prior is None else np.asarray(prior, np.float64)
        self.cand_lat = np.concatenate([self.support.lat, np.asarray(cells.centroid_lat, np.float64)])
        self.cand_lon = np.concatenate([self.support.lon, np.asarray(cells.centroid_lon, np.float64)])
        self._geo = self._dist = None
        self.cell_xyz = latlon_to_xyz(cells.centroid_lat, cells.centroid_lon)

    @property
    def expected_geoscore(self) -> np.ndarray:
        """``[C, K]``: expected GeoScore of candidate k given the photo is in cell c."""
        if self._geo is None:
            self._geo = cell_expectations(self.support, self.calibration.kernel_km, self.cand_lat, self.cand_lon,
                                          len(self.cells), lambda d: 5000.0 * np.exp(-d / GEOSCORE_SCALE_KM))
        return self._geo

    @property
    def expected_distance(self) -> np.ndarray:
        if self._dist is None:
            self._dist = cell_expectations(self.support, self.calibration.kernel_km, self.cand_lat, self.cand_lon,
                                           len(self.cells), lambda d: d)
        return self._dist

    def posterior(self, raw_probs) -> Posterior:
        return Posterior(self.calibration.apply(raw_probs, self.prior), self)

    def answer(self, raw_probs, top_k: int = 5, estimate: str = DEFAULT_ESTIMATE,
               estimates: tuple[str, ...] | None = None, levels=(0.5, 0.9), within_km=WITHIN_KM,
               fallback=None, fallback_estimate: str = DEFAULT_FALLBACK) -> dict:
        """Everything an answer holds, as arrays over the batch:

        ``probs`` (calibrated [B, C]); ``lat``/``lon`` (the chosen estimate);
        ``estimates`` {name: (lat, lon)} (every registered estimate, or those named);
        ``top_idx``/``top_prob`` [B, k]; ``radius_km`` [B, len(levels)] around the
        chosen estimate; ``within`` [B, len(within_km)] probability within each radius;
        ``used`` [B] the estimate each row answers with.

        ``fallback`` ([B] bool, e.g. `Familiarity.unfamiliar`): those rows answer with
        ``fallback_estimate`` instead (its point, and radii with its own scales).
        """
        for name in (estimate, fallback_estimate):
            if name not in ESTIMATES:
                raise ValueError(f"unknown estimate {name!r}; choose from {', '.join(ESTIMATES)}")
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        post = self.posterior(raw_probs)
        n = post.probs.shape[0]
        k = min(int(top_k), post.probs.shape[1])
        switch = np.zeros(n, bool) if fallback is None else np.asarray(fallback, bool).reshape(-1)
        if switch.shape != (n,):
            raise ValueError(f"fallback must hold one flag per row ({n}), got {switch.shape[0]}")
        names = list(estimates) if estimates is not None else list(ESTIMATES)
        for name in (estimate, fallback_estimate) if switch.any() else (estimate,):
            if name not in names:
                names.append(name)
        est = {name: tuple(np.asarray(a, np.float64) for a in ESTIMATES[name](post, k)) for name in names}
        lat, lon = est[estimate]
        used = np.full(n, estimate, dtype=object)
        if switch.any():
            f_lat, f_lon = est[fallback_estimate]
            lat, lon = np.where(switch, f_lat, lat), np.where(switch, f_lon, lon)
            used[switch] = fallback_estimate
        w = mixture_weights(post.probs, self.support)
        if not switch.any():
            radii, within = self._radii(w, lat, lon, estimate, levels, within_km)
        else:
            radii, within = np.empty((n, len(levels))), np.empty((n, len(within_km)))
            for name, rows in ((estimate, ~switch), (fallback_estimate, switch)):
                if rows.any():
                    radii[rows], within[rows] = self._radii(w[rows], lat[rows], lon[rows], name, levels, within_km)
        basic = post.basic(k)
        return {
            "probs": post.probs,
            "lat": lat,
            "lon": lon,
            "estimate": estimate,
            "used": used,
            "estimates": est,
            "top_idx": basic["top_idx"],
            "top_prob": basic["top_prob"],
            "radius_km": radii,
            "levels": tuple(levels),
            "within": within,
            "within_km": tuple(within_km),
        }

    def gated_answer(self, raw_probs, familiarity=None, emb=None, **kw) -> dict:
        """`answer` behind a familiarity gate (`geospot.models.familiarity`): rows whose embedding
        (``emb`` [B, D]) looks unlike the training data answer with the gate's fallback estimate.
        Adds ``familiarity`` (each row's score) and ``unfamiliar`` (the flags), None without a gate."""
        if familiarity is None:
            return self.answer(raw_probs, **kw) | {"familiarity": None, "unfamiliar": None}
        scores = familiarity.scores(emb)
        unfamiliar = scores < familiarity.threshold  # `Familiarity.unfamiliar`, from the scores at hand
        return self.answer(raw_probs, fallback=unfamiliar, fallback_estimate=familiarity.fallback, **kw) | {
            "familiarity": scores, "unfamiliar": unfamiliar}

    def _radii(self, w, lat, lon, estimate: str, levels, within_km):
        """Radii around ``estimate``'s points and the probability within ``within_km``."""
        # split-conformal radius scales fitted out of fold (1 where none): radii, and the
        # distance axis of "probability within", stretched alike
        scale = self.calibration.scales_for(estimate, levels)
        within_scale = float(np.exp(np.mean(np.log(scale)))) if len(scale) else 1.0
        within_r = np.asarray(within_km, np.float64) / within_scale
        radii, within = radii_and_within(w, self.support, self.calibration.kernel_km, lat, lon, levels, within_r)
        radii = radii * scale[None, :]
        # per-level scales can cross where the raw radii saturate at half the globe:
        # a higher level's radius is never smaller than a lower level's
        order = np.argsort(np.asarray(levels, np.float64), kind="stable")
        radii[:, order] = np.maximum.accumulate(radii[:, order], axis=1)
        return radii, within
