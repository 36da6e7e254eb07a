"""Where a model thinks a photo was taken, as a distribution on the sphere.

A geocell head gives probabilities over cells; a cell is not a point. Each
cell's probability is spread over *support points* (clusters of the cell's
training places, or the cell's centroid and area when the places are not
known), each with a spread ``sigma_km``. Add a calibrated kernel width
``kernel_km`` in quadrature and the model's answer becomes a mixture of 2-D
Gaussians on the sphere. From that mixture come:

- the likelihood of a true location (what calibration maximises),
- confidence radii that are continuous in the probabilities (never 0 km for a
  1,000 km cell),
- the probability within 25/200/750 km of an estimate,
- the expected GeoScore and expected distance of any candidate answer, which the
  decision-theoretic estimates maximise / minimise.

All arrays are NumPy, degrees in, km out. No file I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geospot.geo.distance import haversine_km, pairwise_haversine_km

#: Half the Earth's circumference: no two points are further apart.
MAX_DISTANCE_KM = 20015.1
#: Spread of a support point that stands for a single place (GPS jitter + panorama offset).
MIN_SIGMA_KM = 1.0
#: Support points per cell at most, and places per support point at least (a
#: published model then reveals means of several places, not single places).
MAX_POINTS_PER_CELL = 8
MIN_PLACES_PER_POINT = 4
_RADIUS_GRID = np.geomspace(0.05, MAX_DISTANCE_KM, 48)
_PRUNE_MASS = 0.999
_PRUNE_MAX = 96


@dataclass
class Support:
    """Points carrying each cell's probability: cell ``cell[s]`` gives ``weight[s]``
    of its mass to a Gaussian of width ``sigma_km[s]`` around ``(lat[s], lon[s])``.
    Weights sum to 1 within each cell."""

    lat: np.ndarray
    lon: np.ndarray
    cell: np.ndarray
    weight: np.ndarray
    sigma_km: np.ndarray

    def __post_init__(self) -> None:
        self.lat = np.asarray(self.lat, np.float64).reshape(-1)
        self.lon = np.asarray(self.lon, np.float64).reshape(-1)
        self.cell = np.asarray(self.cell, np.int64).reshape(-1)
        self.weight = np.asarray(self.weight, np.float64).reshape(-1)
        self.sigma_km = np.asarray(self.sigma_km, np.float64).reshape(-1)
        n = self.lat.size
        if any(a.size != n for a in (self.lon, self.cell, self.weight, self.sigma_km)):
            raise ValueError("Support: lat, lon, cell, weight and sigma_km must have the same length")
        ok = (np.isfinite(self.lat) & np.isfinite(self.lon) & (np.abs(self.lat) <= 90) & (np.abs(self.lon) <= 180)
              & np.isfinite(self.weight) & (self.weight >= 0) & np.isfinite(self.sigma_km) & (self.sigma_km > 0))
        if not ok.all():
            raise ValueError(f"Support: point {int(np.flatnonzero(~ok)[0])} has an invalid coordinate, weight or sigma")

    def __len__(self) -> int:
        return self.lat.size

    @property
    def num_cells(self) -> int:
        return int(self.cell.max()) + 1 if self.cell.size else 0

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"lat": self.lat, "lon": self.lon, "cell": self.cell, "weight": self.weight, "sigma_km": self.sigma_km}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Support":
        return cls(*(arrays[k] for k in ("lat", "lon", "cell", "weight", "sigma_km")))

    def check_cells(self, n_cells: int) -> None:
        """Every cell of a model with ``n_cells`` cells must own support with total weight 1."""
        if self.cell.size and (self.cell.min() < 0 or self.cell.max() >= n_cells):
            raise ValueError(f"Support: cell indices outside [0, {n_cells})")
        total = np.bincount(self.cell, weights=self.weight, minlength=n_cells)
        bad = np.flatnonzero(np.abs(total - 1.0) > 1e-6)
        if bad.size:
            raise ValueError(f"Support: cell {int(bad[0])} has support weight {total[bad[0]]:.4f}, not 1 "
                             f"({bad.size} cell(s))")


def support_from_places(cells, lat, lon, max_points: int = MAX_POINTS_PER_CELL,
                        min_places: int = MIN_PLACES_PER_POINT, seed: int = 0) -> Support:
    """Cluster each cell's training places (one coordinate per place) into up to
    ``max_points`` support points of at least ``min_places`` places (k-means on
    unit vectors); a cell with no place keeps its centroid and its area."""
    from geospot.geo.distance import latlon_to_xyz, xyz_to_latlon

    lat = np.asarray(lat, np.float64)
    lon = np.asarray(lon, np.float64)
    label = np.asarray(cells.assign(lat, lon, nearest=True), np.int64)
    xyz = latlon_to_xyz(lat, lon)
    area_sigma = _area_sigma_km(cells)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("lat", "lon", "cell", "weight", "sigma_km")}
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(len(cells) + 1))
    for c in range(len(cells)):
        members = order[starts[c]:starts[c + 1]]
        if members.size == 0:
            pts = [(cells.centroid_lat[c], cells.centroid_lon[c], 1.0, area_sigma[c])]
        else:
            k = int(max(1, min(max_points, members.size // max(1, min_places))))
            assign = _merge_small(xyz[members], _kmeans_unit(xyz[members], k, rng), min_places)
            pts = []
            for j in np.unique(assign):
                sel = members[assign == j]
                m = xyz[sel].sum(0)
                m_lat, m_lon = xyz_to_latlon(m / np.linalg.norm(m))
                d = haversine_km(lat[sel], lon[sel], float(m_lat), float(m_lon))
                # per-axis sigma of a 2-D Gaussian: E[d^2] = 2 sigma^2
                sigma = max(MIN_SIGMA_KM, float(np.sqrt(np.mean(d ** 2) / 2.0)))
                pts.append((float(m_lat), float(m_lon), sel.size / members.size, sigma))
        for p_lat, p_lon, w, s in pts:
            out["lat"].append(p_lat)
            out["lon"].append(p_lon)
            out["cell"].append(c)
            out["weight"].append(w)
            out["sigma_km"].append(s)
    return Support(*(np.asarray(out[k]) for k in ("lat", "lon", "cell", "weight", "sigma_km")))


def support_from_cells(cells) -> Support:
    """One support point per cell at its centroid, spread over the cell's area
    (for models that carry no information on where the places lie)."""
    n = len(cells)
    return Support(cells.centroid_lat, cells.centroid_lon, np.arange(n), np.ones(n), _area_sigma_km(cells))


def _area_sigma_km(cells) -> np.ndarray:
    """sigma of a Gaussian with the second moment of a disk of the cell's area: A / (4 pi)."""
    from geospot.geo.distance import EARTH_RADIUS_KM

    b = np.asarray(cells.bounds(), np.float64)
    lat0, lat1, lon0, lon1 = np.radians(b[:, 0]), np.radians(b[:, 1]), b[:, 2], b[:, 3]
    dlon = np.radians(np.where(lon1 >= lon0, lon1 - lon0, lon1 + 360.0 - lon0))
    area = EARTH_RADIUS_KM ** 2 * dlon * np.abs(np.sin(lat1) - np.sin(lat0))
    return np.maximum(MIN_SIGMA_KM, np.sqrt(area / (4 * np.pi)))


