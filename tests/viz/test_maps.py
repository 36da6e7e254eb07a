"""Offline maps: true cell shapes cut at the antimeridian and poles, auto-zoom, figures returned."""
from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from geospot.geo.cells import build_cells, s2
from geospot.viz import cells_map, probability_map
from geospot.viz.canvas import auto_view
from geospot.viz.geometry import WORLD, View, cut_to_view, densify_arcs, geodesic_circle, ring_polygon
from geospot.viz.maps import cell_outlines, probability_view


def _poly_collections(fig):
    from matplotlib.collections import PolyCollection

    return [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]


@pytest.fixture(scope="module")
def pacific_hex():
    """A hexagonal grid centred on the antimeridian (Fiji-like): some cells straddle lon 180."""
    rng = np.random.default_rng(0)
    lat = rng.uniform(-19, -15, 400)
    lon = (rng.uniform(177, 183, 400) + 180) % 360 - 180
    return build_cells(lat, lon, scheme="grid", shape="hex", cell_km=60.0)


def _straddlers(cells) -> list[int]:
    b = cells.bounds()
    return [i for i in range(len(cells)) if b[i, 2] > b[i, 3]]


def test_antimeridian_cell_is_drawn_as_two_pieces_on_a_world_map(pacific_hex):
    crossing = _straddlers(pacific_hex)
    assert crossing, "the fixture must hold a cell across the antimeridian"
    outlines = cell_outlines(pacific_hex)
    for i in crossing:
        pieces = cut_to_view([outlines[i]], WORLD)[0]
        assert len(pieces) == 2
        xs = [np.asarray(p.exterior.coords)[:, 0] for p in pieces]
        assert any(np.isclose(x.max(), 180.0) for x in xs) and any(np.isclose(x.min(), -180.0) for x in xs)
        # Nothing lost, nothing doubled: the two pieces add up to the whole cell.
        assert sum(p.area for p in pieces) == pytest.approx(outlines[i].area, rel=1e-9)
        # No piece spans the world (the classic bug: a band from -180 to 180).
        assert all(x.max() - x.min() < 5 for x in xs)


def test_antimeridian_map_centres_on_it_and_draws_cells_whole(pacific_hex):
    probs = np.full(len(pacific_hex), 1.0 / len(pacific_hex))
    view = probability_view(pacific_hex, probs)
    assert view.x_min < 180 < view.x_max or view.x_min < -180 < view.x_max
    assert view.x_max - view.x_min < 30
    fig = probability_map(pacific_hex, probs)
    # centred on the antimeridian, every cell is drawn in one piece
    drawn = sum(len(c.get_paths()) for c in _poly_collections(fig)[1:])  # [0] is the land
    assert drawn == len(pacific_hex)
    world = probability_map(pacific_hex, probs, view=WORLD)
    drawn_world = sum(len(c.get_paths()) for c in _poly_collections(world)[1:])
    assert drawn_world == len(pacific_hex) + len(_straddlers(pacific_hex))


def test_s2_cell_across_the_antimeridian_and_pole_cells():
    # S2 cells below level 0 have edges on the 180 meridian (a face's centre line); face 3 straddles it.
    face3 = s2.cell_parent(s2.latlon_to_leaf_id(np.array([10.0]), np.array([179.999])), 0)
    lat, lon = s2.cell_vertices(face3)
    pieces = cut_to_view([ring_polygon(*densify_arcs(lat[0], lon[0]))], WORLD)[0]
    assert len(pieces) == 2
    edge = s2.cell_parent(s2.latlon_to_leaf_id(np.array([10.0]), np.array([179.999])), 4)
    lat, lon = s2.cell_vertices(edge)
    assert len(cut_to_view([ring_polygon(*densify_arcs(lat[0], lon[0]))], WORLD)[0]) == 1  # touching is not crossing
    # a level-1 cell of the north polar face has a corner on the pole: drawn as the sector up to lat 90
    polar = s2.cell_parent(s2.latlon_to_leaf_id(np.array([60.0]), np.array([120.0])), 1)
    lat, lon = s2.cell_vertices(polar)
    poly = ring_polygon(*densify_arcs(lat[0], lon[0]))
    assert poly.is_valid and poly.bounds[3] == pytest.approx(90.0)
    assert 89.0 < poly.bounds[2] - poly.bounds[0] < 91.0  # a quarter of the longitudes


def test_geodesic_circle_around_a_pole_and_across_the_antimeridian():
    cap = geodesic_circle(85.0, 0.0, 1000.0)
    assert cap.is_valid and cap.bounds[3] == pytest.approx(90.0)  # holds the pole
    assert cap.bounds[2] - cap.bounds[0] == pytest.approx(360.0, abs=1e-6)
    ring = geodesic_circle(0.0, 179.5, 200.0)
    assert len(cut_to_view([ring], WORLD)[0]) == 2
    # a radius in km is the same on the ground at any latitude: wider in degrees of longitude up north
    south = geodesic_circle(0.0, 0.0, 500.0).bounds
    north = geodesic_circle(60.0, 0.0, 500.0).bounds
    assert (north[2] - north[0]) == pytest.approx(2 * (south[2] - south[0]), rel=0.05)


