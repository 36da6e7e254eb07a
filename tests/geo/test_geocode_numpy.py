"""The NumPy reverse geocoder gives the labels of its shapely + SciPy predecessor, and its cache heals itself."""
from __future__ import annotations

import numpy as np
import pytest

from geospot.geo import arraycache, geocode, places
from geospot.geo.distance import latlon_to_xyz, xyz_to_latlon
from geospot.geo.outlines import OutlineIndex
from geospot.geo.regions import country_index, country_polygons

# Border and edge cases: Rome / Vatican, Monaco, Gibraltar, Tuvalu, Croatia by Bosnia, Fiji and Chukotka
# across 180 degrees, the poles, Split's harbour, the open Atlantic.
SPECIAL = np.array([
    (41.8933, 12.4829), (41.90236, 12.45332), (41.9031, 12.4663), (41.8986, 12.4731), (43.7396, 7.4276),
    (43.70, 7.27), (36.1408, -5.3536), (36.1681, -5.3477), (-8.52, 179.196), (44.656, 15.697), (45.179, 15.702),
    (44.543, 15.776), (44.509, 15.943), (45.198, 16.385), (45.269, 16.777), (-16.82, -179.93), (-16.57, 179.22),
    (-16.5, -179.99), (-16.5, 180.0), (66.64, -177.46), (65.0, -180.0), (71.24, -178.76), (90.0, 0.0),
    (-90.0, 0.0), (-90.0, 180.0), (-90.0, -180.0), (-89.9, 45.0), (0.0, 180.0), (0.0, -180.0), (43.5081, 16.4402),
    (43.40, 16.20), (0.0, -30.0), (89.9, 100.0), (-60.0, -179.999),
])


def _points(n: int, seed: int):
    rng = np.random.default_rng(seed)
    gaz = places.gazetteer()
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # uniform on the sphere: mostly sea
    lon = rng.uniform(-180, 180, n)
    near_lat, near_lon = xyz_to_latlon(gaz.xyz[rng.integers(0, len(gaz), n)] + rng.normal(0, 0.002, (n, 3)))
    eu_lat, eu_lon = rng.uniform(35, 60, n), rng.uniform(-10, 40, n)  # many borders and coasts
    return (np.clip(np.concatenate([lat, near_lat, eu_lat, SPECIAL[:, 0]]), -90, 90),
            np.concatenate([lon, near_lon, eu_lon, SPECIAL[:, 1]]))


def _reference(lat, lon):
    """geospot 0.1's labels: shapely point in polygon, SciPy k-d trees on unit vectors (per country too)."""
    shapely = pytest.importorskip("shapely")
    spatial = pytest.importorskip("scipy.spatial")
    geoms = [p["geometry"] for p in country_polygons()]
    parts, owner = shapely.get_parts(np.array(geoms, dtype=object), return_index=True)
    pt, part = shapely.STRtree(parts).query(shapely.points(lon, lat), predicate="intersects")
    best = np.full(lat.size, -1)
    np.maximum.at(best, pt, part)  # on a border, the later polygon (as a loop over polygons that overwrites)
    iso2 = np.array([p["iso2"] for p in country_polygons()])
    code = np.where(best >= 0, iso2[owner[np.maximum(best, 0)]], "").astype("<U2")
    gaz = places.gazetteer()
    xyz = latlon_to_xyz(lat, lon)
    tree = spatial.cKDTree(gaz.xyz)
    d, idx = tree.query(xyz)
    small = ~np.isin(gaz.country_code, iso2)
    sj = np.flatnonzero(small)
    ds, js = spatial.cKDTree(gaz.xyz[sj]).query(xyz, distance_upper_bound=geocode._km_to_chord(1.0))
    hit = np.flatnonzero(js < sj.size)
    hit = hit[sj[js[hit]] == idx[hit]]
    code[hit] = gaz.country_code[idx[hit]]
    sea = np.flatnonzero((code == "") & (d <= geocode._km_to_chord(geocode.FALLBACK_KM)))
    code[sea] = gaz.country_code[idx[sea]]
    local = idx.copy()
    for c in set(code[(code != "") & (gaz.country_code[idx] != code)].tolist()):
        rows = np.flatnonzero((code == c) & (gaz.country_code[idx] != code))
        members = np.flatnonzero(gaz.country_code == c)
        local[rows] = members[spatial.cKDTree(gaz.xyz[members]).query(xyz[rows])[1]] if members.size else -1
    return code, idx, local


