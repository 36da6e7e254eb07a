"""Which side of the road a country drives on (an auxiliary training target).

:data:`LEFT_HAND_TRAFFIC` lists the countries and territories (ISO 3166-1
alpha-2) that drive on the left. Source: Wikipedia, "Left- and right-hand
traffic", section "Countries and territories with left-hand traffic" (the
list as of 2024: Samoa switched to the left in 2009, no country has switched
since). It was typed from that list by hand, one code per entry, and checked
against the country names geospot knows with::

    python -m geospot.geo.driving        # prints every code with its name

Territories without roads of their own (Antarctic claims) are absent; every
code not listed drives on the right. Places without a country (open sea) have
no driving side.
"""
from __future__ import annotations

import numpy as np

LEFT_HAND_TRAFFIC = frozenset({
    # Europe
    "GB", "IE", "IM", "JE", "GG", "MT", "CY",
    # Africa
    "BW", "KE", "LS", "MW", "MU", "MZ", "NA", "SC", "ZA", "SZ", "TZ", "UG", "ZM", "ZW", "SH",
    # Asia
    "BD", "BT", "BN", "HK", "IN", "ID", "JP", "MO", "MY", "MV", "NP", "PK", "SG", "LK", "TH", "TL",
    # Oceania
    "AU", "CX", "CC", "CK", "FJ", "KI", "NR", "NZ", "NF", "NU", "PG", "PN", "WS", "SB", "TK", "TO", "TV",
    # Americas and the Caribbean
    "AI", "AG", "BS", "BB", "BM", "VG", "KY", "DM", "FK", "GD", "GY", "JM", "MS", "KN", "LC", "VC", "SR",
    "TT", "TC", "VI",
    # Indian Ocean
    "IO",
})

SIDES = ("left", "right")


def driving_side(country_codes) -> np.ndarray:
    """``"left"``/``"right"`` per ISO-2 code; ``""`` where the code is empty (no country)."""
    codes = np.asarray(country_codes).astype(str).reshape(-1)
    left = np.isin(codes, sorted(LEFT_HAND_TRAFFIC))
    return np.where(codes == "", "", np.where(left, "left", "right")).astype("<U5")


if __name__ == "__main__":  # the review listing named in the module docstring
    from geospot.geo.regions import list_countries

    names = {c["iso2"]: c["name"] for c in list_countries()}
    for code in sorted(LEFT_HAND_TRAFFIC):
        print(code, names.get(code, "(no 1:50m outline: labelled from GeoNames places)"))
