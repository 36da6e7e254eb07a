"""Planning (skip GPS photos without the model, albums, the gate) and the review report round trip."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from geospot.geotag.plan import group_photos, plan
from geospot.geotag.report import read_reviewed, write_report

from .exif_fixtures import build_tiff, jpeg_bytes


class FakeResult:
    def __init__(self, d):
        self.d = d

    def to_dict(self):
        return self.d


class FakePredictor:
    """Predictor.predict's contract: one result per photo, or [fused] + errors with same_place."""

    def __init__(self, radius90=10.0, prob=0.9, broken=()):
        self.calls = []
        self.radius90, self.prob, self.broken = radius90, prob, set(broken)

    def _result(self, paths):
        return {"path": paths[0], "paths": list(paths), "lat": 10.0 + len(paths), "lon": -20.0,
                "radius_km": {"50": self.radius90 / 3, "90": self.radius90},
                "top_cells": [{"id": "c", "prob": self.prob, "lat": 10.0, "lon": -20.0},  # neighbours ~11 km apart
                              {"id": "d", "prob": 1 - self.prob, "lat": 10.1, "lon": -20.0}], "country": "X"}

    def __call__(self, paths, same_place):
        self.calls.append((list(paths), same_place))
        errors = [FakeResult({"path": p, "error": "cannot decode"}) for p in paths if p in self.broken]
        good = [p for p in paths if p not in self.broken]
        if same_place:
            return ([FakeResult(self._result(good))] if good else []) + errors
        return [FakeResult({"path": p, "error": "cannot decode"}) if p in self.broken else FakeResult(self._result([p]))
                for p in paths]


