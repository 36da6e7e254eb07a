"""Calibrated answers: a temperature, a mixing weight with the training prior, a kernel width.

A head trained on one collection is overconfident on photos from another. Three
numbers, fitted on *out-of-fold* predictions (ideally folds by collection, so
that each prediction is for a collection the fold's model never saw), repair
that:

- ``temperature`` T: probabilities ``p ** (1/T)`` renormalised (= softmax of logits / T);
- ``prior_weight`` lambda: ``(1 - lambda) * p_T + lambda * prior``, where ``prior`` is the
  training distribution over cells (what is known before looking at the photo);
- ``kernel_km`` h: the width added to every support point (see
  `geospot.models.distribution`), i.e. how far from the training places a photo may be;
- ``log_prob_cap`` c: the largest raw log-probability seen out of fold. After the
  temperature, log-probabilities are bent smoothly under ``c / T``
  (``c/T - softplus(c/T - log p / T)``: strictly increasing, so the order of cells
  never changes; below the cap by a few units, untouched). Why: a temperature
  fitted where every raw top probability lay between 0.01 and 0.04 (as
  cross-collection heads give) turns a photo unlike anything validated, with a raw
  top of 0.24, into a "99.5%" cell; cells beyond the validated range become about
  equally likely instead, so the model claims no more than it was checked to deserve.

Temperature and prior weight are fitted by the out-of-fold log loss of the true
cell (a proper scoring rule: it rewards being right and being honest about
being unsure), then the kernel by the likelihood of the true locations under
the resulting distribution on the sphere; each fold weighs the same (a big
collection must not decide alone). Then, per point estimate, a radius
scale per level (``radius_scale``): the out-of-fold quantile of error / radius, so
that on the held-out folds the true location lies inside the 50% radius for 50%
of photos and inside the 90% radius for 90% (split-conformal calibration; it
corrects what a Gaussian mixture cannot express, e.g. photos from regions with
no training places at all). Stored in ``config.json``, applied by the predictor.
NumPy only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from geospot.models.distribution import Support, cell_density

_KERNEL_GRID_KM = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 2560.0)
_FLOOR = 1e-300


@dataclass
class Calibration:
    """How to turn a head's probabilities into an honest distribution."""

    temperature: float = 1.0
    prior_weight: float = 0.0
    kernel_km: float = 25.0
    fitted_on: str = "none"  # e.g. "leave-one-collection-out (5 collections, 2960 places)"
    # {estimate: {"50": scale, "90": scale}}: radii of that estimate are multiplied by these
    radius_scale: dict = None
    log_prob_cap: float | None = None  # None: no cap (models calibrated before it existed)

    def __post_init__(self) -> None:
        for name, lo, hi in (("temperature", 1e-3, 1e3), ("prior_weight", 0.0, 1.0), ("kernel_km", 1e-3, 2e4)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"Calibration.{name} must be a number in [{lo}, {hi}], got {v!r}")
        cap = self.log_prob_cap
        if cap is not None and (not isinstance(cap, (int, float)) or isinstance(cap, bool)
                                or not np.isfinite(cap) or not -700.0 <= cap <= 0.0):
            raise ValueError(f"Calibration.log_prob_cap must be a log-probability in [-700, 0] or null, got {cap!r}")
        if not isinstance(self.fitted_on, str):
            raise ValueError("Calibration.fitted_on must be a string")
        scales = self.radius_scale or {}
        if not isinstance(scales, dict) or not all(
                isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                            and np.isfinite(x) and 1e-6 < x < 1e6 for x in v.values())
                for v in scales.values()):
            raise ValueError(f"Calibration.radius_scale must map estimates to {{level: positive number}}, "
                             f"got {self.radius_scale!r}")
        self.radius_scale = {str(k): {str(l): float(x) for l, x in v.items()} for k, v in scales.items()}

    def scales_for(self, estimate: str, levels) -> np.ndarray:
        """Multipliers of the radii of ``estimate`` at ``levels``: its own if fitted, else those
        of the estimate they were fitted for, else 1."""
        fitted = self.radius_scale.get(estimate) or next(iter(self.radius_scale.values()), {})
        return np.array([fitted.get(str(int(round(100 * lv))), 1.0) for lv in levels])

    def apply(self, probs, prior: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities ``[B, C]`` (float64, rows sum to 1)."""
        return calibrate_probs(probs, self.temperature, self.prior_weight, prior, self.log_prob_cap)

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                for k, v in asdict(self).items()}


    @classmethod
    def from_dict(cls, d: dict | None) -> "Calibration":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"calibration must be an object, got {type(d).__name__}")
        unknown = set(d) - {"temperature", "prior_weight", "kernel_km", "fitted_on", "radius_scale", "log_prob_cap"}
        if unknown:
            raise ValueError(f"calibration: unknown key(s) {sorted(unknown)}")
        return cls(**d)


def cap_log_probs(logp: np.ndarray, cap: float | None) -> np.ndarray:
    """``cap - softplus(cap - logp)``: about ``logp`` well below ``cap``, approaching ``cap``
    (never reaching it) above; strictly increasing. ``cap=None`` returns ``logp``."""
    if cap is None:
        return logp
    u = cap - logp
    return cap - (np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u))))


def calibrate_probs(probs, temperature: float = 1.0, prior_weight: float = 0.0, prior=None,
                    log_prob_cap: float | None = None) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [B, C], got shape {p.shape}")
    logp = np.log(np.maximum(p, _FLOOR)) / float(temperature)
    if log_prob_cap is not None:
        logp = cap_log_probs(logp, log_prob_cap / float(temperature))
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    q /= q.sum(axis=1, keepdims=True)
    if prior_weight > 0:
        pr = np.full(p.shape[1], 1.0 / p.shape[1]) if prior is None else np.asarray(prior, np.float64)
        if pr.shape != (p.shape[1],):
            raise ValueError(f"prior has {pr.shape} entries for {p.shape[1]} cells")
        q = (1 - prior_weight) * q + prior_weight * pr[None, :]
    return q


@dataclass
class FoldPredictions:
    """Out-of-fold predictions of one fold model: what calibration is fitted on."""

    probs: np.ndarray  # [B, C] raw head probabilities
    prior: np.ndarray  # [C] the fold's training distribution over its cells
    support: Support  # the fold's support points
    true_lat: np.ndarray
    true_lon: np.ndarray
    cells: object = None  # the fold's CellTable (centroids for the point estimates)


def log_likelihood(folds: Sequence[FoldPredictions], cal: Calibration) -> np.ndarray:
    """Log density (per km^2) of every true location under the calibrated distribution."""
    out = []
    for f in folds:
        dens = cell_density(f.true_lat, f.true_lon, f.support, cal.kernel_km, f.probs.shape[1])
        q = cal.apply(f.probs, f.prior)
        out.append(np.log(np.maximum((q * dens).sum(1), _FLOOR)))
    return np.concatenate(out)


def fit_calibration(folds: Sequence[FoldPredictions], fitted_on: str = "out-of-fold predictions",
                    kernel_grid_km: Sequence[float] = _KERNEL_GRID_KM) -> Calibration:
    """Temperature and prior weight by the out-of-fold NLL of the true cell (the cell
    nearest the true location), then the kernel width by the likelihood of the true
    locations with those fixed. Each fold weighs the same.

    Fitted in two steps on purpose: jointly, a wide kernel can absorb the misses
    and let the temperature sharpen the cells until the top cell claims nearly
    all the mass, which is exactly the overconfidence calibration must remove."""
    from scipy.optimize import minimize

    folds = [f for f in folds if len(f.true_lat)]
    if not folds:
        raise ValueError("fit_calibration: no out-of-fold predictions")
    logp = [np.log(np.maximum(np.asarray(f.probs, np.float64), _FLOOR)) for f in folds]
    # the validated range: the most confident raw probability any fold model gave out of fold
    cap = float(min(0.0, max(float(lp.max()) for lp in logp)))
    priors = [np.asarray(f.prior, np.float64) for f in folds]
    truth = [_true_cells(f) for f in folds]

    def calibrated(lp, pr, t, lam):
        z = cap_log_probs(lp / t, cap / t)
        z -= z.max(axis=1, keepdims=True)
        q = np.exp(z)
        q /= q.sum(axis=1, keepdims=True)
        return (1 - lam) * q + lam * pr[None, :]

    def cell_nll(theta):
        t, lam = float(np.exp(theta[0])), float(1 / (1 + np.exp(-theta[1])))
        return -sum(np.log(np.maximum(calibrated(lp, pr, t, lam)[np.arange(len(y)), y], _FLOOR)).mean()
                    for lp, pr, y in zip(logp, priors, truth))

    best = None
    for x0 in (np.array([0.0, -3.0]), np.array([1.0, -1.0])):
        res = minimize(cell_nll, x0, method="L-BFGS-B", bounds=[(-3.0, 4.0), (-9.0, 4.0)])
        if best is None or res.fun < best.fun:
            best = res
    t, lam = float(np.exp(best.x[0])), float(1 / (1 + np.exp(-best.x[1])))
    qs = [calibrated(lp, pr, t, lam) for lp, pr in zip(logp, priors)]
    scores = []
    for h in kernel_grid_km:
        ll = sum(np.log(np.maximum((q * cell_density(f.true_lat, f.true_lon, f.support, h, q.shape[1])).sum(1),
                                   _FLOOR)).mean() for q, f in zip(qs, folds))
        scores.append(ll)
    h = float(kernel_grid_km[int(np.argmax(scores))])
    return Calibration(temperature=t, prior_weight=lam, kernel_km=h, fitted_on=fitted_on, log_prob_cap=cap)


def _true_cells(f: FoldPredictions) -> np.ndarray:
    """The cell of each true location (the nearest one when it lies in none)."""
    if f.cells is not None:
        return np.asarray(f.cells.assign(f.true_lat, f.true_lon, nearest=True), np.int64)
    from geospot.geo.distance import pairwise_haversine_km

    d = pairwise_haversine_km(f.true_lat, f.true_lon, f.support.lat, f.support.lon)
    return f.support.cell[np.argmin(d, axis=1)]


#: Photos per fold used to fit radius scales (a quantile needs no more; radii are costly).
SCALE_SAMPLE = 1500


def fit_radius_scales(folds: Sequence[FoldPredictions], cal: Calibration, estimates: Sequence[str],
                      levels=(0.5, 0.9), top_k: int = 5, seed: int = 0) -> dict:
    """``{estimate: {"50": s, "90": s}}``: per level, the out-of-fold quantile of error / radius
    (each fold weighing the same; at most ``SCALE_SAMPLE`` photos per fold), so that the
    scaled radii cover that share of the folds' photos."""
    from geospot.geo.distance import haversine_km
    from geospot.models.answer import AnswerContext

    rng = np.random.default_rng(seed)
    ratios: dict[str, list] = {e: [] for e in estimates}
    weights = []
    for f in folds:
        n = len(f.true_lat)
        rows = np.sort(rng.choice(n, SCALE_SAMPLE, replace=False)) if n > SCALE_SAMPLE else np.arange(n)
        ctx = AnswerContext(f.cells, f.support, Calibration(cal.temperature, cal.prior_weight, cal.kernel_km,
                                                            log_prob_cap=cal.log_prob_cap), prior=f.prior)
        for e in estimates:
            ans = ctx.answer(f.probs[rows], top_k=top_k, estimate=e, estimates=(e,), levels=levels, within_km=())
            err = haversine_km(ans["lat"], ans["lon"], f.true_lat[rows], f.true_lon[rows])
            ratios[e].append(err[:, None] / np.maximum(ans["radius_km"], 1e-9))
        weights.append(np.full(len(rows), 1.0 / len(rows)))
    w = np.concatenate(weights)
    out = {}
    for e, parts in ratios.items():
        r = np.concatenate(parts)
        out[e] = {str(int(round(100 * lv))): float(np.clip(_weighted_quantile(r[:, j], w, lv), 1e-3, 1e3))
                  for j, lv in enumerate(levels)}
    return out


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(cum, q * cum[-1]), len(x) - 1)])
