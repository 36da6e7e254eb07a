"""`geospot explain` and `geospot audit` from the command line (in process)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from geospot.cli import main
from geospot.data.manifest import read_manifest
from geospot.geo.cells import build_cells
from geospot.testing import make_fixture_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_tiny_model):
    root = tmp_path_factory.mktemp("cli")
    manifest_path = make_fixture_dataset(root / "data", n_locations=8, views=2, size=64, seed=2)
    manifest = read_manifest(manifest_path)
    model = make_tiny_model(build_cells(manifest.lat, manifest.lon, scheme="grid", cell_km=2000.0))
    model_dir = model.save(root / "model")
    return {"root": root, "manifest": manifest_path, "paths": manifest.paths, "model": model_dir, "cells": model.cells}


def test_explain_writes_one_overlay_per_photo_and_the_mean(setup, tmp_path, capsys):
    paths = setup["paths"][:3]
    code = main(["explain", str(setup["model"]), *paths, "--out", str(tmp_path), "--mean"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 4 and out[-1].startswith("mean of 3 images")
    pngs = sorted(tmp_path.glob("*.gradcam.png"))
    assert len(pngs) == 3  # same stems (0.jpg) in different folders get distinct names
    # a figure: the photo beside its overlay, caption and colour bar (wider than tall)
    w, h = Image.open(pngs[0]).size
    assert w > 1.5 * h and h >= 300
    assert (tmp_path / "mean_gradcam.png").is_file() and (tmp_path / "mean_overlay.png").is_file()


def test_explain_asked_cell_by_id_or_index(setup, tmp_path, capsys):
    cell_id = str(setup["cells"].ids[1])
    assert main(["explain", str(setup["model"]), setup["paths"][0], "--cell", cell_id, "--out", str(tmp_path)]) == 0
    by_id = capsys.readouterr().out
    assert f"cell {cell_id} " in by_id
    assert main(["explain", str(setup["model"]), setup["paths"][0], "--cell", "1", "--out", str(tmp_path / "i")]) == 0
    assert f"cell {cell_id} " in capsys.readouterr().out
    assert main(["explain", str(setup["model"]), setup["paths"][0], "--cell", "no-such-cell", "--out",
                 str(tmp_path)]) == 2  # usage error: one line, no traceback
    assert "neither a cell id" in capsys.readouterr().err


def test_explain_bad_files_do_not_stop_the_batch(setup, tmp_path, capsys):
    bad = tmp_path / "in" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 truncated")
    folder = str(setup["root"] / "data" / "images" / "loc0000")
    code = main(["explain", str(setup["model"]), str(bad), folder, str(tmp_path / "missing.jpg"),
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert "bad.jpg" in captured.err and "missing.jpg" in captured.err
    assert len(list((tmp_path / "out").glob("*.gradcam.png"))) == 2  # the folder's two views still done


def test_explain_refuses_a_non_model(tmp_path, capsys):
    assert main(["explain", str(tmp_path), "x.jpg"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_audit_command_writes_the_report(setup, tmp_path, capsys):
    code = main(["audit", str(setup["model"]), str(setup["manifest"]), "--out", str(tmp_path), "--grid", "2",
                 "--backend", "torch", "--device", "cpu", "--gradcam-images", "4", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| bottom-right corner |" in out and "grid r1c1" in out and "grid r2c2" not in out
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["n_images"] == 16 and len(data["masks"]) == 7 + 4
    assert (tmp_path / "audit.md").is_file()


def test_explain_reports_the_calibrated_probability_that_locate_reports(setup, tmp_path, capsys, make_tiny_model):
    from geospot.models.calibration import Calibration

    model = make_tiny_model(setup["cells"])
    model.calibration = Calibration(temperature=3.0, prior_weight=0.2)  # far from the raw softmax
    model_dir = model.save(tmp_path / "m")
    photo = setup["paths"][0]
    assert main(["explain", str(model_dir), photo, "--out", str(tmp_path / "e")]) == 0
    p_explain = float(capsys.readouterr().out.split("p=")[1].split()[0])
    assert main(["locate", photo, "--model", str(model_dir), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top_cells"][0]
    assert abs(p_explain - top["prob"]) < 2e-3