def _merge_small(xyz: np.ndarray, assign: np.ndarray, min_size: int) -> np.ndarray:
    """Fold clusters under ``min_size`` members into the nearest other cluster, smallest first."""
    assign = assign.copy()
    while True:
        labels, counts = np.unique(assign, return_counts=True)
        if len(labels) <= 1 or counts.min() >= min_size:
            return assign
        small = labels[np.argmin(counts)]
        centres = np.array([xyz[assign == j].mean(0) for j in labels])
        own = int(np.flatnonzero(labels == small)[0])
        sims = centres @ centres[own]
        sims[own] = -np.inf
        assign[assign == small] = labels[int(np.argmax(sims))]


def _kmeans_unit(xyz: np.ndarray, k: int, rng, iters: int = 20) -> np.ndarray:
    """Spherical k-means (k-means++ seeding), deterministic for a given generator."""
    n = xyz.shape[0]
    if k <= 1 or n <= k:
        return np.zeros(n, np.int64) if k <= 1 else np.arange(n)
    centers = [xyz[rng.integers(n)]]
    for _ in range(1, k):
        d = np.min(2 - 2 * xyz @ np.asarray(centers).T, axis=1).clip(0)
        centers.append(xyz[rng.choice(n, p=d / d.sum())] if d.sum() > 0 else xyz[rng.integers(n)])
    c = np.asarray(centers)
    assign = np.zeros(n, np.int64)
    for _ in range(iters):
        new = np.argmax(xyz @ c.T, axis=1)
        if _ and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            m = xyz[assign == j].sum(0)
            if np.linalg.norm(m) > 0:
                c[j] = m / np.linalg.norm(m)
    return assign


