"""The one-line place of `geospot locate`'s text output: never finer than the radius, and
never "unknown place" for an answer that is merely at sea."""
from __future__ import annotations

from geospot.predict import Prediction, format_prediction, place_phrase


def test_phrase_is_no_finer_than_the_radius():
    assert place_phrase(10, "Split", "Split-Dalmatia", "Croatia") == "near Split, Split-Dalmatia, Croatia"
    assert place_phrase(100, "Split", "Split-Dalmatia", "Croatia") == "in the region of Split-Dalmatia, Croatia"
    assert place_phrase(800, "Split", "Split-Dalmatia", "Croatia") == "most likely around Croatia"
    assert place_phrase(3000, "Split", "Split-Dalmatia", "Croatia") == "a guess, around Croatia"


def test_a_point_at_sea_names_the_nearest_country():
    assert place_phrase(3000) == "unknown place"
    assert place_phrase(3000, sea_off="Italy") == "a guess, at sea off Italy"
    assert place_phrase(100, sea_off="Italy") == "at sea off Italy"
    assert place_phrase(3000, country="Croatia", sea_off="Italy") == "a guess, around Croatia"


def _at(lat, lon, country=""):
    return Prediction(path="p.jpg", lat=lat, lon=lon, radius_km={"50": 3000.0, "90": 9000.0}, top_cells=[],
                      country=country)


def test_text_output_of_an_answer_in_the_adriatic():
    # A local mean of Italian and Croatian cells can land between the coasts: no country contains it.
    text = format_prediction(_at(43.0, 15.6))
    assert "unknown place" not in text
    assert "a guess, at sea off " in text
    assert any(name in text for name in ("Italy", "Croatia"))


def test_text_output_far_out_at_sea_still_names_the_nearest_country():
    text = format_prediction(_at(-60.0, -150.0))  # Southern Ocean, thousands of km from any place
    assert "a guess, at sea off " in text and "unknown place" not in text
