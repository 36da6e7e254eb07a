"""Caches and state files: corrupt, deeply nested, or pointing outside their folder."""
from __future__ import annotations

import json

import pytest
from hostile_util import cli, error_lines


def test_corrupt_cache_files_are_recomputed_not_trusted(dataset, tmp_path, capsys):
    """The per-photo cache: damaged settings or segments never give wrong numbers or a traceback."""
    cache = tmp_path / "cache"
    argv = ["embed", dataset, "--encoder", "tiny", "--quiet", "--cache", cache, "--backend", "torch",
            "--device", "cpu"]
    assert cli(capsys, *argv).code == 0
    (settings,) = cache.rglob("settings.json")
    for garbage in (b"{not json", b"[" * 100_000, b"\xff\xfe", b'"a string"'):
        settings.write_bytes(garbage)
        r = cli(capsys, *argv)
        assert r.code == 0 and "embedded 15 of 15" in r.out and "Traceback" not in r.err
    for seg in cache.rglob("seg-*.keys"):
        seg.write_bytes(seg.read_bytes()[:-7])  # a torn write
    r = cli(capsys, *argv)
    assert r.code == 0 and "embedded 15 of 15" in r.out and "Traceback" not in r.err


def test_cache_root_that_is_a_file_is_one_line(dataset, tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("GEOSPOT_CACHE", str(not_a_folder))
    r = cli(capsys, "embed", dataset, "--encoder", "tiny", "--quiet")
    assert r.code == 2
    lines = error_lines(r.err)
    assert len(lines) == 1 and "GEOSPOT_CACHE" in lines[0] and str(not_a_folder) in lines[0]


@pytest.fixture(scope="module")
def finetuned_run(model_dir, dataset, tmp_path_factory):
    from geospot.data.manifest import read_manifest
    from geospot.pipeline import load_model
    from geospot.train.finetune import FinetuneConfig, finetune

    run_dir = tmp_path_factory.mktemp("ft") / "run"
    config = FinetuneConfig(unfreeze=1, epochs=1, batch_size=8, device="cpu", workers=1)
    finetune(load_model(model_dir), read_manifest(dataset), config, run_dir=run_dir, progress=False)
    return run_dir, config


STATE_EDITS = {
    "not_json": lambda s, d: "{broken",
    "deep": lambda s, d: "[" * 100_000,
    "weights_parent": lambda s, d: json.dumps(dict(s, weights="../../etc/passwd")),
    "weights_absolute": lambda s, d: json.dumps(dict(s, weights=str(d / "x.safetensors"))),
    "weights_number": lambda s, d: json.dumps(dict(s, weights=7)),
}


@pytest.mark.parametrize("case", sorted(STATE_EDITS))
def test_hostile_finetune_state_is_refused(case, finetuned_run, model_dir, dataset, tmp_path):
    import shutil

    from geospot.data.manifest import read_manifest
    from geospot.pipeline import load_model
    from geospot.train.finetune import STATE_FILE, finetune

    src, config = finetuned_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    state = json.loads((run_dir / STATE_FILE).read_text())
    (run_dir / STATE_FILE).write_text(STATE_EDITS[case](state, tmp_path))
    with pytest.raises(ValueError, match=r"finetune-state\.json") as info:
        finetune(load_model(model_dir), read_manifest(dataset), config, run_dir=run_dir, progress=False)
    assert "delete" in str(info.value)  # says how to get going again


def test_state_weights_symlinked_outside_are_refused(finetuned_run, model_dir, dataset, tmp_path):
    import shutil

    from geospot.data.manifest import read_manifest
    from geospot.pipeline import load_model
    from geospot.train.finetune import STATE_FILE, finetune

    src, config = finetuned_run
    run_dir = tmp_path / "run"
    shutil.copytree(src, run_dir)
    name = json.loads((run_dir / STATE_FILE).read_text())["weights"]
    outside = tmp_path / "elsewhere.safetensors"
    (run_dir / name).rename(outside)
    (run_dir / name).symlink_to(outside)
    with pytest.raises(ValueError, match="points outside"):
        finetune(load_model(model_dir), read_manifest(dataset), config, run_dir=run_dir, progress=False)


def test_encoders_download_offline_is_one_line(monkeypatch, tmp_path, capsys):
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GEOSPOT_CACHE", str(tmp_path))
    r = cli(capsys, "encoders", "--download", "clip-vit-b32")
    assert r.code == 2
    lines = error_lines(r.err)
    assert len(lines) == 1 and ("download failed" in lines[0] or "cannot reach" in lines[0]) and "huggingface" in lines[0]