# --------------------------------------------------------------------------- the mixture


def effective_sigma(support: Support, kernel_km: float) -> np.ndarray:
    return np.sqrt(support.sigma_km ** 2 + float(kernel_km) ** 2)


def mixture_weights(probs: np.ndarray, support: Support) -> np.ndarray:
    """``[B, S]``: the probability each support point carries for each row."""
    return np.asarray(probs, np.float64)[:, support.cell] * support.weight[None, :]


def cell_density(true_lat, true_lon, support: Support, kernel_km: float, n_cells: int) -> np.ndarray:
    """``[B, C]``: density (per km^2) of each cell's part of the mixture at the true points,
    per unit of the cell's probability. The likelihood of row b is ``probs[b] @ out[b]``."""
    sigma = effective_sigma(support, kernel_km)
    d = pairwise_haversine_km(np.asarray(true_lat, float), np.asarray(true_lon, float), support.lat, support.lon)
    k = np.exp(-0.5 * (d / sigma) ** 2) / (2 * np.pi * sigma ** 2) * support.weight
    out = np.zeros((k.shape[0], n_cells))
    np.add.at(out.T, support.cell, k.T)
    return out


def _ncx2_df2_series(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """CDF at ``x`` of a non-central chi-square with 2 degrees of freedom and
    non-centrality ``lam < 16`` by its Poisson series (error < 1e-6)."""
    xs, ls = np.maximum(x, 0) / 2, lam / 2
    # sum_j Pois(j; lam/2) * P(chi2_{2+2j} <= x), with P = 1 - e^{-x/2} sum_{i<=j} (x/2)^i / i!
    pois = np.exp(-ls)
    term = np.exp(-xs)
    inner = term.copy()
    acc = pois * (1 - inner)
    for j in range(1, 80):
        if j > 8 and pois.max() < 1e-9:  # the Poisson weights left are negligible
            break
        pois = pois * ls / j
        term = term * xs / j
        inner = inner + term
        acc = acc + pois * (1 - np.minimum(inner, 1.0))
    return acc


# The CDF is read from two tables by bilinear interpolation, in one pass over all elements (no
# branch-wise copies: a Python loop of ~40 array operations per call once cost 1-2 ms of every
# answer). Near the centre (v = sqrt(lam) < 4) the table is of the Poisson series over u = sqrt(x)
# and v; beyond u = 11 the CDF is 1 to 1e-11. Far from it (v >= 4) the radius past the centre's
# offset, g = u - v in [-8, 8], and w = 4 / v in [0, 1] index a table of the exact CDF (numerical
# integration of the Rice density; w = 0 is its limit, the standard normal CDF of g); outside that
# band the CDF is 0 or 1 to 1e-14. Error < 1e-3 everywhere (tests/models/test_distribution.py).
_TABLE_STEP, _TABLE_U, _TABLE_V = 0.05, 11.0, 4.0
_FAR_G, _FAR_G_STEP, _FAR_W_STEP = 8.0, 0.05, 0.02
_tables: list[tuple] = []


def _rice_far(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``[G, W]`` exact CDF at radius ``v + g`` of the distance from the origin of a unit 2-D Gaussian
    centred ``v = 4 / w`` away (w > 0), by the trapezoid rule on the Rice density."""
    out = np.empty((g.size, w.size))
    for j, wj in enumerate(w):
        v = 4.0 / wj
        r = np.arange(max(0.0, v - 10.0), v + g[-1] + 1e-9, 0.001)
        x = r * v
        i0e = np.empty_like(x)  # exp(-x) I0(x), without overflow
        small = x < 50.0
        i0e[small] = np.i0(x[small]) * np.exp(-x[small])
        z = 1.0 / (8.0 * x[~small])
        i0e[~small] = (1 + z * (1 + z * (9 / 2 + z * 75 / 2))) / np.sqrt(2 * np.pi * x[~small])
        pdf = r * np.exp(-0.5 * (r - v) ** 2) * i0e
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(r))])
        out[:, j] = np.interp(v + g, r, cdf)
    return np.clip(out, 0.0, 1.0)


def _cdf_tables() -> tuple:
    """(the two tables flattened into one array, near shape, far shape), built once and cached on disk."""
    if not _tables:
        from geospot.geo.arraycache import cached_arrays
        from geospot.models.special import ndtr

        def build() -> dict[str, np.ndarray]:
            u = np.arange(0.0, _TABLE_U + _TABLE_STEP / 2, _TABLE_STEP)
            v = np.arange(0.0, _TABLE_V + _TABLE_STEP / 2, _TABLE_STEP)
            g = np.arange(-_FAR_G, _FAR_G + _FAR_G_STEP / 2, _FAR_G_STEP)
            w = np.arange(0.0, 1.0 + _FAR_W_STEP / 2, _FAR_W_STEP)
            far = np.empty((g.size, w.size))
            far[:, 0] = ndtr(g)
            far[:, 1:] = _rice_far(g, w[1:])
            return {"near": _ncx2_df2_series(u[:, None] ** 2, v[None, :] ** 2), "far": far}

        source = (f"ncx2 df2 v2 near step {_TABLE_STEP} u {_TABLE_U} v {_TABLE_V}; "
                  f"far g {_FAR_G} step {_FAR_G_STEP} w step {_FAR_W_STEP}")
        t = cached_arrays("ncx2-df2", source, build)
        _tables.append((np.concatenate([t["near"].ravel(), t["far"].ravel()]), t["near"].shape, t["far"].shape))
    return _tables[0]


def _rice_cdf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """P(distance <= ``u``) for the distance from the origin of a unit 2-D Gaussian centred ``v`` away
    (both in sigmas, broadcast): the CDF of a non-central chi-square with 2 degrees of freedom at
    ``u**2`` with non-centrality ``v**2``. Over 20x faster than scipy's ``chndtr``."""
    flat, (nu, nv), (ng, nw) = _cdf_tables()
    u, v = np.broadcast_arrays(np.maximum(np.asarray(u, np.float64), 0.0), np.asarray(v, np.float64))
    near = v < _TABLE_V
    # fractional row and column of each element in its table
    a = np.where(near, np.minimum(u / _TABLE_STEP, nu - 1.000001),
                 np.clip((u - v + _FAR_G) / _FAR_G_STEP, 0.0, ng - 1.000001))
    b = np.where(near, np.minimum(v / _TABLE_STEP, nv - 1.000001),
                 np.minimum(_TABLE_V / np.maximum(v, _TABLE_V) / _FAR_W_STEP, nw - 1.000001))
    i, j = a.astype(np.intp), b.astype(np.intp)
    ta, tb = a - i, b - j
    cols = np.where(near, nv, nw)
    k = np.where(near, 0, nu * nv) + i * cols + j
    lo = flat[k] * (1 - ta) + flat[k + cols] * ta
    hi = flat[k + 1] * (1 - ta) + flat[k + cols + 1] * ta
    return lo * (1 - tb) + hi * tb


def _ncx2_df2_cdf(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """CDF at ``x`` of a non-central chi-square with 2 degrees of freedom and non-centrality
    ``lam`` (the squared distance, in sigmas, from a 2-D Gaussian's centre); see `_rice_cdf`."""
    return _rice_cdf(np.sqrt(np.maximum(np.asarray(x, np.float64), 0.0)), np.sqrt(np.asarray(lam, np.float64)))


def _pruned(weights: np.ndarray):
    """Per row, the support points holding ``_PRUNE_MASS`` of the mass (at most ``_PRUNE_MAX``)."""
    m = min(weights.shape[1], _PRUNE_MAX)
    idx = np.argsort(-weights, axis=1, kind="stable")[:, :m]
    w = np.take_along_axis(weights, idx, axis=1)
    keep = (np.cumsum(w, axis=1) - w) < _PRUNE_MASS * weights.sum(1, keepdims=True)
    return idx, np.where(keep, w, 0.0)


def mass_within(weights: np.ndarray, support: Support, kernel_km: float, lat, lon, radii_km) -> np.ndarray:
    """``[B, R]``: probability that the photo lies within each radius of ``(lat[b], lon[b])``."""
    weights = np.asarray(weights, np.float64)
    radii = np.asarray(radii_km, np.float64).reshape(-1)
    sigma_all = effective_sigma(support, kernel_km)
    out = np.empty((weights.shape[0], radii.size))
    total = weights.sum(1)
    for start in range(0, weights.shape[0], 256):
        sl = slice(start, start + 256)
        idx, w = _pruned(weights[sl])
        d = haversine_km(np.asarray(lat, float)[sl, None], np.asarray(lon, float)[sl, None],
                         support.lat[idx], support.lon[idx])
        s = sigma_all[idx]
        cdf = _rice_cdf(radii[None, None, :] / s[..., None], (d / s)[..., None])
        out[sl] = np.einsum("bs,bsr->br", w, cdf)
    return np.clip(out / np.maximum(total, 1e-300)[:, None], 0.0, 1.0)


def radius_km(weights: np.ndarray, support: Support, kernel_km: float, lat, lon,
              levels=(0.5, 0.9)) -> np.ndarray:
    """``[B, L]``: smallest radius around each estimate holding each probability level."""
    return radii_and_within(weights, support, kernel_km, lat, lon, levels, ())[0]


def radii_and_within(weights: np.ndarray, support: Support, kernel_km: float, lat, lon,
                     levels=(0.5, 0.9), within_km=()) -> tuple[np.ndarray, np.ndarray]:
    """``radius_km`` [B, L] and ``mass_within`` [B, R] of ``within_km`` from one pass over
    the support (an answer needs both)."""
    lv = np.asarray(levels, np.float64).reshape(-1)
    if lv.size == 0 or not np.all((lv > 0) & (lv < 1)):
        raise ValueError(f"levels must be in (0, 1), got {list(levels)}")
    grid = _RADIUS_GRID
    within_km = np.asarray(within_km, np.float64).reshape(-1)
    both = mass_within(weights, support, kernel_km, lat, lon, np.concatenate([grid, within_km]))
    cdf = np.maximum.accumulate(both[:, :grid.size], axis=1)
    out = np.empty((cdf.shape[0], lv.size))
    log_grid = np.log(grid)
    rows = np.arange(cdf.shape[0])
    for j, level in enumerate(lv):
        hi = np.argmax(cdf >= level, axis=1)
        never = ~(cdf >= level).any(axis=1)
        lo = np.maximum(hi - 1, 0)
        c0, c1 = cdf[rows, lo], cdf[rows, hi]
        t = np.where(c1 > c0, (level - c0) / np.where(c1 > c0, c1 - c0, 1.0), 1.0)
        r = np.exp(log_grid[lo] + np.clip(t, 0, 1) * (log_grid[hi] - log_grid[lo]))
        out[:, j] = np.where(never, MAX_DISTANCE_KM, np.where(hi == 0, grid[0], r))
    return out, both[:, grid.size:]


def effective_distance_km(support: Support, kernel_km: float, cand_lat, cand_lon) -> np.ndarray:
    """``[S, K]``: a smooth stand-in for the expected distance from candidate k to a
    point drawn around support point s: ``sqrt(D^2 + (pi/2) sigma^2)`` (exact at D = 0,
    -> D far away)."""
    sigma = effective_sigma(support, kernel_km)
    d = pairwise_haversine_km(support.lat, support.lon, np.asarray(cand_lat, float), np.asarray(cand_lon, float))
    return np.sqrt(d ** 2 + (np.pi / 2) * sigma[:, None] ** 2)


def cell_expectations(support: Support, kernel_km: float, cand_lat, cand_lon, n_cells: int,
                      fn) -> np.ndarray:
    """``[C, K]``: expectation of ``fn(distance)`` under each cell's part of the mixture,
    for every candidate; ``probs @ out`` is then the expectation under the whole answer."""
    per_point = fn(effective_distance_km(support, kernel_km, cand_lat, cand_lon)) * support.weight[:, None]
    out = np.zeros((n_cells, per_point.shape[1]))
    np.add.at(out, support.cell, per_point)
    return out


def cell_prior(cells) -> np.ndarray:
    """The training distribution over cells (places per cell)."""
    count = np.asarray(cells.count, np.float64)
    return count / count.sum() if count.sum() > 0 else np.full(count.size, 1.0 / max(count.size, 1))
