"""Country, region, district and city accuracy with OSV-5M's definitions.

OSV-5M labels every photo with the GeoNames administrative units of its true
coordinates (reverse geocoding to the nearest GeoNames place) and scores a
prediction as correct at a level when its unit equals the truth's. geospot
scores two kinds of prediction:

* ``point_admin_accuracy``: the point estimate, reverse-geocoded the same way
  (country, region = admin-1, district = admin-2, as OSV-5M's "sub-region",
  city = nearest GeoNames place);
* ``hierarchy_accuracy``: the argmax of the hierarchical country, region and
  district probabilities (``geospot.models.hierarchy``), which sums the cells' mass per
  country instead of trusting one point (a point between two likely
  countries can land in a third).

Fractions in ``[0, 1]``; rows whose truth has no GeoNames label (bad
coordinates) are excluded and counted in ``n_unknown``. District accuracy
counts only rows whose truth has a GeoNames admin-2 (``n_district``: ~60% of
GeoNames places have one).
"""
from __future__ import annotations

import numpy as np


def _labels(lat, lon):
    """Country, region, city and district labels (object arrays; ``""`` where unknown)."""
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
    city[ok] = [f"{c}/{r}/{t}/{i}" for c, r, t, i in zip(gaz.country_code[idx], gaz.region[idx], gaz.city[idx], idx)]
    district[ok] = [district_key(c, r, d) for c, r, d in zip(gaz.country_code[idx], gaz.region[idx], gaz.district[idx])]
    return cc, region, city, district


def _rate(pred: np.ndarray, true: np.ndarray) -> float:
    known = true != ""
    return float((pred[known] == true[known]).mean()) if known.any() else float("nan")


def point_admin_accuracy(pred_lat, pred_lon, true_lat, true_lon) -> dict:
    """``country_acc``, ``region_acc``, ``district_acc``, ``city_acc`` of point estimates (degrees), both
    sides reverse-geocoded."""
    p = _labels(pred_lat, pred_lon)
    t = _labels(true_lat, true_lon)
    return {"n": int(np.size(true_lat)), "n_unknown": int((t[0] == "").sum()), "n_district": int((t[3] != "").sum()),
            "country_acc": _rate(p[0], t[0]), "region_acc": _rate(p[1], t[1]), "district_acc": _rate(p[3], t[3]),
            "city_acc": _rate(p[2], t[2])}


def hierarchy_accuracy(pred_country, pred_region, true_lat, true_lon, pred_district=None, listed=None) -> dict:
    """``country_acc`` and ``region_acc`` of predicted ISO-2 codes and ``"CC/admin1"`` region keys
    (e.g. from ``geospot.models.hierarchy.hierarchy_argmax``) against the truth's GeoNames labels.

    With ``pred_district`` (``"CC/admin1/admin2"`` keys, ``""`` for none; e.g. from
    ``district_argmax``) also ``district_acc`` over the ``n_district`` truths that have a district; with
    ``listed`` ([N] bool: the answers that list districts, ``districts_listed``) also ``district_listed``
    (the fraction of those truths whose answer lists districts) and ``district_acc_listed`` (accuracy
    on them; NaN when none)."""
    pc = np.asarray(pred_country, dtype=object).reshape(-1)
    pr = np.asarray(pred_region, dtype=object).reshape(-1)
    if pc.size != np.size(true_lat) or pr.size != np.size(true_lat):
        raise ValueError(f"hierarchy_accuracy: {pc.size} countries, {pr.size} regions, {np.size(true_lat)} truths")
    t = _labels(true_lat, true_lon)
    out = {"n": int(pc.size), "n_unknown": int((t[0] == "").sum()),
           "country_acc": _rate(pc, t[0]), "region_acc": _rate(pr, t[1])}
    if pred_district is not None:
        pdist = np.asarray(pred_district, dtype=object).reshape(-1)
        if pdist.size != pc.size:
            raise ValueError(f"hierarchy_accuracy: {pdist.size} districts, {pc.size} truths")
        known = t[3] != ""
        out.update(n_district=int(known.sum()), district_acc=_rate(pdist, t[3]))
        if listed is not None:
            shown = np.asarray(listed, dtype=bool).reshape(-1)
            if shown.size != pc.size:
                raise ValueError(f"hierarchy_accuracy: {shown.size} listed flags, {pc.size} truths")
            out.update(district_listed=float(shown[known].mean()) if known.any() else float("nan"),
                       district_acc_listed=_rate(pdist[shown], t[3][shown]))
    return out
