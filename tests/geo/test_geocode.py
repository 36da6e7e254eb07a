"""Offline reverse geocoding of known places."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geospot.geo.geocode import Place, country_codes, reverse_geocode
from geospot.geo.regions import country_at


def test_known_cities():
    lat = [48.8566, 40.7128, -33.8688, 35.6762, -22.5609, 45.8150]
    lon = [2.3522, -74.0060, 151.2093, 139.6503, 17.0658, 15.9819]
    places = reverse_geocode(lat, lon)
    assert [p.country_code for p in places] == ["FR", "US", "AU", "JP", "NA", "HR"]
    assert places[0] == Place("FR", "France", "Ile-de-France", "Paris")
    assert places[1].region == "New York" and places[2].city == "Sydney"
    assert places[4].country == "Namibia"  # "NA" is a country code, not a missing value
    assert places[5].city == "Zagreb"
    assert places[0].to_dict() == {"country_code": "FR", "country": "France", "region": "Ile-de-France",
                                   "city": "Paris"}


def test_nearest_place_is_found_on_the_sphere():
    # Just east of the antimeridian in Fiji: the nearest towns are west of it,
    # which a lat/lon-degree k-d tree would miss.
    place = reverse_geocode(-16.5, -179.99)[0]
    assert place.country_code == "FJ"
    # Far north: Longyearbyen (Svalbard, SJ) is the nearest town to this point.
    assert reverse_geocode(78.3, 15.0)[0].country_code == "SJ"


def test_bad_coordinates_give_empty_places():
    places = reverse_geocode([np.nan, 91.0, 48.8566], [0.0, 0.0, 2.3522])
    assert places[0] == Place() == places[1]
    assert places[0].to_dict() == {"country_code": "", "country": "", "region": "", "city": ""}
    assert places[2].country_code == "FR"
    assert reverse_geocode([], []) == []


def test_country_codes():
    codes = country_codes(np.array([51.5074, np.nan, 52.52]), np.array([-0.1278, 0.0, 13.405]))
    assert codes.tolist() == ["GB", "", "DE"]
    assert country_codes(48.8566, 2.3522).tolist() == ["FR"]


@pytest.mark.realdata
def test_croatian_street_view_locations(shared_data):
    """Real Street View coordinates from Croatia geocode to Croatia (a few lie by the border or at sea)."""
    df = pd.read_csv(shared_data / "streetview-croatia" / "manifest.csv").drop_duplicates("location_id")
    codes = country_codes(df["lat"].to_numpy(), df["lon"].to_numpy())
    assert (codes == "HR").mean() > 0.9  # nearest town: border spots may get a Hungarian or Bosnian one
    assert (country_at(df["lat"].to_numpy(), df["lon"].to_numpy()) == "HR").mean() > 0.9
    places = reverse_geocode(df["lat"].to_numpy()[:20], df["lon"].to_numpy()[:20])
    assert all(p.city and p.region for p in places if p.country_code == "HR")
