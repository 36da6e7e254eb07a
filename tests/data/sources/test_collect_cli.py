"""`geospot data streetview|mapillary` end to end against the local fake API."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
from fake_api import MlyImage, Pano

from geospot.cli import data_cmds


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="geospot")
    sub = parser.add_subparsers(dest="command")
    data_cmds.register(sub)  # the real `geospot data` group, which loads data_collect
    args = parser.parse_args(argv)
    return args.func(args)


def write_points(path: Path, api) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cell", "lat", "lon"])
        for c in range(2):
            for i in range(5):
                lat, lon = 30.0 + c, 5.0 + 0.01 * i
                w.writerow([f"k{c}", lat, lon])
                if i % 2 == 0:
                    api.panos.append(Pano(f"P{c}{i}", lat + 0.0001, lon))
    return path


@pytest.mark.parametrize("verb,needle", [("streetview", "GOOGLE_MAPS_API_KEY"), ("mapillary", "MAPILLARY_ACCESS_TOKEN")])
def test_help_is_complete(verb, needle, capsys):
    with pytest.raises(SystemExit) as info:
        run(["data", verb, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--region", "--points", "--per-cell", "--budget", "--dry-run", "--concurrency", "--rate", needle,
                 "Resume", "terms of service"):
        assert flag in text, flag


def test_points_csv_run_resume_and_budget(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MY_SV_KEY", api.key)
    points = write_points(tmp_path / "points.csv", api)
    out = tmp_path / "out"
    common = ["data", "streetview", "--points", str(points), "--out", str(out), "--per-cell", "2",
              "--size", "32x32", "--base-url", api.streetview_url, "--key-env", "MY_SV_KEY", "--rate", "0",
              "--timeout", "2", "--no-progress"]
    assert run(common + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "cells: 2" in dry and "lookup (metadata) requests: 4 to 10" in dry and "image requests: at most 16" in dry
    assert not out.exists()
    assert run(common + ["--budget", "6"]) == 3  # stopped by the budget
    captured = capsys.readouterr()
    assert "request budget of 6 requests exhausted" in captured.out
    assert run(common) == 0
    captured = capsys.readouterr()
    assert "finished" in captured.out and "4 in the manifest" in captured.out
    with open(out / "manifest.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 16 and len({r["path"] for r in table}) == 16
    assert all(n == 1 for n in api.image_hits.values())
    assert run(common + ["--dry-run"]) == 0
    assert "already collected 4" in capsys.readouterr().out
    for path in out.rglob("*"):
        if path.is_file():
            assert api.key.encode() not in path.read_bytes()
    # Other settings on the same folder are refused before any request.
    n_requests = len(api.requests)
    assert run(common + ["--headings", "0,180"]) == 2
    assert "other settings" in capsys.readouterr().err and len(api.requests) == n_requests


def test_region_run_samples_cells_and_saves_points(api, tmp_path, monkeypatch, capsys):
    api.everywhere_step_deg = 0.001  # imagery everywhere on a ~100 m grid
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", api.key)
    out = tmp_path / "reg"
    argv = ["data", "streetview", "--region", "45.0,15.0,45.3,15.4", "--cell-km", "15", "--per-cell", "2",
            "--attempts-per-cell", "3", "--headings", "0,180", "--size", "32x32", "--base-url", api.streetview_url,
            "--out", str(out), "--rate", "0", "--concurrency", "4", "--no-progress", "--include-sea"]
    assert run(argv + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    n_cells = int(dry.split("cells: ")[1].split()[0])
    assert n_cells >= 4 and f"sample points: {3 * n_cells}" in dry
    assert run(argv) == 0
    assert "finished" in capsys.readouterr().out
    with open(out / "points.csv", newline="") as f:
        saved = list(csv.DictReader(f))
    assert len(saved) == 3 * n_cells
    with open(out / "manifest.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len({r["cell"] for r in table}) == n_cells and len(table) == 2 * 2 * n_cells
    for r in table:
        assert 44.99 <= float(r["lat"]) <= 45.31 and 14.99 <= float(r["lon"]) <= 15.41
    before = len(api.requests)
    assert run(argv) == 0  # a rerun reads points.csv and has nothing left to do
    assert len(api.requests) == before


def test_mapillary_verb(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAPILLARY_ACCESS_TOKEN", api.token)
    api.mly.append(MlyImage("77", 30.0, 5.0, compass=12.0, sequence="s1"))
    points = tmp_path / "p.csv"
    points.write_text("cell,lat,lon\nk0,30.0,5.0\n")
    assert run(["data", "mapillary", "--points", str(points), "--out", str(tmp_path / "m"), "--per-cell", "1",
                "--base-url", api.url, "--no-progress"]) == 0
    assert "collected 1 new location" in capsys.readouterr().out
    assert (tmp_path / "m" / "manifest.csv").read_text().count("\n") == 2


def test_clear_errors(api, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GOOGLE_MAPS_API_KEY", raising=False)
    points = tmp_path / "p.csv"
    points.write_text("cell,lat,lon\nk0,30.0,5.0\n")
    assert run(["data", "streetview", "--points", str(points), "--out", str(tmp_path / "o")]) == 2
    assert "GOOGLE_MAPS_API_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "k-123456")
    bad = tmp_path / "bad.csv"
    bad.write_text("cell,lat,lon\nk0,30.0,5.0\nk0,north,5.0\n")
    assert run(["data", "streetview", "--points", str(bad), "--out", str(tmp_path / "o"),
                "--base-url", api.streetview_url]) == 2
    assert "bad.csv line 3: lat/lon not numeric" in capsys.readouterr().err
    assert run(["data", "streetview", "--points", str(points), "--out", str(tmp_path / "o"), "--size", "9000x1"]) == 2
    assert "640" in capsys.readouterr().err
    assert run(["data", "streetview", "--region", "Atlantis", "--out", str(tmp_path / "o2"), "--dry-run"]) == 2
    assert "Atlantis" in capsys.readouterr().err
