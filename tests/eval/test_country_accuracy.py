"""Country accuracy in eval: outline countries, and OSV-5M's nearest-town label beside them."""
from __future__ import annotations

import numpy as np

from geospot.pipeline import Predictions, score_methods


def test_country_accuracy_by_outlines_and_by_geonames():
    # Truths in Croatia 5-20 km from the Bosnian border, whose nearest GeoNames town is Bosnian.
    true_lat = np.array([44.656, 45.179, 44.543, 45.198])
    true_lon = np.array([15.697, 15.702, 15.776, 16.385])
    zagreb = Predictions(np.full(4, 45.815), np.full(4, 15.982))
    results, _ = score_methods({"zagreb": zagreb}, true_lat, true_lon)
    assert results["zagreb"]["country_acc"] == 1.0  # Croatia, right
    assert results["zagreb"]["country_acc_geonames"] == 0.0  # OSV-5M's label calls the truths Bosnian
    results, _ = score_methods({"zagreb": zagreb}, true_lat, true_lon, countries=False)
    assert "country_acc" not in results["zagreb"] and "country_acc_geonames" not in results["zagreb"]
