"""Cell geometry at the antimeridian and the poles, for every scheme (polygons and sampling)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from geospot.geo.cells import build_cells
from geospot.geo.cells.shapes import cell_geometries, ring_to_geometry

WORLD_AREA = 360.0 * 180.0  # lon/lat degrees^2


class _S2Ids:
    scheme = "s2"

    def __init__(self, ids):
        self.params = {"cell_id": np.array([np.uint64(i) for i in ids])}


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_s2_cells_tile_the_whole_globe_exactly(level):
    """Antimeridian cells (lon 180 written as -180) and the polar faces included: areas add up to the globe."""
    ids = [(f << 61) + (1 << (60 - 2 * level)) * (2 * k + 1) for f in range(6) for k in range(4 ** level)]
    shapes = cell_geometries(_S2Ids(ids))
    assert all(s.is_valid and not s.is_empty for s in shapes)
    assert sum(s.area for s in shapes) == pytest.approx(WORLD_AREA, rel=1e-9)
    assert max(s.bounds[2] - s.bounds[0] for s in shapes if s.geom_type == "Polygon") <= 360.0


def test_ring_touching_180_is_not_a_band_round_the_globe():
    # corners of S2 cell 6d7 east of Auckland: 174.9 .. 180, with 180 written as -180
    shape = ring_to_geometry([-40.0, -34.4, -34.4, -40.0], [174.9, 174.9, -180.0, -180.0])
    assert shape.bounds[0] == pytest.approx(174.9) and shape.bounds[2] == pytest.approx(180.0)


def test_ring_crossing_180_is_split_in_two():
    shape = ring_to_geometry([10.0, 10.0, 20.0, 20.0], [170.0, -170.0, -170.0, 170.0])
    assert shape.geom_type == "MultiPolygon"
    assert shape.area == pytest.approx(20.0 * 10.0)
    assert shape.contains(__import__("shapely").Point(179.5, 15.0))
    assert shape.contains(__import__("shapely").Point(-179.5, 15.0))


@pytest.mark.parametrize("pole", [90.0, -90.0])
def test_ring_around_a_pole_is_closed_over_it(pole):
    lat = np.full(8, np.sign(pole) * 80.0)
    lon = np.linspace(-180, 180, 8, endpoint=False)
    shape = ring_to_geometry(lat, lon, pole_hint=pole)
    assert shape.bounds[0] == pytest.approx(-180.0) and shape.bounds[2] == pytest.approx(180.0)
    assert shape.contains(__import__("shapely").Point(0.0, np.sign(pole) * 85.0))


@pytest.mark.parametrize("shape_name", ["square", "hex"])
def test_grid_cells_at_the_antimeridian_and_poles(shape_name):
    import shapely

    lat = np.array([-16.5, -16.4, 89.5, -89.5, 0.0, 0.1])
    lon = np.array([179.95, -179.95, 10.0, -120.0, 180.0, -180.0])
    cells = build_cells(lat, lon, scheme="grid", shape=shape_name, cell_km=100.0,
                        region=(-90.0, -180.0, 90.0, 180.0))
    shapes = cell_geometries(cells)
    assert all(s.is_valid and not s.is_empty for s in shapes)
    assert max(s.area for s in shapes) < 0.05 * WORLD_AREA  # no cell turned into a globe-wide band
    idx = cells.assign(lat, lon)
    for k, (a, b) in zip(idx, zip(lat, lon)):
        # every point lies in (or on the edge of) the shape of its own cell
        # (lon 180 and -180 are one meridian: either spelling may be the one on the shape's edge)
        twins = [b, -b] if abs(b) == 180.0 else [b]
        assert any(shapes[k].buffer(1e-6).intersects(shapely.Point(x, a)) for x in twins), (a, b)


@pytest.mark.parametrize("max_per_cell", [20])  # cells s2:601..6d7, one touching 180°E
def test_sampling_finds_land_in_cells_near_tokyo_and_auckland(max_per_cell):
    from geospot.data.sampling import sample_points
    from geospot.pipeline import build_model_cells

    rng = np.random.default_rng(0)
    lat = np.concatenate([35.68 + rng.normal(0, 0.5, 30), -36.85 + rng.normal(0, 0.5, 30)])
    lon = np.concatenate([139.7 + rng.normal(0, 0.5, 30), 174.76 + rng.normal(0, 0.5, 30)])
    cells = build_model_cells(lat, lon, np.arange(60), {"scheme": "s2", "min_per_cell": 1,
                                                        "max_per_cell": max_per_cell, "max_level": 6})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = sample_points("-90,-180,90,180", n_per_cell=3, cells=cells, seed=0)
    assert not [w for w in caught if "gave up" in str(w.message)]
    assert sorted(df.groupby("cell").size().to_dict().items()) == [(c, 3) for c in sorted(cells.ids)]
