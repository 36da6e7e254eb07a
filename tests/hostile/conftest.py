"""The hostile-input suite: every input an attacker, a flaky disk or a careless
server can hand geospot, regenerated here (no files checked in).

Every case asserts the same contract: no traceback, one clear line naming the
input and the reason, the rest of the batch answered, and bounded memory.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def cli(capsys, *argv) -> Outcome:
    """Run `geospot ARGV` in-process; assert the one-error-path contract on the way."""
    from geospot.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage errors and --help
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err
    return Outcome(int(code), captured.out, captured.err)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error") or ": error:" in line]


def run_subprocess(code: str, *args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Python `code` in a fresh interpreter with this checkout's geospot first on the path."""
    full_env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, timeout=timeout,
                          env=full_env)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from geospot.testing import make_fixture_dataset

    return make_fixture_dataset(tmp_path_factory.mktemp("hostile-data"), n_locations=15, views=1, size=32, seed=3)


@pytest.fixture(scope="session")
def model_dir(dataset, tmp_path_factory) -> Path:
    """A trained `tiny` model (two epochs: the suite tests failure paths, not accuracy)."""
    from geospot.data.manifest import read_manifest
    from geospot.pipeline import fit, save_model
    from geospot.train.config import TrainConfig

    root = tmp_path_factory.mktemp("hostile-model")
    out = root / "m"
    model = fit(read_manifest(dataset), encoder="tiny", cell_params={"scheme": "s2", "min_per_cell": 1,
                                                                      "max_per_cell": 4, "max_level": 20},
                config=TrainConfig(epochs=2), backend="torch", device="cpu", progress=False,
                cache_dir=root / "cache")
    save_model(model, out)
    return out


@pytest.fixture(scope="session")
def photo(dataset) -> Path:
    return dataset.parent / "images" / "loc0000" / "0.jpg"