def _jpeg(path: Path, gps=False, when="2021:06:01 12:00:00", seed=0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = {"lat": (1, 2, 3, 1), "ref": "N", "alt": 1.0, "lon": (4, 5, 6, 1)} if gps else None
    path.write_bytes(jpeg_bytes(build_tiff("<", gps=g, datetime=when), seed=seed))
    return str(path)


def test_photos_with_gps_never_reach_the_model(tmp_path):
    has = _jpeg(tmp_path / "has.jpg", gps=True)
    lacks = _jpeg(tmp_path / "lacks.jpg")
    fake = FakePredictor()
    props = plan([has, lacks], fake)
    assert [p.status for p in props] == ["has-gps", "propose"]
    assert "EXIF" in props[0].reason
    assert fake.calls == [([lacks], False)]
    assert props[1].method == "exif" and props[1].radius90_km == 10.0
    assert plan([has], fake, overwrite=True)[0].status == "propose"


def test_gate_on_radius_and_probability(tmp_path):
    f = _jpeg(tmp_path / "a.jpg")
    assert plan([f], FakePredictor(radius90=500), max_radius_km=100)[0].status == "below-gate"
    assert "500 km > 100 km" in plan([f], FakePredictor(radius90=500), max_radius_km=100)[0].reason
    assert plan([f], FakePredictor(radius90=50), max_radius_km=100)[0].status == "propose"
    assert plan([f], FakePredictor(prob=0.1), min_prob=0.5)[0].status == "below-gate"


def test_failures_are_named(tmp_path):
    a, b = _jpeg(tmp_path / "a.jpg"), _jpeg(tmp_path / "b.jpg", seed=1)
    props = plan([a, b], FakePredictor(broken=[b]))
    assert [p.status for p in props] == ["propose", "failed"] and "cannot decode" in props[1].reason


def test_albums_by_folder_and_same_place(tmp_path):
    fs = [_jpeg(tmp_path / d / f"{i}.jpg", seed=i) for d in ("trip1", "trip2") for i in range(2)]
    fake = FakePredictor()
    props = plan(fs, fake, grouping="folder")
    assert sorted(len(c[0]) for c in fake.calls) == [2, 2] and all(c[1] for c in fake.calls)
    assert {p.group for p in props} == {str(tmp_path / "trip1"), str(tmp_path / "trip2")}
    assert all(p.lat == 12.0 for p in props)  # the fused answer for each album of 2
    fake = FakePredictor()
    plan(fs, fake, grouping="all")
    assert fake.calls == [(fs, True)]


def test_albums_by_capture_time(tmp_path):
    times = ["2021:06:01 10:00:00", "2021:06:01 10:30:00", "2021:06:01 13:00:00", "2021:06:01 13:20:00"]
    fs = [_jpeg(tmp_path / f"{i}.jpg", when=t, seed=i) for i, t in enumerate(times)]
    no_time = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(no_time)
    albums = group_photos(fs + [str(no_time)], "time", gap_minutes=60)
    assert [a[1] for a in albums] == [fs[:2], fs[2:], [str(no_time)]]
    assert len(group_photos(fs, "time", gap_minutes=240)) == 1


def test_report_round_trip_and_row_errors(tmp_path):
    fs = [_jpeg(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    props = plan(fs, FakePredictor(radius90=500), max_radius_km=1000)
    props[2].status, props[2].reason = "below-gate", "x"
    paths = write_report(props, tmp_path / "rep")
    geo = json.loads(paths["geojson"].read_text())
    assert len(geo["features"]) == 3 and geo["features"][0]["geometry"]["coordinates"] == [-20.0, 11.0]
    html = paths["html"].read_text()
    assert "<svg" in html and "0.jpg" in html and "http" not in html.replace("http://www.w3.org", "")
    rows = list(csv.DictReader(open(paths["csv"], encoding="utf-8")))
    assert [r["decision"] for r in rows] == ["write", "write", "skip"]
    # the user edits: moves photo 0, accepts photo 2, and makes mistakes in extra rows
    rows[0]["lat"] = "48.85"
    rows[2]["decision"] = "write"
    bad = [dict(rows[1], lat="north"), dict(rows[1], lon="200"), dict(rows[1], decision="maybe"),
           dict(rows[1], path=str(tmp_path / "missing.jpg"))]
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=rows[0].keys())
        w.writeheader()
        w.writerows(rows + bad)
    good, errors = read_reviewed(paths["csv"])
    assert [g.path for g in good] == fs and good[0].fix_lat == 48.85 and good[0].radius_km == 500
    assert len(errors) == 4
    assert "row 5: lat 'north' is not a number" in errors[0]
    assert "row 6" in errors[1] and "longitude" in errors[1]
    assert "row 7" in errors[2] and "maybe" in errors[2]
    assert "row 8" in errors[3] and "no such file" in errors[3]


def test_reviewed_csv_without_required_columns(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("path,latitude\nx.jpg,1\n")
    good, errors = read_reviewed(p)
    assert not good and "missing column(s) lat, lon" in errors[0]


@pytest.mark.parametrize("style", ["ext", "stem"])
def test_done_per_log_skips_without_model(tmp_path, style):
    from geospot.geotag.changelog import ChangeLog
    from geospot.geotag.fix import GpsFix
    from geospot.geotag.writer import write_fix

    f = _jpeg(tmp_path / "a.jpg")
    log = ChangeLog(tmp_path / "log.csv")
    write_fix(f, GpsFix(1, 2), method="sidecar", sidecar_style=style, log=log)
    fake = FakePredictor()
    props = plan([f], fake, overwrite=True, force_sidecar=True, sidecar_style=style, done=log.done())
    assert props[0].status == "done" and fake.calls == []
    assert os.path.exists(tmp_path / ("a.jpg.xmp" if style == "ext" else "a.xmp"))


def test_broken_files_do_not_stop_the_plan(tmp_path):
    from geospot.testing import make_bad_files

    bad = make_bad_files(tmp_path / "bad")
    files = [str(p) for p in bad.values()]
    fake = FakePredictor(broken=[str(bad[n]) for n in ("zero_byte", "truncated_jpeg", "text_as_jpg")])
    props = plan(files, fake)
    assert len(props) == len(files)
    by_name = {Path(p.path).name: p for p in props}
    assert by_name["truncated.jpg"].status == "failed" and by_name["text.jpg"].status == "failed"
    assert by_name["cmyk.jpg"].status == "propose"


def test_radius_never_smaller_than_the_top_cell():
    from geospot.geotag.plan import HALF_CIRCUMFERENCE_KM, Proposal, _fill, cell_floor_km

    near = [{"lat": 0.0, "lon": 179.9, "prob": 0.95}, {"lat": 0.0, "lon": -179.9, "prob": 0.03},
            {"lat": 40.0, "lon": 0.0, "prob": 0.02}]
    assert cell_floor_km(near) == pytest.approx(11.1, abs=0.1)  # across the antimeridian, not around the world
    assert cell_floor_km(near[:1]) == HALF_CIRCUMFERENCE_KM
    # a model 95% sure of one cell reports a 0 km radius; geotag gates on the cell's half-width instead
    result = {"lat": 0.0, "lon": 179.9, "radius_km": {"50": 0.0, "90": 0.0}, "top_cells": near}
    p = Proposal("x.jpg", "failed")
    _fill(p, result, max_radius_km=5.0, min_prob=0.0)
    assert p.status == "below-gate" and p.radius90_km == pytest.approx(11.1, abs=0.1) and "top cell" in p.reason
    p = Proposal("x.jpg", "failed")
    _fill(p, result, max_radius_km=20.0, min_prob=0.0)
    assert p.status == "propose"
