"""Integration: a model that reads a planted uploader stamp must be caught by the audit.

The images are pure noise except for a fake uploader name in the bottom-right
corner, and the name is tied to the place's cell: the only way to score is to
read the stamp. A tiny encoder fine-tuned end to end learns it; the audit must
flag the bottom-right corner and Grad-CAM must look there.
"""
from __future__ import annotations

import json

import pytest

from geospot.data.manifest import read_manifest
from geospot.explain.audit import audit, write_audit_report
from geospot.train.finetune import FinetuneConfig, finetune

BR = "bottom-right corner"


@pytest.fixture(scope="module")
def cheating_model(planted_dataset, make_tiny_model, tmp_path_factory):
    # No augmentation: with ~100 images a few epochs must reliably learn the stamp.
    config = FinetuneConfig(unfreeze=3, epochs=6, lr_head=1e-2, lr_encoder=1e-2, batch_size=16,
                            crop_scale=(1.0, 1.0), jitter=0.0, loss="ce", device="cpu")
    model = make_tiny_model(planted_dataset["cells"])
    return finetune(model, read_manifest(planted_dataset["train"]), config,
                    tmp_path_factory.mktemp("run"), progress=False)


@pytest.fixture(scope="module")
def audit_result(cheating_model, planted_dataset):
    return audit(cheating_model, read_manifest(planted_dataset["test"]), backend="torch", device="cpu",
                 gradcam_images=32, progress=False)


def test_model_learned_the_stamp(audit_result):
    # Otherwise the rest of this file tests nothing: the cheat must work on clean stamped images.
    assert audit_result["baseline"]["cell_top1"] >= 0.7


def test_audit_flags_the_bottom_right_corner(audit_result):
    rows = {r["name"]: r for r in audit_result["masks"]}
    br = rows[BR]
    assert BR in audit_result["flagged"]
    assert audit_result["flagged"][0] == BR  # the worst offender
    assert br["area"] == pytest.approx(0.0625)
    assert br["rel_drop"] >= 0.3
    assert br["excess_drop"] >= 5.0  # far more than its 6 % share of the image
    assert br["metrics"]["cell_top1"] < audit_result["baseline"]["cell_top1"] - 0.3
    # Regions without the stamp cost little: the other corners are not flagged.
    for name in ("top-left corner", "top-right corner", "bottom-left corner", "top strip"):
        assert not rows[name]["flagged"], name
        assert rows[name]["excess_drop"] < br["excess_drop"] / 2, name
    assert "SHORTCUT" in audit_result["verdict"] and BR in audit_result["verdict"]


def test_gradcam_mass_sits_on_the_stamp(audit_result):
    rows = {r["name"]: r for r in audit_result["masks"]}
    br = rows[BR]
    assert audit_result["gradcam"]["n_images"] == 24  # every test image (gradcam_images=32)
    # The corner is ~5 % of the network's view; the model puts several times that share of its evidence there.
    assert br["gradcam_mass"] >= 3.0 * br["view_area"]
    assert br["gradcam_mass"] > rows["top-left corner"]["gradcam_mass"]


def test_report_files(audit_result, tmp_path):
    written = write_audit_report(audit_result, tmp_path)
    print((tmp_path / "audit.md").read_text())
    md = (tmp_path / "audit.md").read_text()
    assert "SHORTCUT" in md and "data:image/png;base64," in md and "mean_gradcam.png" in md
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["flagged"][0] == BR
    assert len(data["gradcam"]["mean_16x16"]) == 16
    for key in ("mean_gradcam", "gradcam_examples", "occlusion_grid"):
        assert written[key].is_file()