def _same_or_tied(gaz, a, b) -> bool:
    """Equal place indices, or places at exactly the same coordinates (k-d trees break such ties arbitrarily)."""
    a, b = np.asarray(a), np.asarray(b)
    differ = np.flatnonzero(a != b)
    return bool(np.all((a[differ] >= 0) & (b[differ] >= 0)) and np.all(gaz.xyz[a[differ]] == gaz.xyz[b[differ]]))


def test_labels_equal_the_shapely_scipy_reference():
    lat, lon = _points(2000, seed=7)
    code, idx, local = _reference(lat, lon)
    gaz = places.gazetteer()
    assert geocode.country_codes(lat, lon).tolist() == code.tolist()
    ok, nearest, _ = geocode._nearest(lat, lon)
    assert ok.size == lat.size and _same_or_tied(gaz, nearest, idx)
    assert geocode.geonames_country_codes(lat, lon).tolist() == gaz.country_code[idx].tolist()
    got = geocode.reverse_geocode(lat, lon)
    assert [p.country_code for p in got] == code.tolist()
    labelled = np.flatnonzero((code != "") & (local >= 0))
    want = {(k, gaz.city[local[k]], gaz.region[local[k]]) for k in labelled.tolist()}
    have = {(k, got[k].city, got[k].region) for k in labelled.tolist()}
    for k, city, region in have - want:  # only where two places share coordinates
        tied = np.flatnonzero((gaz.xyz == gaz.xyz[local[k]]).all(axis=1))
        assert (city, region) in {(gaz.city[t], gaz.region[t]) for t in tied.tolist()}, (lat[k], lon[k])
    assert all(not (p.city or p.region) for k, p in enumerate(got) if k not in set(labelled.tolist()))


def test_point_in_polygon_equals_shapely_on_edges_and_vertices():
    shapely = pytest.importorskip("shapely")
    geoms = [p["geometry"] for p in country_polygons()]
    parts, owner = shapely.get_parts(np.array(geoms, dtype=object), return_index=True)
    rng = np.random.default_rng(3)
    verts = shapely.get_coordinates(parts[rng.choice(len(parts), 200)])
    pick = verts[rng.integers(0, len(verts), 2000)]
    mid = (verts[:-1] + verts[1:]) / 2  # on (or a hair from) edges: exact orientation decides
    lon, lat = np.concatenate([pick[:, 0], mid[::50, 0]]), np.concatenate([pick[:, 1], mid[::50, 1]])
    pt, part = shapely.STRtree(parts).query(shapely.points(lon, lat), predicate="intersects")
    best = np.full(lat.size, -1)
    np.maximum.at(best, pt, part)
    want = np.where(best >= 0, owner[np.maximum(best, 0)], -1)
    assert country_index(lat, lon).tolist() == want.tolist()


