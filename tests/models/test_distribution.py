"""The answer as a distribution on the sphere: support points, radii, probability within."""
import numpy as np
import pytest
from scipy.special import chndtr

from geospot.geo.cells import build_cells
from geospot.models.distribution import (
    MAX_DISTANCE_KM, Support, _ncx2_df2_cdf, _ncx2_df2_series, cell_density, mass_within, mixture_weights,
    radii_and_within, radius_km,
    support_from_cells, support_from_places,
)


def test_noncentral_chi2_cdf_matches_scipy():
    x = np.geomspace(1e-3, 1e4, 300)[:, None]
    lam = np.array([0.0, 0.3, 2.0, 15.9, 16.0, 40.0, 900.0])[None, :]
    assert np.abs(_ncx2_df2_cdf(x, lam) - chndtr(x, 2, lam)).max() < 2e-3


def test_the_near_table_stays_within_1e3_of_the_series_and_of_scipy():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 150, 20000), rng.uniform(0, 1, 5000), [0.0, 121.0, 200.0, 1e4]])
    lam = np.concatenate([rng.uniform(0, 15.999, 25000), [0.0, 15.99, 3.0, 0.0]])
    exact = chndtr(x, 2, lam)
    assert np.abs(_ncx2_df2_series(x, lam) - exact).max() < 1e-6
    assert np.abs(_ncx2_df2_cdf(x, lam) - exact).max() < 1e-3


def test_far_from_the_centre_the_table_stays_within_1e3_of_scipy():
    """v >= 4: the table over (u - v, 4 / v) of the integrated Rice density, its v -> infinity limit
    (the normal CDF) included, and 0 / 1 outside the band of 8 sigmas."""
    rng = np.random.default_rng(1)
    lam = np.concatenate([rng.uniform(16, 100, 20000), rng.uniform(100, 1e4, 20000), rng.uniform(1e4, 1e8, 20000)])
    v = np.sqrt(lam)
    u = np.maximum(v + rng.uniform(-12, 12, lam.size), 0.0)
    assert np.abs(_ncx2_df2_cdf(u ** 2, lam) - chndtr(u ** 2, 2, lam)).max() < 1e-3
    assert _ncx2_df2_cdf(np.array([(100.0 - 9) ** 2, (100.0 + 9) ** 2]), 100.0 ** 2).tolist() == pytest.approx([0, 1])


def test_radii_and_within_in_one_pass_equal_the_two_functions():
    sup = Support([45.0, 46.0, -30.0], [16.0, 17.5, 150.0], [0, 0, 1], [0.7, 0.3, 1.0], [20.0, 50.0, 300.0])
    w = mixture_weights(np.array([[0.8, 0.2], [0.1, 0.9]]), sup)
    lat, lon = np.array([45.2, -31.0]), np.array([16.3, 151.0])
    radii, within = radii_and_within(w, sup, 30.0, lat, lon, (0.5, 0.9), (25.0, 200.0, 750.0))
    assert np.array_equal(radii, radius_km(w, sup, 30.0, lat, lon, (0.5, 0.9)))
    assert np.allclose(within, mass_within(w, sup, 30.0, lat, lon, [25.0, 200.0, 750.0]), atol=1e-12)
    assert radii_and_within(w, sup, 30.0, lat, lon, (0.5,), ())[1].shape == (2, 0)


def _one_cell_support(sigma_km, lat=45.0, lon=16.0):
    return Support([lat], [lon], [0], [1.0], [sigma_km])


def test_radius_of_one_gaussian_is_rayleigh():
    # a 2-D Gaussian of width s around the estimate: P(d <= r) = 1 - exp(-r^2 / 2 s^2)
    sup = _one_cell_support(100.0)
    r = radius_km(np.ones((1, 1)), sup, 1e-3, [45.0], [16.0], levels=(0.5, 0.9))[0]
    want = 100.0 * np.sqrt(-2 * np.log(1 - np.array([0.5, 0.9])))
    assert np.allclose(r, want, rtol=0.03)


