"""Hierarchical city answers for ``geospot eval``: the most probable OSV-5M city of each answer.

OSV-5M's city of a point is its nearest GeoNames place (see `geospot.eval.admin`).
A cell's probability flows to the cities of its training places in proportion
to its places, as country, region and district probabilities do in
`geospot.models.hierarchy`; the argmax city is scored against the truth's city.

The shares are computed at evaluation time from the training places (the
model's stored ones or ``--train``), not stored in model files: a city key
holds the GeoNames row (same-named towns exist in many regions), which is
only meaningful for the gazetteer this geospot ships, and a per-city table
would grow model files with every training place. Models without training
places have no city shares (a cell centroid says nothing about how a cell
splits among towns).

Cities "where the cells allow", as districts: a cell *resolves* a city when at
least :data:`~geospot.models.hierarchy.RESOLVE_SHARE` of its places share one
nearest GeoNames place, and an answer's city counts as *listed* when at least
:data:`~geospot.models.hierarchy.LISTED_MASS` of its probability lies in such
cells. Elsewhere the cells are coarser than towns and the argmax city mostly
repeats where the training photos were.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geospot.models.hierarchy import LISTED_MASS, RESOLVE_SHARE, _checked, _product, _shares


def city_keys(lat, lon) -> np.ndarray:
    """OSV-5M city of each point: ``"CC/admin1/name/row"`` of its nearest GeoNames place (object array;
    ``""`` for bad coordinates). The row keeps same-named towns of one region apart."""
    from geospot.geo.geocode import _nearest

    ok, idx, gaz = _nearest(lat, lon)
    out = np.full(np.size(lat), "", dtype=object)
    out[ok] = gazetteer_city_keys(gaz, idx)
    return out


def gazetteer_city_keys(gaz, idx) -> list[str]:
    """City keys of the gazetteer rows ``idx`` (the one definition `geospot.eval.admin` uses too)."""
    idx = np.asarray(idx, dtype=np.int64)
    return [f"{c}/{r}/{t}/{i}" for c, r, t, i in
            zip(gaz.codes(idx).tolist(), gaz.regions(idx), gaz.cities(idx), idx.tolist())]


@dataclass(eq=False)
class CityShares:
    """Share of each cell's training places in each city (sparse triplets; rows sum to 1 over placed cells)."""

    n_cells: int
    cities: list[str]  # city keys, see city_keys
    triplets: tuple  # (cell, city index, share)

    def resolving(self) -> np.ndarray:
        """[C] bool: cells with at least ``RESOLVE_SHARE`` of their places at one GeoNames place."""
        cell, _, share = self.triplets
        top = np.zeros(self.n_cells)
        if cell.size:
            np.maximum.at(top, cell, share)
        return top >= RESOLVE_SHARE


def city_shares(cells, lat, lon) -> CityShares:
    """City shares of each cell from its training places (degrees); cells without places get none."""
    lat = np.asarray(lat, np.float64).reshape(-1)
    lon = np.asarray(lon, np.float64).reshape(-1)
    idx = cells.assign(lat, lon, nearest=True) if lat.size else np.zeros(0, np.int64)
    keys = city_keys(lat, lon)
    keep = (idx >= 0) & (keys != "")
    cities, triplets = _shares(idx[keep], keys[keep], len(cells))
    return CityShares(len(cells), cities, triplets)


def city_argmax(probs, shares: CityShares, chunk: int = 64) -> np.ndarray:
    """Most probable city key per answer (object array; ``""`` where no city has probability).

    Chunked: the dense ``[chunk, n_cities]`` block is all that is held (cities number in the thousands)."""
    p = _checked(probs, shares)
    out = np.full(p.shape[0], "", dtype=object)
    if not shares.cities:
        return out
    names = np.asarray(shares.cities, dtype=object)
    for a in range(0, p.shape[0], chunk):
        block = _product(p[a:a + chunk], shares.triplets, len(shares.cities))
        best = np.argmax(block, axis=1)
        hit = block[np.arange(len(best)), best] > 0
        out[a:a + chunk][hit] = names[best[hit]]
    return out


def cities_listed(probs, shares: CityShares) -> np.ndarray:
    """[B] bool: answers with at least ``LISTED_MASS`` of their probability in cells that resolve a city."""
    p = _checked(probs, shares)
    total = p.sum(axis=1)
    return (p @ shares.resolving().astype(np.float64)) >= LISTED_MASS * np.where(total > 0, total, np.inf)
