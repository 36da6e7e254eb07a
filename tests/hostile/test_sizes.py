"""Sizes and formats: extreme aspect ratios, bomb headers, truncated HEIC, all with bounded memory."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_util import cli, run_subprocess
from PIL import Image

# Peak RSS a whole batch of hostile images may add to the process (measured: < 30 MB with the fixes;
# the 20000 x 1 strip alone took 5.7 GB before them).
MEMORY_BOUND_MB = 200

_DECODE_ALL = r"""
import resource, sys
from geospot.encoders.base import Preprocess
from geospot.encoders.embed import prepare_image
pre = Preprocess(size=224, resize=256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        arr = prepare_image(path, pre)
        assert arr.shape == (3, 224, 224), arr.shape
        print("ok", path)
    except Exception as exc:
        print("refused", path, type(exc).__name__, str(exc)[:200])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_DELTA_KB", after - before)
"""


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    d = tmp_path_factory.mktemp("strips")
    out = {}
    for name, size in {"wide": (20000, 1), "tall": (1, 100000), "thin": (3, 60000), "huge_wide": (100000, 1)}.items():
        out[name] = d / f"{name}.png"
        Image.new("RGB", size, (200, 30, 30)).save(out[name])
    return out


def test_extreme_aspect_ratios_decode_in_bounded_memory(strips):
    r = run_subprocess(_DECODE_ALL, *strips.values())
    text = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert text.count("ok ") == len(strips), text
    delta_mb = int(text.split("PEAK_DELTA_KB")[1]) / 1024
    assert delta_mb < MEMORY_BOUND_MB, f"peak RSS grew by {delta_mb:.0f} MB"


def test_a_138_byte_strip_is_tiny_on_disk(strips):
    assert strips["wide"].stat().st_size < 1000  # the point of the attack: tiny file, huge resize


def test_locate_answers_strips_and_refuses_bombs(strips, tmp_path, model_dir, capsys):
    from geospot.testing import make_bad_files

    bad = make_bad_files(tmp_path / "bad")
    r = cli(capsys, "locate", strips["wide"], strips["tall"], bad["bomb_png"], bad["big_header_png"],
            "--model", model_dir, "--json")
    answers = json.loads(r.out)
    assert r.code == 1 and len(answers) == 4
    assert "lat" in answers[0] and "lat" in answers[1]
    assert "too many pixels" in answers[2]["error"]
    assert "truncated" in answers[3]["error"]  # 36 MP header, almost no data: refused, never half-painted


def _heic(path, size=(96, 64)):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=80)
    return path.read_bytes()


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_heic_is_refused(tmp_path, keep):
    from geospot.data.images import ImageError, open_image

    data = _heic(tmp_path / "full.heic")
    cut = tmp_path / "cut.HEIC"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageError, match="truncated or incomplete HEIC"):
        open_image(cut)
    assert open_image(tmp_path / "full.heic").size == (96, 64)


def test_data_check_counts_a_truncated_heic_as_undecodable(tmp_path, capsys):
    data = _heic(tmp_path / "a.heic")
    (tmp_path / "b.heic").write_bytes(data[: len(data) // 2])
    m = tmp_path / "m.csv"
    m.write_text("path,lat,lon\na.heic,45.0,16.0\nb.heic,45.1,16.1\n", encoding="utf-8")
    r = cli(capsys, "data", "check", m, "--json", "--quiet")
    assert r.code == 1
    assert "b.heic" in r.out + r.err and "truncated or incomplete HEIC" in r.out + r.err


def test_memory_error_is_a_sentence(tmp_path, monkeypatch):
    from geospot.cli.errors import describe

    assert describe(MemoryError()).startswith("out of memory")
    assert describe(RecursionError()).startswith("input nested too deeply")


def test_out_of_memory_while_preprocessing_names_the_file(tmp_path, photo, monkeypatch):
    """Under a memory cap the reason used to be an empty `MemoryError: `."""
    from geospot.encoders import embed
    from geospot.encoders.base import Preprocess

    def no_memory(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(embed, "prepare_image", no_memory)
    loader = embed._Loader([str(photo)], Preprocess(size=32, resize=32), None, workers=0, window=1)
    arr, reason = loader.load(0)
    assert arr is None and reason == f"{photo}: not enough memory to decode and preprocess the image"