def test_radius_never_zero_for_a_big_cell_and_grows_with_the_kernel():
    sup = _one_cell_support(1000.0)
    r_small = radius_km(np.ones((1, 1)), sup, 1.0, [45.0], [16.0])[0]
    r_big = radius_km(np.ones((1, 1)), sup, 2000.0, [45.0], [16.0])[0]
    assert r_small[0] > 500 and r_small[1] > r_small[0]
    assert (r_big > r_small).all()


def test_radius_is_continuous_in_the_probabilities():
    sup = Support([0.0, 0.0], [0.0, 30.0], [0, 1], [1.0, 1.0], [50.0, 50.0])
    radii = [radius_km(np.array([[1 - p, p]]), sup, 10.0, [0.0], [0.0])[0, 0] for p in (0.49, 0.50, 0.51)]
    # crossing 50% of the mass moves the 50% radius smoothly, not from 0 to 3000 km
    assert radii[0] < radii[1] < radii[2]


def test_mass_within_at_the_antimeridian_and_poles():
    sup = Support([0.0, 89.9], [179.9, 0.0], [0, 1], [1.0, 1.0], [20.0, 20.0])
    w = mixture_weights(np.array([[1.0, 0.0], [0.0, 1.0]]), sup)
    got = mass_within(w, sup, 1.0, [0.0, 90.0], [-179.9, 120.0], [100.0])
    assert got[0, 0] > 0.99 and got[1, 0] > 0.99  # 22 km across 180°, 11 km to the pole


def test_unreachable_level_gives_half_the_earth():
    sup = _one_cell_support(1.0)
    r = radius_km(np.ones((1, 1)), sup, 1.0, [-45.0], [-164.0], levels=(0.9,))
    assert r[0, 0] <= MAX_DISTANCE_KM


def test_support_from_places_weights_sum_to_one_and_spread_is_real():
    rng = np.random.default_rng(0)
    lat = np.concatenate([45 + rng.normal(0, 0.5, 40), -33 + rng.normal(0, 0.2, 3)])
    lon = np.concatenate([16 + rng.normal(0, 0.5, 40), 151 + rng.normal(0, 0.2, 3)])
    cells = build_cells(lat, lon, scheme="s2", min_per_cell=1, max_per_cell=1000)
    sup = support_from_places(cells, lat, lon)
    sup.check_cells(len(cells))
    assert sup.sigma_km.min() >= 1.0
    assert len(sup) <= 8 * len(cells)
    # no support point stands for fewer than 4 places unless its whole cell has fewer
    per_cell = np.bincount(cells.assign(lat, lon, nearest=True), minlength=len(cells))[sup.cell]
    assert (sup.weight * per_cell >= np.minimum(4, per_cell) - 1e-9).all()


def test_support_from_cells_spreads_over_the_cell_area():
    lat, lon = np.array([0.0, 50.0]), np.array([0.0, 10.0])
    cells = build_cells(lat, lon, scheme="s2", min_per_cell=1, max_per_cell=10, max_level=3)
    sup = support_from_cells(cells)
    assert (sup.sigma_km > 100).all()


def test_cell_density_integrates_to_about_one():
    sup = _one_cell_support(50.0, 0.0, 0.0)
    g = np.linspace(-3, 3, 121)
    la, lo = np.meshgrid(g, g, indexing="ij")
    d = cell_density(la.ravel(), lo.ravel(), sup, 1.0, 1)[:, 0]
    area = (111.195 * 0.05) ** 2
    assert d.sum() * area == pytest.approx(1.0, rel=0.02)


def test_support_rejects_bad_values():
    with pytest.raises(ValueError):
        Support([95.0], [0.0], [0], [1.0], [1.0])
    with pytest.raises(ValueError):
        Support([0.0], [0.0], [0], [0.5], [1.0]).check_cells(1)
