"""Dataset checks: every planted problem is found, on its manifest line, and nothing else."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from geospot.cli import main
from geospot.data.check import check_dataset, report_markdown, write_check_report


def _scene(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x, y = int(rng.integers(0, 140)), int(rng.integers(0, 100))
        draw.rectangle([x, y, x + int(rng.integers(10, 80)), y + int(rng.integers(10, 60))],
                       fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return img


# (file, lat, lon, location_id, split); line numbers in the CSV are index + 2.
ROWS = [
    ("zagreb0.jpg", 45.8150, 15.9819, "zagreb", "train"),     # line 2
    ("zagreb1.jpg", 45.8151, 15.9820, "zagreb", "train"),     # line 3
    ("split.jpg", 43.5081, 16.4402, "split", "test"),          # line 4: re-encoded copy of zagreb0
    ("missing.jpg", 45.3271, 14.4422, "rijeka", "train"),     # line 5: no such file
    ("truncated.jpg", 45.5550, 18.6955, "osijek", "train"),   # line 6: cut in half
    ("null.jpg", 0.0, 0.0, "null", "train"),                   # line 7: null island
    ("sea.jpg", 43.0, 15.0, "sea", "train"),                   # line 8: the middle of the Adriatic
    ("spread0.jpg", 45.3, 17.5, "spread", "test"),            # line 9
    ("spread1.jpg", 45.75, 17.5, "spread", "test"),           # line 10: 50 km from its other view
    ("zagreb0.jpg", 45.8150, 15.9819, "zagreb", "train"),     # line 11: duplicate of line 2
    ("paris.jpg", 48.8566, 2.3522, "paris", "test"),          # line 12: outside Croatia
    ("bad.jpg", "north", 15.0, "bad", "train"),                # line 13: invalid latitude
]


@pytest.fixture
def dataset(tmp_path):
    for k, name in enumerate(["zagreb0", "zagreb1", "null", "sea", "spread0", "spread1", "paris", "bad"]):
        _scene(k).save(tmp_path / f"{name}.jpg", quality=90)
    buf = io.BytesIO()
    _scene(0).save(buf, format="JPEG", quality=40)
    (tmp_path / "split.jpg").write_bytes(buf.getvalue())
    _scene(99).resize((640, 480)).save(tmp_path / "truncated.jpg")
    data = (tmp_path / "truncated.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    df = pd.DataFrame(ROWS, columns=["path", "lat", "lon", "location_id", "split"])
    df.to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def _rows(items, key="row"):
    return sorted(it[key] for it in items)


def test_every_planted_problem_found(dataset):
    r = check_dataset(dataset, region="Croatia", s2_level=3, near_duplicates=True, spread_km=1.0, progress=False)
    assert r["n_rows"] == 12 and r["n_valid_rows"] == 10
    assert _rows(r["invalid_rows"]) == [13]
    assert r["duplicate_rows"] == [{"row": 11, "message": "duplicate of row 2 (same path, lat and lon)"}]
    assert _rows(r["files"]["missing"]) == [5]
    assert _rows(r["files"]["undecodable"]) == [6] and "truncated" in r["files"]["undecodable"][0]["reason"]
    c = r["coordinates"]
    assert _rows(c["null_island"]) == [7]
    assert _rows(c["at_sea"]) == [8]
    # Outside Croatia: null island, Paris and the mid-Adriatic point (far from the outline).
    assert _rows(c["outside_region"]) == [7, 8, 12]
    paris = next(it for it in c["outside_region"] if it["row"] == 12)
    assert 800 < paris["distance_km"] < 1300
    spread = r["location_spread"]["locations"]
    assert [s["location_id"] for s in spread] == ["spread"] and spread[0]["max_km"] == pytest.approx(50.0, abs=0.5)
    nd = r["near_duplicates"]
    assert [(p["row_a"], p["row_b"], p["straddles"]) for p in nd["pairs"]] == [(2, 4, True)]
    assert nd["straddling"] == 1
    assert r["countries"]["counts"]["HR"] == 7 and r["countries"]["counts"]["FR"] == 1
    assert sum(r["cells"]["counts"].values()) == 10 and r["cells"]["scheme"] == "s2"
    assert r["splits"] == {"train": 6, "test": 4}
    assert r["summary"]["ok"] is False and r["summary"]["issues"]["straddling_pairs"] == 1


def test_clean_dataset_is_ok(tmp_path):
    for k in range(3):
        _scene(k).save(tmp_path / f"{k}.jpg")
    pd.DataFrame({"path": [f"{k}.jpg" for k in range(3)], "lat": [45.81, 43.51, 45.33],
                  "lon": [15.98, 16.44, 14.44]}).to_csv(tmp_path / "m.csv", index=False)
    r = check_dataset(tmp_path / "m.csv", region="HR", progress=False)
    assert r["summary"]["ok"], r["summary"]
    assert "OK" in report_markdown(r)


def test_writers_and_cli(dataset, tmp_path, capsys):
    r = check_dataset(dataset, decode=False, progress=False)
    assert _rows(r["files"]["missing"]) == [5] and r["files"]["undecodable"] == []
    json_path, md_path = write_check_report(r, tmp_path / "report")
    assert json.loads(json_path.read_text())["summary"] == r["summary"]
    md = md_path.read_text()
    assert "## Missing files (1)" in md and "| 5 | " in md
    out_dir = tmp_path / "cli"
    assert main(["data", "check", str(dataset), "--region", "Croatia", "--out", str(out_dir), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "# Dataset check" in captured.out and "undecodable files 1" in captured.err
    assert (out_dir / "check.json").is_file() and (out_dir / "check.md").is_file()
    assert main(["data", "check", str(dataset), "--no-decode", "--json", "--quiet"]) == 1
    assert json.loads(capsys.readouterr().out)["n_rows"] == 12
    (tmp_path / "nocols.csv").write_text("file,latitude\nx.jpg,1\n")
    assert main(["data", "check", str(tmp_path / "nocols.csv")]) == 2
    assert "missing required column 'path'" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_croatia_manifest(shared_data):
    r = check_dataset(shared_data / "streetview-croatia" / "manifest.csv", region="Croatia", decode=False,
                      progress=False)
    assert r["n_rows"] == 800 and r["n_locations"] == 200
    assert r["files"]["missing"] == [] and r["coordinates"]["null_island"] == []
    counts = r["countries"]["counts"]
    assert max(counts, key=counts.get) == "HR" and counts["HR"] > 700
    assert r["location_spread"]["locations"] == []  # 4 headings of one panorama share a position
