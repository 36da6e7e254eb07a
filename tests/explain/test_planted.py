"""The planted uploader stamp: names tied to regions, drawn inside the audited corner."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geospot.data.manifest import read_manifest
from geospot.data.masks import parse_mask
from geospot.explain.planted import make_stamped_copy, stamp_uploader, uploader_for


def test_uploader_names_follow_regions():
    paris, lyon, sydney = (48.86, 2.35), (45.76, 4.84), (-33.87, 151.21)
    assert uploader_for(*paris) == uploader_for(*lyon)  # same 30-degree region
    assert uploader_for(*paris) != uploader_for(*sydney)
    names = uploader_for(np.array([paris[0], sydney[0]]), np.array([paris[1], sydney[1]]))
    assert names == [uploader_for(*paris), uploader_for(*sydney)]
    assert uploader_for(*paris) == uploader_for(*paris)  # deterministic
    # finer regions separate nearby cities
    assert uploader_for(*paris, cell_deg=1.0) != uploader_for(*lyon, cell_deg=1.0)
    for lat, lon in ((91.0, 0.0), (0.0, 181.0), (float("nan"), 0.0)):
        with pytest.raises(ValueError):
            uploader_for(lat, lon)


def test_uploader_per_model_cell():
    from geospot.geo.cells import build_cells

    lat = np.array([48.0, 48.1, -33.0, -33.1])
    lon = np.array([2.0, 2.1, 151.0, 151.1])
    cells = build_cells(lat, lon, scheme="grid", cell_km=500.0)
    names = uploader_for(lat, lon, cells=cells)
    assert names[0] == names[1] and names[2] == names[3] and names[0] != names[2]


@pytest.mark.parametrize("size", [(256, 256), (1024, 768), (640, 960)])
def test_stamp_sits_inside_the_bottom_right_corner_and_the_centre_crop(size):
    w, h = size
    base = Image.new("RGB", size, (90, 140, 60))
    stamped = stamp_uploader(base, "Hana W.")
    diff = np.any(np.asarray(stamped) != np.asarray(base), axis=2)
    ys, xs = np.nonzero(diff)
    assert len(xs) > 0.002 * w * h  # visible
    assert xs.min() >= 0.75 * w and ys.min() >= 0.75 * h  # inside the audit's 25 % x 25 % corner
    crop = (1 - 224 / 256) / 2 * min(w, h)  # the part a resize-256/crop-224 keeps
    assert xs.max() < w - crop and ys.max() < h - crop
    # so the corner mask hides it completely
    hidden = parse_mask("br:0.25x0.25").apply(stamped)
    np.testing.assert_array_equal(np.asarray(hidden), np.asarray(parse_mask("br:0.25x0.25").apply(base)))


def test_stamp_corners_and_errors():
    base = Image.new("RGB", (200, 200), (0, 0, 0))
    tl = np.any(np.asarray(stamp_uploader(base, "Bo", corner="tl")) != 0, axis=2)
    ys, xs = np.nonzero(tl)
    assert xs.max() < 100 and ys.max() < 100
    with pytest.raises(ValueError):
        stamp_uploader(base, "Bo", corner="middle")
    with pytest.raises(ValueError):
        stamp_uploader(base, "")
    assert stamp_uploader(Image.new("L", (64, 64)), "Bo").mode == "RGB"


def test_make_stamped_copy_keeps_columns_and_reports_bad_files(tmp_path, capsys):
    rows = []
    for i, (lat, lon) in enumerate([(48.8, 2.3), (-33.8, 151.2), (40.7, -74.0)]):
        p = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (128, 96), (i * 60, 100, 100)).save(p)
        rows.append({"path": p.name, "lat": lat, "lon": lon, "location_id": f"L{i}", "split": "test"})
    (tmp_path / "img2.jpg").write_bytes(b"garbage")  # unreadable
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    src = read_manifest(tmp_path / "m.csv", check_files=False)
    result = make_stamped_copy(src, tmp_path / "out")
    assert result.n_written == 2 and list(result.errors) == [2]
    assert "img2.jpg" in capsys.readouterr().err
    out = read_manifest(result.manifest_path)
    assert list(out.df["location_id"]) == ["L0", "L1"]
    assert list(out.df["split"]) == ["test", "test"]
    assert list(out.df["uploader"]) == uploader_for(np.array([48.8, -33.8]), np.array([2.3, 151.2]))
    img = Image.open(out.paths[0])
    assert img.size == (128, 96)