def test_outline_index_on_a_polygon_with_a_hole_across_the_antimeridian():
    # A square 170..180 x -10..10 with a hole 174..176 x -2..2, and its twin -180..-170 (cut at 180 degrees).
    rings = [[(170, -10), (180, -10), (180, 10), (170, 10), (170, -10)],
             [(174, -2), (174, 2), (176, 2), (176, -2), (174, -2)],
             [(-180, -10), (-170, -10), (-170, 10), (-180, 10), (-180, -10)]]
    coords = np.array([c for r in rings for c in r], dtype=np.float64)
    arrays = {"coords": coords, "ring_offsets": np.array([0, 5, 10, 15]), "polygon_offsets": np.array([0, 2, 3]),
              "geometry_offsets": np.array([0, 2])}
    index = OutlineIndex.from_arrays(OutlineIndex.build_arrays(arrays))
    lat = np.array([0, 0, 2, 5, 0, 0, 0, 10, 10.0001, -5, 0])
    lon = np.array([172, 175, 175, 180, 180, -180, -175, 175, 175, -180, 181])
    assert index.owner_of(lat, lon).tolist() == [0, -1, 0, 0, 0, 0, 0, 0, -1, 0, -1]
    assert index.polygon_of(lat, lon).tolist() == [0, -1, 0, 0, 0, 1, 1, 0, -1, 1, -1]


def test_gazetteer_equals_the_csv():
    pd = pytest.importorskip("pandas")
    table = pd.read_csv(places.table_path(), usecols=["lat", "lon", "cc", "admin1", "name"], dtype=str,
                        keep_default_na=False)
    gaz = places.gazetteer()
    assert len(gaz) == len(table)
    np.testing.assert_array_equal(gaz.xyz, latlon_to_xyz(table["lat"].astype(float).to_numpy(),
                                                         table["lon"].astype(float).to_numpy()))
    assert gaz.country_code.tolist() == table["cc"].tolist()
    assert gaz.region.tolist() == table["admin1"].tolist() and gaz.city.tolist() == table["name"].tolist()


def test_nearest_within_a_bound_and_in_a_country():
    gaz = places.gazetteer()
    lat, lon = np.array([45.8150, 0.0, -16.5]), np.array([15.9819, -30.0, -179.99])
    xyz = latlon_to_xyz(lat, lon)
    near = gaz.nearest(lat, lon, xyz, within_chord=geocode._km_to_chord(25.0))
    assert gaz.cities(near[:1]) == ["Zagreb"] and near[1] == -1
    assert gaz.cc[gaz.nearest(lat[2:], lon[2:], xyz[2:])[0]] == b"FJ"  # across 180 degrees
    local = gaz.nearest(lat[:1], lon[:1], xyz[:1], country=np.array(["SI"]))
    assert gaz.country_code[local[0]] == "SI"  # the nearest Slovenian place to Zagreb
    assert gaz.nearest(lat[:1], lon[:1], xyz[:1], country=np.array(["XX"])).tolist() == [-1]


def _toy_build(calls):
    def build():
        calls.append(1)
        return {"a": np.arange(1000, dtype=np.int64), "b": np.linspace(0, 1, 7)}
    return build


def test_cache_is_written_once_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    calls = []
    first = arraycache.cached_arrays("toy", "source 1", _toy_build(calls))
    (path,) = (tmp_path / "geo").glob("toy-*.npz")
    again = arraycache.cached_arrays("toy", "source 1", _toy_build(calls))
    assert len(calls) == 1 and np.array_equal(again["a"], first["a"])
    assert [p.name for p in (tmp_path / "geo").iterdir()] == [path.name]  # no temporary file left behind
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside an array
    path.write_bytes(bytes(data))
    with pytest.raises(arraycache.CacheError, match="damaged|unreadable"):
        arraycache.read(path, "source 1")
    healed = arraycache.cached_arrays("toy", "source 1", _toy_build(calls))
    assert len(calls) == 2 and np.array_equal(healed["a"], first["a"])
    arraycache.read(path, "source 1")  # replaced by a good file
    path.write_bytes(path.read_bytes()[:100])  # truncated
    arraycache.cached_arrays("toy", "source 1", _toy_build(calls))
    assert len(calls) == 3
    other = arraycache.cached_arrays("toy", "source 2", _toy_build(calls))  # another source: another file
    assert len(calls) == 4 and other["b"].size == 7
    assert len(list((tmp_path / "geo").glob("toy-*.npz"))) == 1  # the stale file is gone