def test_auto_view_zoom_extent():
    croatia = auto_view([42.4, 46.5], [13.5, 19.4])
    assert croatia.lat_min < 42.4 and croatia.lat_max > 46.5 and croatia.x_min < 13.5 and croatia.x_max > 19.4
    assert croatia.x_max - croatia.x_min < 20
    assert auto_view([-40, 60, 0], [-150, 150, 0]) == WORLD
    pacific = auto_view([-40, 60], [-150, 150])  # 60 degrees apart, across the antimeridian
    assert abs(pacific.lon0) == 180.0 and pacific.x_max - pacific.x_min < 220
    across = auto_view([-18, -16], [179.0, -179.0])
    assert across.x_max - across.x_min < 10 and abs(abs(across.lon0) - 180) < 1
    assert auto_view([np.nan], [np.nan]) == WORLD


def test_country_model_shows_the_country_and_world_model_zooms_to_the_probability():
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(43, 46, 300), rng.uniform(14, 19, 300)
    regional = build_cells(lat, lon, scheme="grid", cell_km=50.0)
    probs = np.zeros(len(regional))
    probs[0] = 1.0  # all probability in one cell: a regional model still shows all of itself
    v = probability_view(regional, probs)
    assert v.lat_min <= 43 and v.lat_max >= 46 and v.x_max - v.x_min < 25

    world_lat = np.r_[rng.uniform(-35, -20, 200), rng.uniform(35, 55, 200), rng.uniform(30, 45, 200)]
    world_lon = np.r_[rng.uniform(120, 150, 200), rng.uniform(0, 20, 200), rng.uniform(-120, -80, 200)]
    world = build_cells(world_lat, world_lon, scheme="grid", cell_km=500.0)
    probs = np.where(world.centroid_lat < -15, 1.0, 1e-6)
    probs /= probs.sum()
    v = probability_view(world, probs)
    assert not v.is_world() and v.lat_max < 0 and v.x_min > 90  # Australia, not the world
    flat = np.full(len(world), 1.0 / len(world))
    assert probability_view(world, flat).x_max - probability_view(world, flat).x_min > 150


def test_probability_map_returns_a_figure_with_estimate_truth_and_saves():
    rng = np.random.default_rng(2)
    cells = build_cells(rng.uniform(43, 46, 200), rng.uniform(14, 19, 200), scheme="grid", cell_km=50.0)
    probs = rng.dirichlet(np.ones(len(cells)))
    pred = {"lat": 45.0, "lon": 16.0, "radius_km": {"50": 60.0, "90": 150.0}, "city": "Sisak", "country": "Croatia"}
    fig = probability_map(cells, probs, pred, truth=(45.3, 16.2))
    assert isinstance(fig, Figure)
    texts = " ".join(t.get_text() for t in fig.texts)
    # a 60 km answer names the country (or region), never the town: the precision rule of `locate`
    assert "Croatia" in texts and "Sisak" not in texts and "50% within 60 km" in texts and "truth" in texts
    assert [h.get_label() for h in fig.axes[0].get_legend().legend_handles][0] == "estimate"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="probabilities for"):
        probability_map(cells, probs[:-1])


def test_cells_map_colours_by_count():
    rng = np.random.default_rng(3)
    cells = build_cells(rng.uniform(-60, 70, 2000), rng.uniform(-180, 180, 2000), scheme="s2", min_per_cell=5,
                        max_per_cell=200)
    fig = cells_map(cells)
    assert isinstance(fig, Figure)
    coll = _poly_collections(fig)[1]
    colours = coll.get_facecolor()
    assert len(colours) >= len(cells) and len({tuple(np.round(c, 3)) for c in colours}) > 1
    assert f"{len(cells)} adaptive S2 cells" in " ".join(t.get_text() for t in fig.texts)


def test_view_helper_is_world_flag():
    assert WORLD.is_world() and not View(0, -10, 10, -5, 5).is_world()


def test_vectorised_outlines_match_the_per_cell_construction(pacific_hex):
    from geospot.geo.cells import CellTable
    from geospot.viz.geometry import cell_outlines as outlines_of

    default = CellTable.load(__import__("geospot").__path__[0] + "/assets/default_model")  # has pole cells
    for table in (default, pacific_hex):
        for ring, poly in zip(table.polygons(), outlines_of(table)):
            lat, lon = np.asarray(ring, dtype=np.float64).T
            ref = ring_polygon(*densify_arcs(lat, lon)) if table.scheme == "s2" else ring_polygon(lat, lon)
            assert poly.is_valid and poly.area == pytest.approx(ref.area, rel=1e-3)
            assert np.allclose(poly.bounds, ref.bounds, atol=0.05)
