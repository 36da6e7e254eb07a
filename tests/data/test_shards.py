"""Sharded datasets: img2dataset/WebDataset tars and zips of JPEGs read in place as manifests."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geospot.cli import main
from geospot.data.archives import read_member, split_virtual
from geospot.data.images import ImageError, open_image
from geospot.data.manifest import ManifestError, read_manifest
from geospot.data.shards import ShardSpec, expand_pattern, is_shard_spec, read_shards
from geospot.data.shards_write import write_shards
from geospot.testing import make_fixture_dataset


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB").save(buf, "JPEG")
    return buf.getvalue()


def _tar(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_fixture_dataset(tmp_path_factory.mktemp("ds"), n_locations=12, views=2, size=32)


def test_manifest_to_shards_and_back(dataset, tmp_path):
    m = read_manifest(dataset)
    res = write_shards(m, tmp_path / "sh", per_shard=10)
    assert res.written == 24 and not res.errors and [p.name for p in res.shards] == ["00000.tar", "00001.tar",
                                                                                     "00002.tar"]
    for spec in (tmp_path / "sh" / "{00000..00002}.tar", tmp_path / "sh" / "*.tar", res.descriptor):
        s = read_manifest(spec)
        assert len(s) == 24 and not s.problems
        np.testing.assert_array_equal(s.lat, m.lat)
        np.testing.assert_array_equal(s.lon, m.lon)
        assert s.df["location_id"].tolist() == m.df["location_id"].tolist()  # kept from the metadata
        assert s.df["split"].tolist() == m.df["split"].tolist()
    # pixels identical to the original files: bytes are stored, never re-encoded
    for orig, virt in zip(m.paths[:5], s.paths[:5]):
        assert split_virtual(virt) is not None
        np.testing.assert_array_equal(np.asarray(open_image(orig)), np.asarray(open_image(virt)))
    # deterministic: writing again gives identical shards
    again = write_shards(m, tmp_path / "sh2", per_shard=10)
    assert [p.read_bytes() for p in again.shards] == [p.read_bytes() for p in res.shards]


def test_img2dataset_tar_names_and_per_member_errors(tmp_path):
    files = {
        "000000000.jpg": _jpeg(0), "000000000.txt": b"a caption, not coordinates",
        "000000000.json": json.dumps({"key": "000000000", "latitude": 45.1, "longitude": 15.2,
                                      "url": "http://x/0.jpg", "exif": "x" * 5000}).encode(),
        "000000001.jpg": _jpeg(1), "000000001.json": json.dumps({"LAT": "-33.9", "Lng": 151.2}).encode(),
        "000000002.jpg": _jpeg(2), "000000002.json": json.dumps({"caption": "no gps"}).encode(),
        "000000003.jpg": _jpeg(3), "000000003.json": json.dumps({"lat": 123.0, "lon": 1.0}).encode(),
        "000000004.jpg": _jpeg(4), "000000004.txt": b"10.5 -20.25",
        "000000005.json": json.dumps({"lat": 1, "lon": 2}).encode(),  # an image missing
        "000000006.jpg": b"", "000000006.json": json.dumps({"lat": 1, "lon": 2}).encode(),
    }
    _tar(tmp_path / "00000.tar", files)
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "00000.tar")
    text = str(info.value)
    assert "00000.tar#000000002.jpg: no metadata" not in text  # the .json is there, it lacks coordinates
    assert "00000.tar#000000002.jpg: lat is empty" in text
    assert "00000.tar#000000003.jpg: lat 123.0 outside [-90, 90]" in text
    assert "00000.tar#000000005: metadata without an image" in text
    assert "00000.tar#000000006.jpg: empty file (0 bytes)" in text
    m = read_shards(tmp_path / "00000.tar", on_error="drop")
    assert m.df["key"].tolist() == ["000000000", "000000001", "000000004"]
    np.testing.assert_allclose(m.lat, [45.1, -33.9, 10.5])
    np.testing.assert_allclose(m.lon, [15.2, 151.2, -20.25])
    assert m.df.loc[0, "url"] == "http://x/0.jpg" and "exif" not in m.df.columns  # long fields dropped
    assert len(m.problems) == 5  # 002: lat and lon empty
    assert open_image(m.paths[0]).size == (32, 24)


def test_descriptor_maps_nested_keys(tmp_path):
    _tar(tmp_path / "a.tar", {"x/p1.jpg": _jpeg(0), "x/p1.json": json.dumps({"gps": {"la": 1.5, "lo": 2.5},
                                                                              "place": "P"}).encode()})
    (tmp_path / "d.shards.json").write_text(json.dumps({"shards": "a.tar", "lat": "gps.la", "lon": "gps.lo",
                                                        "location_id": "place"}))
    m = read_manifest(tmp_path / "d.shards.json")
    assert (m.lat[0], m.lon[0], m.df.loc[0, "location_id"], m.df.loc[0, "key"]) == (1.5, 2.5, "P", "x/p1")


def test_zip_with_csv_inside_and_beside(tmp_path):
    with zipfile.ZipFile(tmp_path / "in.zip", "w") as z:
        z.writestr("imgs/a1.jpg", _jpeg(0))
        z.writestr("imgs/a2.jpg", _jpeg(1))
        z.writestr("meta.csv", "filename,latitude,longitude\na1.jpg,1,2\na2.jpg,3,4\n")
        z.writestr("__MACOSX/imgs/._a1.jpg", b"junk")
    m = read_manifest(tmp_path / "in.zip")
    assert m.paths[0].endswith("in.zip#imgs/a1.jpg") and m.lat.tolist() == [1.0, 3.0]
    # OSV-5M: zips of <id>.jpg with one CSV of all ids beside them (some ids are in other zips)
    (tmp_path / "osv").mkdir()
    for k in range(2):
        with zipfile.ZipFile(tmp_path / "osv" / f"{k:02d}.zip", "w") as z:
            z.writestr(f"{k:02d}/{100 + k}.jpg", _jpeg(k))
            z.writestr(f"{k:02d}/{200 + k}.jpg", _jpeg(k + 5))
    pd.DataFrame({"id": [100, 101, 200, 999], "latitude": [1, 2, 3, 4], "longitude": [5, 6, 7, 8],
                  "country": ["HR", "FR", "US", "ZA"]}).to_csv(tmp_path / "osv" / "train.csv", index=False)
    (tmp_path / "osv" / "train.shards.json").write_text(json.dumps({"shards": "*.zip", "metadata": "train.csv"}))
    m = read_shards(tmp_path / "osv" / "train.shards.json", on_error="drop")
    assert [p.rsplit("#", 1)[1] for p in m.paths] == ["00/100.jpg", "00/200.jpg", "01/101.jpg"]
    assert m.lat.tolist() == [1.0, 3.0, 2.0] and m.df["country"].tolist() == ["HR", "US", "FR"]
    assert [str(p) for p in m.problems] == [f"{tmp_path / 'osv' / 'train.shards.json'}: "
                                            f"{tmp_path / 'osv' / '01.zip'}#01/201.jpg: no metadata with "
                                            f"coordinates (no table row, no .json, no 'lat lon' .txt)"]


def test_patterns_and_damaged_archives(tmp_path):
    for i in range(3):
        _tar(tmp_path / f"s{i:03d}.tar", {f"{i}.jpg": _jpeg(i), f"{i}.json": b'{"lat": 1, "lon": 2}'})
    assert [p.rsplit("/", 1)[1] for p in expand_pattern(str(tmp_path / "s{000..002}.tar"))] == \
        ["s000.tar", "s001.tar", "s002.tar"]
    assert expand_pattern(["s{001,000}.tar", "s*.tar"], base=tmp_path)[:2] == \
        [str(tmp_path / "s001.tar"), str(tmp_path / "s000.tar")]
    assert is_shard_spec("x/{0..9}.tar") and is_shard_spec("a.zip") and is_shard_spec("d.shards.json")
    assert not is_shard_spec("m.csv") and not is_shard_spec("a.tar#b.jpg")
    # a truncated shard keeps its complete members; a missing one is reported; the rest is read
    data = (tmp_path / "s002.tar").read_bytes()
    _tar(tmp_path / "s002.tar", {"2.jpg": _jpeg(2), "2.json": b'{"lat": 1, "lon": 2}', "3.jpg": _jpeg(3) * 20})
    full = (tmp_path / "s002.tar").read_bytes()
    (tmp_path / "s002.tar").write_bytes(full[: len(data) + 2000])
    (tmp_path / "bad.tar.gz").write_bytes(b"x")
    m = read_shards(ShardSpec((str(tmp_path / "s{000..003}.tar"), str(tmp_path / "bad.tar.gz"))), on_error="drop")
    assert len(m) == 3
    msgs = "\n".join(map(str, m.problems))
    assert "s002.tar: truncated: 3.jpg cut short after 2 complete files" in msgs and "s003.tar: archive not found" in msgs
    assert "bad.tar.gz: compressed tar cannot be read at random" in msgs
    with pytest.raises(ImageError, match="no file 'nope.jpg'"):
        open_image(str(tmp_path / "s000.tar") + "#nope.jpg")
    assert read_member(str(tmp_path / "s000.tar") + "#0.json") == b'{"lat": 1, "lon": 2}'
    (tmp_path / "garbage.tar").write_bytes(b"not a tar at all " * 100)
    with pytest.raises(ManifestError, match="garbage.tar: not a readable"):
        read_shards(tmp_path / "garbage.tar")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_index_matches_tarfile(tmp_path, fmt):
    """Our fast header scan finds what tarfile finds: long names (GNU/PAX), ustar prefixes, dirs skipped."""
    from geospot.data.archives import list_members

    rng = np.random.default_rng(fmt)
    with tarfile.open(tmp_path / "t.tar", "w", format=fmt) as tar:
        for i in range(30):
            name = ("a" * 80 + "/" + "b" * 60 + f"/{i}.jpg") if fmt == tarfile.USTAR_FORMAT else \
                ("d" * int(rng.integers(1, 150)) + f"/é{i}.jpg")
            data = rng.bytes(int(rng.integers(0, 2000)))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            if i == 3:
                d = tarfile.TarInfo("dir")
                d.type = tarfile.DIRTYPE
                tar.addfile(d)
    with tarfile.open(tmp_path / "t.tar") as tar:
        ref = [(m.name, m.size, m.offset_data) for m in tar if m.isfile()]
    members, damage = list_members(tmp_path / "t.tar")
    assert damage is None and [(m.name, m.size, m.offset) for m in members] == ref


def test_cli_shards_then_embed_from_shards(dataset, tmp_path, capsys):
    out = tmp_path / "sh"
    assert main(["data", "shards", str(dataset), "--out", str(out), "--per-shard", "8", "--split", "train"]) == 0
    assert "images in 2 shards" in capsys.readouterr().out
    assert main(["embed", str(out / "dataset.shards.json"), "--encoder", "tiny", "--quiet",
                 "--cache", str(tmp_path / "cache")]) == 0
    assert "embedded" in capsys.readouterr().out


def test_csv_manifest_of_virtual_paths(dataset, tmp_path):
    """A shard manifest written as CSV (e.g. by `geospot data split`) reads back, members checked."""
    write_shards(read_manifest(dataset), tmp_path / "sh", per_shard=30)
    m = read_manifest(tmp_path / "sh" / "00000.tar")
    m.write(tmp_path / "m.csv")
    assert "sh/00000.tar#" in (tmp_path / "m.csv").read_text()  # relative to the CSV's folder
    back = read_manifest(tmp_path / "m.csv")
    assert back.paths == m.paths
    df = pd.read_csv(tmp_path / "m.csv")
    df.loc[0, "path"] = "sh/00000.tar#missing.jpg"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ManifestError, match=r"bad.csv row 2: no file 'missing.jpg' in .*00000.tar"):
        read_manifest(tmp_path / "bad.csv")
