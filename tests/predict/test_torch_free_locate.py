"""`geospot locate` with a frozen-encoder model runs without torch, and never uses a swapped ONNX file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geospot.cli import main
from geospot.encoders import create_encoder
from geospot.encoders.onnx_runtime import OnnxRuntime, OnnxVerificationError, onnx_path
from geospot.encoders.runtime import EncoderRuntime, export_onnx
from geospot.testing import make_fixture_dataset

SRC = str(Path(__file__).resolve().parents[2] / "src")

# Runs the CLI in a fresh interpreter; `block_torch` makes `import torch` fail as if it were not installed.
_LOCATE = """
import json, sys
if {block_torch}:
    sys.modules["torch"] = None
from geospot.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:  # the CLI's one-line errors
    code = exc.code if isinstance(exc.code, int) else 1
    if not isinstance(exc.code, int):
        print(exc.code, file=sys.stderr)
print(json.dumps({{"code": code, "torch": "torch" in sys.modules and sys.modules["torch"] is not None,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in
                                  ("pandas", "scipy", "matplotlib", "shapely", "reverse_geocoder", "sklearn"))}}),
      file=sys.stderr)
"""


def _locate(argv, block_torch=False):
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-c", _LOCATE.format(argv=argv, block_torch=block_torch)], env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.stdout, proc.stderr, json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    data = make_fixture_dataset(tmp_path_factory.mktemp("fx"), n_locations=24, views=2, size=64, seed=1)
    out = tmp_path_factory.mktemp("model") / "m"
    assert main(["train", str(data), "--out", str(out), "--encoder", "tiny", "--epochs", "3", "--quiet",
                 "--min-per-cell", "2", "--max-per-cell", "10"]) == 0
    photo = sorted((Path(data).parent / "images").rglob("*.jpg"))[0]
    return out, str(photo)


# pillow_heif too: a JPEG needs no HEIC opener (its import costs a cold start ~12 ms).
HEAVY = ("torch", "pandas", "scipy", "shapely", "reverse_geocoder", "sklearn", "matplotlib", "pillow_heif")


def test_cold_locate_imports_no_heavy_library(model, tmp_path):
    """The real command, `python -X importtime -m geospot locate`, lists every module it imports."""
    out, photo = model
    EncoderRuntime("tiny", backend="onnx")  # the export and its records exist (made once, with torch)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(PYTHONPATH=SRC, HOME=str(home))  # GEOSPOT_CACHE (conftest) keeps the export where it was
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "geospot", "locate", photo, "--model", str(out),
                           "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (home / ".cache" / "Microsoft").exists()  # ONNX Runtime's telemetry never started
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "geospot.geo.geocode" in imported and "onnxruntime" in imported  # the listing is complete
    heavy = sorted({m.split(".")[0] for m in imported} & set(HEAVY))
    assert not heavy, f"cold `geospot locate` imported {heavy}"
    (answer,) = json.loads(proc.stdout)
    assert answer["path"] == photo and -90 <= answer["lat"] <= 90 and answer["top_cells"]
    # The labels come from the NumPy outlines and GeoNames cache, as in a warm process.
    from geospot.geo.geocode import reverse_geocode

    place = reverse_geocode(answer["lat"], answer["lon"])[0]
    assert (answer["country_code"], answer["region"], answer["city"]) == (place.country_code, place.region,
                                                                        place.city)
    assert answer["countries"] and answer["countries"][0]["name"]


def test_locate_runs_without_torch_installed(model):
    out, photo = model
    EncoderRuntime("tiny", backend="onnx")
    stdout, stderr, info = _locate(["locate", photo, "--model", str(out), "--json"], block_torch=True)
    assert info["code"] == 0 and info["torch"] is False, stderr
    assert not info["heavy"], stderr
    (answer,) = json.loads(stdout)
    assert answer["path"] == photo


def test_a_swapped_onnx_file_is_refused_or_exported_again(model, capsys):
    out, photo = model
    rt = EncoderRuntime("tiny", backend="onnx")
    path = onnx_path("tiny", rt.weights_id)
    other = create_encoder("tiny")
    with __import__("torch").no_grad():
        for p in other.parameters():
            p.add_(0.05)
    export_onnx(other, path)  # another valid export of the same shape, put in its place
    with pytest.raises(OnnxVerificationError, match="refusing to use it"):
        OnnxRuntime.pretrained("tiny")

    # without torch: one clear line naming the file, exit code 2, no traceback
    stdout, stderr, info = _locate(["locate", photo, "--model", str(out)], block_torch=True)
    assert info["code"] not in (0, None) and "Traceback" not in stderr
    assert f"{path}: content (sha256" in stderr and "refusing to use it" in stderr

    # with torch: said on one line, exported again, and the answer comes from the right weights
    stdout, stderr, info = _locate(["locate", photo, "--model", str(out), "--json"])
    assert info["code"] == 0 and "exporting again" in stderr
    OnnxRuntime.pretrained("tiny")  # verified again
    rt2 = EncoderRuntime("tiny", backend="onnx")
    capsys.readouterr()
    assert "exporting" not in capsys.readouterr().err and rt2.weights_id == rt.weights_id
