"""Country, region, district and city accuracy with OSV-5M's definitions.

OSV-5M labels every photo with the GeoNames administrative units of its true
coordinates (reverse geocoding to the nearest GeoNames place) and scores a
prediction as correct at a level when its unit equals the truth's. geospot
scores two kinds of prediction:

* ``point_admin_accuracy``: the point estimate, reverse-geocoded the same way
  (country, region = admin-1, district = admin-2, as OSV-5M's "sub-region",
  city = nearest GeoNames place);
* ``hierarchy_accuracy``: the argmax of the hierarchical country, region,
  district (``geospot.models.hierarchy``) and city (``geospot.eval.cities``)
  probabilities, which sum the cells' mass per unit instead of trusting one
  point (a point between two likely countries can land in a third).

Fractions in ``[0, 1]``, each with a 95% bootstrap interval over the scored
rows (``<level>_acc_ci``; whole groups resampled when ``groups`` is given, see
`geospot.eval.bootstrap`); rows whose truth has no GeoNames label (bad
coordinates) are excluded and counted in ``n_unknown``. District accuracy
counts only rows whose truth has a GeoNames admin-2 (``n_district``: ~60% of
GeoNames places have one).
"""
from __future__ import annotations

import numpy as np


def _labels(lat, lon):
    """Country, region, city and district labels (object arrays; ``""`` where unknown)."""
    from geospot.eval.cities import gazetteer_city_keys
    from geospot.geo.geocode import _nearest
    from geospot.models.hierarchy import district_key

    n = np.size(lat)
    ok, idx, gaz = _nearest(lat, lon)
    cc = np.full(n, "", dtype=object)
    region = np.full(n, "", dtype=object)
    city = np.full(n, "", dtype=object)
    district = np.full(n, "", dtype=object)
    cc[ok] = gaz.country_code[idx]
    region[ok] = [f"{c}/{r}" for c, r in zip(gaz.country_code[idx], gaz.region[idx])]
    # Same-named towns exist in many regions: the city label is the place itself (its row).
    city[ok] = gazetteer_city_keys(gaz, idx)
    district[ok] = [district_key(c, r, d) for c, r, d in zip(gaz.country_code[idx], gaz.region[idx], gaz.district[idx])]
    return cc, region, city, district


def _rate(pred: np.ndarray, true: np.ndarray) -> float:
    known = true != ""
    return float((pred[known] == true[known]).mean()) if known.any() else float("nan")


def _scored(out: dict, name: str, pred, true: np.ndarray, groups=None, seed: int = 0) -> None:
    """``out[name]`` = accuracy of ``pred`` over the rows whose truth is known, ``out[name + "_ci"]`` its 95%
    bootstrap interval (whole ``groups`` resampled when given; NaNs when no row is known)."""
    from geospot.eval.bootstrap import mean_ci

    pred = np.asarray(pred, dtype=object).reshape(-1)
    known = true != ""
    hit = (pred[known] == true[known]).astype(np.float64)
    g = None if groups is None else np.asarray(groups).reshape(-1)[known]
    ci = mean_ci(hit, g, seed=seed)
    out[name] = ci["mean"]
    out[name + "_ci"] = ci["ci"]


def point_admin_accuracy(pred_lat, pred_lon, true_lat, true_lon, groups=None, seed: int = 0) -> dict:
    """``country_acc``, ``region_acc``, ``district_acc``, ``city_acc`` of point estimates (degrees), both
    sides reverse-geocoded, each with its ``_ci``."""
    p = _labels(pred_lat, pred_lon)
    t = _labels(true_lat, true_lon)
    out = {"n": int(np.size(true_lat)), "n_unknown": int((t[0] == "").sum()), "n_district": int((t[3] != "").sum())}
    for name, k in (("country_acc", 0), ("region_acc", 1), ("district_acc", 3), ("city_acc", 2)):
        _scored(out, name, p[k], t[k], groups, seed)
    return out


def hierarchy_accuracy(pred_country, pred_region, true_lat, true_lon, pred_district=None, listed=None,
                       pred_city=None, city_listed=None, groups=None, seed: int = 0) -> dict:
    """``country_acc`` and ``region_acc`` of predicted ISO-2 codes and ``"CC/admin1"`` region keys
    (e.g. from ``geospot.models.hierarchy.hierarchy_argmax``) against the truth's GeoNames labels.

    With ``pred_district`` (``"CC/admin1/admin2"`` keys, ``""`` for none; e.g. from
    ``district_argmax``) also ``district_acc`` over the ``n_district`` truths that have a district; with
    ``listed`` ([N] bool: the answers that list districts, ``districts_listed``) also ``district_listed``
    (the fraction of those truths whose answer lists districts) and ``district_acc_listed`` (accuracy
    on them; NaN when none). With ``pred_city`` (city keys, ``geospot.eval.cities.city_argmax``) likewise
    ``city_acc`` and, with ``city_listed``, ``city_listed`` and ``city_acc_listed``. Every accuracy over
    all its rows has a ``_ci`` (``groups``: see the module doc)."""
    pc = np.asarray(pred_country, dtype=object).reshape(-1)
    pr = np.asarray(pred_region, dtype=object).reshape(-1)
    if pc.size != np.size(true_lat) or pr.size != np.size(true_lat):
        raise ValueError(f"hierarchy_accuracy: {pc.size} countries, {pr.size} regions, {np.size(true_lat)} truths")
    t = _labels(true_lat, true_lon)
    out = {"n": int(pc.size), "n_unknown": int((t[0] == "").sum())}
    _scored(out, "country_acc", pc, t[0], groups, seed)
    _scored(out, "region_acc", pr, t[1], groups, seed)
    levels = (("district", pred_district, listed, t[3]), ("city", pred_city, city_listed, t[2]))
    for level, pred, flags, truth in levels:
        if pred is None:
            continue
        pred = np.asarray(pred, dtype=object).reshape(-1)
        if pred.size != pc.size:
            raise ValueError(f"hierarchy_accuracy: {pred.size} {level} answers, {pc.size} truths")
        known = truth != ""
        if level == "district":
            out["n_district"] = int(known.sum())
        _scored(out, f"{level}_acc", pred, truth, groups, seed)
        if flags is not None:
            shown = np.asarray(flags, dtype=bool).reshape(-1)
            if shown.size != pc.size:
                raise ValueError(f"hierarchy_accuracy: {shown.size} {level} listed flags, {pc.size} truths")
            out[f"{level}_listed"] = float(shown[known].mean()) if known.any() else float("nan")
            out[f"{level}_acc_listed"] = _rate(pred[shown], truth[shown])
    return out