def test_unwritable_cache_still_answers(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GEOSPOT_CACHE", str(blocker))
    calls = []
    assert arraycache.cached_arrays("toy", "s", _toy_build(calls))["a"].size == 1000 and calls == [1]


def test_gazetteer_cache_file_is_checked_on_load(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    places._gazetteer.cache_clear()
    try:
        fresh = places.gazetteer()  # parses the CSV into tmp_path
        (path,) = (tmp_path / "geo").glob("geonames-*.npz")
        data = bytearray(path.read_bytes())
        data[-5000] ^= 0x01
        path.write_bytes(bytes(data))
        places._gazetteer.cache_clear()
        healed = places.gazetteer()  # the damaged file is parsed again and replaced
        assert np.array_equal(healed.xyz, fresh.xyz) and healed.name_text == fresh.name_text
        places._gazetteer.cache_clear()
        assert places.gazetteer().cities([0]) == fresh.cities([0])  # and now loads
    finally:
        places._gazetteer.cache_clear()


def test_few_points_take_the_same_answers_as_many():
    gaz = places.gazetteer()
    lat, lon = _points(300, seed=11)
    xyz = latlon_to_xyz(lat, lon)
    for bound in (np.inf, geocode._km_to_chord(25.0)):
        many = gaz.nearest(lat, lon, xyz, within_chord=bound)
        few = np.concatenate([gaz.nearest(lat[i:i + 3], lon[i:i + 3], xyz[i:i + 3], within_chord=bound)
                              for i in range(0, lat.size, 3)])
        assert few.tolist() == many.tolist()


def test_cells_no_edge_touches_answer_without_a_test_and_agree_with_it():
    """A country with a lake (hole) holding an enclave: cells inside each are settled by the index alone
    (`cell_owner`), and every point gets the same answer as from the edge test."""
    import dataclasses

    rings = [[(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)],  # the country ...
             [(1, 1), (1, 9), (9, 9), (9, 1), (1, 1)],  # ... with a hole
             [(4, 4), (7, 4), (7, 7), (4, 7), (4, 4)]]  # an enclave inside the hole
    coords = np.array([c for r in rings for c in r], dtype=np.float64)
    arrays = {"coords": coords, "ring_offsets": np.array([0, 5, 10, 15]), "polygon_offsets": np.array([0, 2, 3]),
              "geometry_offsets": np.array([0, 1, 2])}
    index = OutlineIndex.from_arrays(OutlineIndex.build_arrays(arrays))
    cell = lambda lat, lon: (lat + 90) * 360 + lon + 180  # noqa: E731 (the 1-degree cell of a corner)
    assert index.cell_owner[cell(2, 2)] == -1 and index.cell_owner[cell(5, 5)] == 1  # in the lake, in the enclave
    assert index.cell_owner[cell(0, 0)] == -2 and index.cell_owner[cell(50, 50)] == -1  # an edge; open sea
    tested = dataclasses.replace(index, cell_owner=np.full_like(index.cell_owner, -2))
    g = np.arange(-1.0, 11.01, 0.25)
    lat, lon = (a.ravel() for a in np.meshgrid(g, g))
    assert index.polygon_of(lat, lon).tolist() == tested.polygon_of(lat, lon).tolist()
    whole = _vendored_index_and_points()
    assert whole[0].polygon_of(*whole[1]).tolist() == dataclasses.replace(
        whole[0], cell_owner=np.full_like(whole[0].cell_owner, -2)).polygon_of(*whole[1]).tolist()


def _vendored_index_and_points():
    """The vendored outlines' index and 20,000 points on the sphere (integer degrees among them)."""
    from geospot.geo.outlines import outline_index

    rng = np.random.default_rng(5)
    lat = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 15000))), rng.integers(-90, 91, 5000)])
    lon = np.concatenate([rng.uniform(-180, 180, 15000), rng.integers(-180, 181, 5000)])
    return outline_index(), (lat.astype(float), lon.astype(float))
