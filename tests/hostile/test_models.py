"""Hostile model directories in `locate` and `eval`: one line naming the file, nothing allocated first."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hostile_util import cli, error_lines
from safetensors.torch import load_file, save_file


def _edit(model_dir, tmp_path, fn, name="bad"):
    out = tmp_path / name
    shutil.copytree(model_dir, out)
    fn(out)
    return out


def _config(fn):
    def apply(d):
        c = json.loads((d / "config.json").read_text())
        fn(c)
        (d / "config.json").write_text(json.dumps(c))
    return apply


def _nan_head(d):
    state = load_file(str(d / "head.safetensors"))
    state["out.weight"][0, 0] = float("nan")
    save_file(state, str(d / "head.safetensors"))


def _deep_json(d):
    (d / "config.json").write_text("[" * 100_000 + "]" * 100_000)


def _corrupt_places(d):
    data = (d / "train_places.safetensors").read_bytes()
    (d / "train_places.safetensors").write_bytes(data[: len(data) // 2])


def _places_out_of_range(d):
    save_file({"lat": torch.tensor([95.0]), "lon": torch.tensor([0.0])}, str(d / "train_places.safetensors"))


def _garbage_header(d):
    (d / "head.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")


CASES = {
    # name: (edit, words the one line must hold)
    "preprocess_size_100000": (_config(lambda c: c["encoder"]["preprocess"].update(size=100_000, resize=100_000)),
                               "preprocess"),
    "preprocess_size_other_encoder": (_config(lambda c: c["encoder"]["preprocess"].update(size=32, resize=32)),
                                      "preprocess.size"),
    "preprocess_bad_mean": (_config(lambda c: c["encoder"]["preprocess"].update(mean=[0.5])), "preprocess"),
    "preprocess_not_object": (_config(lambda c: c["encoder"].update(preprocess=[1, 2])), "preprocess"),
    "head_hidden_500000": (_config(lambda c: c["head"].update(hidden=500_000)), "head.safetensors"),
    "head_embed_dim_huge": (_config(lambda c: c["head"].update(embed_dim=10**9)), "head.safetensors"),
    "head_num_cells_negative": (_config(lambda c: c["head"].update(num_cells=-3)), "config.json"),
    "head_hidden_text": (_config(lambda c: c["head"].update(hidden="many")), "head.hidden"),
    "unknown_encoder": (_config(lambda c: c["encoder"].update(name="resnet-9000")), "unknown encoder"),
    "mask_garbage": (_config(lambda c: c.update(mask={"boxes": [[2, 2, "x"]]})), "mask"),
    "mask_not_object": (_config(lambda c: c.update(mask=[1])), "mask"),
    "nan_head_weights": (_nan_head, "NaN"),
    "deep_json": (_deep_json, "nested"),
    "config_not_json": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00garbage"), "config.json"),
    "corrupt_train_places": (_corrupt_places, "train_places.safetensors"),
    "train_places_out_of_range": (_places_out_of_range, "train_places.safetensors"),
    "head_header_claims_a_terabyte": (_garbage_header, "head.safetensors"),
    "cells_missing": (lambda d: (d / "cells.json").unlink(), "cells.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_locate_refuses_with_one_line(case, model_dir, photo, tmp_path, capsys):
    edit, words = CASES[case]
    bad = _edit(model_dir, tmp_path, edit)
    r = cli(capsys, "locate", photo, "--model", bad)
    assert r.code == 2
    lines = error_lines(r.err)
    assert len(lines) == 1 and words in lines[0] and str(bad) in lines[0], r.err


@pytest.mark.parametrize("case", ["head_hidden_500000", "nan_head_weights", "deep_json", "corrupt_train_places",
                                  "preprocess_size_100000", "unknown_encoder", "mask_garbage"])
def test_eval_refuses_with_one_line(case, model_dir, dataset, tmp_path, capsys):
    edit, words = CASES[case]
    bad = _edit(model_dir, tmp_path, edit)
    r = cli(capsys, "eval", bad, dataset, "--quiet")
    assert r.code == 2
    lines = error_lines(r.err)
    assert len(lines) == 1 and words in lines[0], r.err


def test_shapes_are_checked_before_anything_is_allocated(model_dir, tmp_path, monkeypatch):
    """config.json asks for a 10^9-unit hidden layer: the header check must refuse it before the head is built."""
    from geospot.models import head
    from geospot.models.checkpoint import CheckpointError, GeoModel

    built = []
    real = head.GeoCellHead  # GeoModel.load imports it from here when it builds the head
    monkeypatch.setattr(head, "GeoCellHead", lambda *a, **k: built.append(a) or real(*a, **k))
    bad = _edit(model_dir, tmp_path, _config(lambda c: c["head"].update(hidden=10**9)))
    with pytest.raises(CheckpointError, match="does not match the head"):
        GeoModel.load(bad)
    assert built == []


def test_stale_temp_folders_of_a_killed_save_are_cleaned(model_dir, tmp_path):
    from geospot.models.checkpoint import GeoModel

    model = GeoModel.load(model_dir)
    target = tmp_path / "m"
    dead = tmp_path / ".m.tmp-p999999999-abcd"  # pid that cannot exist: the save was killed
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    live = tmp_path / ".m.tmp-p1-abcd"  # pid 1 is alive: another save in progress, left alone
    live.mkdir()
    model.save(target)
    assert not dead.exists() and live.exists()
    assert (target / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-p") and p != live]


def test_nan_weights_never_reach_an_answer(model_dir, tmp_path):
    from geospot.models.checkpoint import CheckpointError, GeoModel

    with pytest.raises(CheckpointError, match="NaN"):
        GeoModel.load(_edit(model_dir, tmp_path, _nan_head))
    assert np.isfinite(GeoModel.load(model_dir).predict_proba(np.ones((1, 32), np.float32))).all()
