"""Report files and figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from geospot.eval.metrics import error_metrics, per_group_metrics, summarize_folds
from geospot.eval.report import render_markdown, to_jsonable, write_report


def _report() -> dict:
    model = error_metrics(np.array([0.5, 20.0, 300.0, 900.0]))
    model.update({"top1": np.float32(0.25), "top5": 0.75, "country_acc": 0.5})
    medoid = error_metrics(np.array([1500.0, 2000.0, 3000.0, 9000.0]))
    folds = [
        {"fold": 0, "n_train": 10, "model": {"median_km": 100.0, "acc_25km": 0.2},
         "baseline: medoid": {"median_km": 2000.0, "acc_25km": 0.0}},
        {"fold": 1, "n_train": 12, "model": {"median_km": 300.0, "acc_25km": 0.4},
         "baseline: medoid": {"median_km": 2200.0, "acc_25km": 0.0}},
    ]
    cv = {k: v for k, v in summarize_folds(folds).items() if isinstance(v, dict) and "mean" not in v}
    return {
        "title": "Test | report",
        "model": {"encoder": "efficientnet_lite0", "cells": {"scheme": "s2", "n": np.int64(42)}},
        "dataset": {"manifest": "data/manifest.csv", "n_images": 4, "n_places": np.int64(2)},
        "methods": {"model": model, "baseline: medoid": medoid},
        "folds": folds,
        "cv": cv,
        "per_country": per_group_metrics(np.array([0.5, 20.0, 300.0, 900.0]), ["FR", "FR", "US", "DE"]),
        "figures": {"error CDF": "error_cdf.png"},
        "notes": ["grouped by location_id", "nan is null", float("nan")],
    }


def test_write_report_files_and_json_roundtrip(tmp_path):
    report = _report()
    json_path, md_path = write_report(report, tmp_path / "out")
    assert json_path.name == "report.json" and md_path.name == "report.md"
    data = json.loads(json_path.read_text())
    assert data["title"] == "Test | report"
    assert data["dataset"]["n_places"] == 2
    assert data["methods"]["model"]["top1"] == 0.25
    assert data["notes"][2] is None  # NaN -> null, strict JSON
    assert list(data["methods"]) == ["model", "baseline: medoid"]  # order kept
    assert data["per_country"]["FR"]["n"] == 2


def test_markdown_tables(tmp_path):
    _, md_path = write_report(_report(), tmp_path)
    md = md_path.read_text()
    assert md.startswith("# Test | report\n")
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| method | n | median km"))
    assert "GeoScore" in header and "cell top-1" in header and "country acc" in header
    model_row = next(line for line in lines if line.startswith("| model |"))
    # n, median 160.0, mean 305.1, acc@1 25%, acc@25 50%, acc@200 50%, acc@750 75%, acc@2500 100%
    assert model_row.startswith("| model | 4 | 160.0 | 305.1 | 25.0% | 50.0% | 50.0% | 75.0% | 100.0% |")
    assert model_row.endswith("| 25.0% | 75.0% | 50.0% |")
    medoid_row = next(line for line in lines if line.startswith("| baseline: medoid |"))
    assert medoid_row.endswith("| — | — | — |")  # no cell/country metrics for a baseline
    # Cross-validation: mean ± std (ddof=0) per method.
    assert "| model | 200.0 ± 100.0 | 30.0 ± 10.0% |" in md
    assert "| 1 | baseline: medoid | 2,200.0 | 0.0% |" in md
    # Per country, largest first; figures linked; notes listed.
    fr = lines.index(next(line for line in lines if line.startswith("| FR |")))
    us = lines.index(next(line for line in lines if line.startswith("| US |")))
    assert fr < us
    assert "![error CDF](error_cdf.png)" in md
    assert "- grouped by location_id" in md
    assert "Test \\| report" not in md.splitlines()[0]


def test_folds_with_methods_key_and_accuracy_dicts():
    # The shape cross-validation produces: metrics under "methods", country_acc as accuracy()'s dict.
    fold_metrics = [{"median_km": 10.0, "country_acc": {"accuracy": 0.5, "n": 4, "n_excluded": 0}},
                    {"median_km": 30.0, "country_acc": {"accuracy": 0.7, "n": 4, "n_excluded": 1}}]
    folds = [{"fold": i, "n_cells": 9, "methods": {"model": m}} for i, m in enumerate(fold_metrics)]
    report = {"title": "cv", "methods": {"model": fold_metrics[0]}, "folds": folds,
              "cv": {"model": summarize_folds(fold_metrics)}}
    md = render_markdown(to_jsonable(report))
    assert "| 1 | model | 30.0 | 70.0% |" in md
    assert "| model | 20.0 ± 10.0 | 60.0 ± 10.0% |" in md
    assert "| model | 10.0 | 50.0% |" in md


def test_markdown_is_deterministic_and_minimal():
    r = _report()
    assert render_markdown(to_jsonable(r)) == render_markdown(to_jsonable(r))
    md = render_markdown({"title": "t", "methods": {"m": {"median_km": 1234.56}}})
    assert "| m | 1,234.6 |" in md
    assert "Cross-validation" not in md and "Per country" not in md and "Figures" not in md


def test_to_jsonable_rejects_unknown_types():
    assert to_jsonable({"a": (np.float64(1.5), np.bool_(True)), "b": np.arange(2)}) == {"a": [1.5, True], "b": [0, 1]}
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        to_jsonable({"x": object()})


def test_confusion_matrix_csv_and_png(tmp_path):
    import pandas as pd

    from geospot.eval.plots import confusion_matrix

    true = ["US", "US", "US", "FR", "FR", "DE", None]
    pred = ["US", "US", "FR", "FR", "DE", "DE", "US"]
    df = confusion_matrix(true, pred, tmp_path / "cm.png", tmp_path / "cm.csv", max_labels=2)
    assert list(df.index) == ["US", "FR", "DE", "(unknown)"]
    assert df.loc["US", "US"] == 2 and df.loc["US", "FR"] == 1 and df.loc["(unknown)", "US"] == 1
    assert int(df.to_numpy().sum()) == len(true)
    csv = pd.read_csv(tmp_path / "cm.csv", index_col=0)
    assert list(csv.index) == list(df.index) and list(csv.columns) == list(df.columns)
    np.testing.assert_array_equal(csv.to_numpy(), df.to_numpy())
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Fixed label list: unlisted labels land in "(other)", nothing lost.
    df2 = confusion_matrix(true, pred, tmp_path / "b.png", tmp_path / "b.csv", labels=["US", "FR"])
    assert list(df2.index) == ["US", "FR", "(other)"]
    assert int(df2.to_numpy().sum()) == len(true)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix(true, pred[:2], tmp_path / "c.png", tmp_path / "c.csv")


def test_error_cdf_png(tmp_path):
    from geospot.eval.plots import error_cdf

    rng = np.random.default_rng(0)
    out = error_cdf({"model": rng.exponential(300, 100), "baseline: medoid": np.array([0.0, 2000.0, 5000.0])},
                    tmp_path / "sub" / "cdf.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'empty' has no errors"):
        error_cdf({"empty": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-finite"):
        error_cdf({"bad": [np.nan]}, tmp_path / "x.png")


def test_plots_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, geospot.eval.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
