"""Sample points: uniform on the sphere, inside their cells and region, on land, seeded."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import shapely
from global_land_mask import globe

from geospot.cli import main
from geospot.data.sampling import SamplingWarning, sample_points, uniform_in_bounds
from geospot.geo.cells import build_cells
from geospot.geo.regions import resolve_region


def test_uniform_on_the_sphere_not_in_degrees():
    lat, lon = uniform_in_bounds(np.random.default_rng(0), 200_000, -90, 90, -180, 180)
    # Equal-area bands: half the sphere lies within 30 degrees of the equator,
    # and only 1 - cos(30 deg) ~ 13.4% above 60 degrees (uniform degrees would give 50% / 33%).
    assert abs(np.mean(np.abs(lat) < 30) - 0.5) < 0.005
    assert abs(np.mean(np.abs(lat) > 60) - (1 - np.sin(np.radians(60)))) < 0.005
    assert lon.min() >= -180 and lon.max() <= 180


def test_box_across_the_antimeridian():
    lat, lon = uniform_in_bounds(np.random.default_rng(1), 1000, -20, -10, 170, -170)
    assert ((lon >= 170) | (lon <= -170)).all() and (lat >= -20).all() and (lat <= -10).all()


def test_points_per_cell_inside_cells_on_land_and_seeded():
    df = sample_points("45,5,48,12", n_per_cell=4, cell_km=100, seed=3)
    assert list(df.columns) == ["cell", "lat", "lon"]
    counts = df["cell"].value_counts()
    assert (counts == 4).all() and len(counts) > 10
    assert globe.is_land(df["lat"].to_numpy(), df["lon"].to_numpy()).all()
    # Every point lies in the grid cell it is labelled with.
    cells = build_cells(df["lat"].to_numpy(), df["lon"].to_numpy(), scheme="grid", cell_km=100)
    ids = np.asarray(cells.ids, dtype=object)[cells.assign(df["lat"].to_numpy(), df["lon"].to_numpy())]
    assert (ids == df["cell"].to_numpy()).all()
    assert df["lat"].between(45, 48).all() and df["lon"].between(5, 12).all()
    assert df.equals(sample_points("45,5,48,12", n_per_cell=4, cell_km=100, seed=3))
    assert not df.equals(sample_points("45,5,48,12", n_per_cell=4, cell_km=100, seed=4))


def test_country_region_and_given_cells():
    croatia = resolve_region("HR")
    df = sample_points("Croatia", n=300, seed=0)
    assert len(df) == 300 and (df["cell"] == "Croatia").all()
    assert shapely.intersects_xy(croatia, df["lon"].to_numpy(), df["lat"].to_numpy()).all()
    cells = build_cells(df["lat"].to_numpy(), df["lon"].to_numpy(), scheme="grid", shape="hex", cell_km=60)
    per_cell = sample_points("Croatia", n_per_cell=2, cells=cells, seed=0)
    assert set(per_cell["cell"]) <= set(cells.ids)
    idx = cells.assign(per_cell["lat"].to_numpy(), per_cell["lon"].to_numpy())
    assert (np.asarray(cells.ids, dtype=object)[idx] == per_cell["cell"].to_numpy()).all()
    assert shapely.intersects_xy(croatia, per_cell["lon"].to_numpy(), per_cell["lat"].to_numpy()).all()


def test_gives_up_on_a_cell_at_sea_with_a_warning():
    # A box in the open Atlantic: no land at all.
    with pytest.warns(SamplingWarning, match="gave up after 500 random draws with 0 of 5"):
        df = sample_points("30,-40,31,-39", n=5, max_draws_per_point=100)
    assert len(df) == 0
    # Grid cells built at sea (land_only=False), then sampled on land: every cell gives up.
    sea_cells = build_cells(np.array([30.5, 30.5]), np.array([-39.5, -35.0]), scheme="grid", cell_km=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = sample_points(None, n_per_cell=3, cells=sea_cells, max_draws_per_point=50)
    messages = [str(w.message) for w in caught if issubclass(w.category, SamplingWarning)]
    assert len(df) == 0 and len(messages) == 2 and all(m.startswith("cell sq:") for m in messages)
    sea = sample_points(None, n_per_cell=3, cells=sea_cells, land_only=False)
    assert len(sea) == 6


def test_bad_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        sample_points("HR", n=3, n_per_cell=3)
    with pytest.raises(ValueError, match="positive integer"):
        sample_points("HR", n=0)


def test_cli_sample_to_stdout_and_file(tmp_path, capsys):
    assert main(["data", "sample", "45,5,46,7", "--n", "20", "--seed", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "cell,lat,lon" and len(out) == 21
    target = tmp_path / "p.csv"
    assert main(["data", "sample", "Croatia", "--n-per-cell", "2", "--cell-km", "80", "--out", str(target)]) == 0
    df = pd.read_csv(target)
    assert (df["cell"].value_counts() == 2).all()
    assert main(["data", "sample", "Atlantis", "--n", "3"]) == 2
    assert "Atlantis" in capsys.readouterr().err
