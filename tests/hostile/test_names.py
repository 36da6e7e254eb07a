"""Names: non-UTF-8 file names, broken links, FIFOs, case of extensions."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from hostile_util import cli, error_lines

NON_UTF8 = os.fsdecode(b"gps-\xe9.jpg")  # Latin-1 name on a UTF-8 system: a surrogate in Python


@pytest.fixture
def odd_folder(tmp_path, photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo, folder / "ok.jpg")
    try:
        shutil.copy(photo, os.path.join(folder, NON_UTF8))
    except (UnicodeEncodeError, OSError):
        pytest.skip("this file system refuses non-UTF-8 names")
    return folder


def test_locate_answers_a_non_utf8_name_and_the_rest(odd_folder, model_dir, capsys):
    r = cli(capsys, "locate", odd_folder, "--model", model_dir, "--json")
    assert r.code == 0, r.err
    answers = json.loads(r.out)
    assert len(answers) == 2 and all("lat" in a for a in answers)
    assert any("gps-" in a["path"] for a in answers)


def test_locate_text_output_prints_the_undecodable_name(odd_folder, model_dir, capsys):
    r = cli(capsys, "locate", odd_folder, "--model", model_dir)
    assert r.code == 0 and r.out.count("top cells:") == 2


def test_import_exif_names_the_file_and_keeps_going(odd_folder, tmp_path, capsys):
    out = tmp_path / "m.csv"
    r = cli(capsys, "data", "import", "exif", odd_folder, "--out", out, "--quiet")
    # fixture photos carry no GPS: both are listed, the non-UTF-8 one with its own reason
    assert r.code == 2 and "no usable GPS" in r.err
    assert "not valid UTF-8" in r.err and "gps-" in r.err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_folder_scan_reports_broken_links_and_fifos(tmp_path, photo, model_dir, capsys):
    folder = tmp_path / "scan"
    folder.mkdir()
    shutil.copy(photo, folder / "good.jpg")
    os.symlink(tmp_path / "gone.jpg", folder / "dangling.jpg")
    os.mkfifo(folder / "pipe.jpg")  # opening it would block the batch forever
    r = cli(capsys, "locate", folder, "--model", model_dir, "--json")
    answers = {os.path.basename(a["path"]): a for a in json.loads(r.out)}
    assert r.code == 1
    assert "lat" in answers["good.jpg"]
    assert "broken symbolic link" in answers["dangling.jpg"]["error"]
    assert "FIFO" in answers["pipe.jpg"]["error"]


def test_fifo_named_directly_is_refused(tmp_path, model_dir, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs")
    os.mkfifo(tmp_path / "p.jpg")
    r = cli(capsys, "locate", tmp_path / "p.jpg", "--model", model_dir, "--json")
    assert r.code == 1 and "FIFO" in json.loads(r.out)[0]["error"]


def test_glob_matches_extensions_in_any_case(tmp_path, photo, model_dir, capsys):
    folder = tmp_path / "iphone"
    folder.mkdir()
    shutil.copy(photo, folder / "IMG_0001.JPG")
    shutil.copy(photo, folder / "img_0002.jpg")
    r = cli(capsys, "locate", str(folder / "*.jpg"), "--model", model_dir, "--json")
    assert r.code == 0 and len(json.loads(r.out)) == 2


def test_import_exif_lists_broken_links(tmp_path, photo, capsys):
    folder = tmp_path / "imp"
    folder.mkdir()
    shutil.copy(photo, folder / "a.jpg")
    os.symlink(tmp_path / "missing.jpg", folder / "b.jpg")
    r = cli(capsys, "data", "import", "exif", folder, "--out", tmp_path / "o.csv", "--quiet")
    assert r.code == 2 and "b.jpg: broken symbolic link" in r.err
    assert len(error_lines(r.err)) == 1  # the one "nothing imported" line; the rest are listed items


def test_linked_folders_are_scanned_and_loops_reported(tmp_path, photo):
    from geospot.data.scan import scan_folder

    (tmp_path / "a").mkdir()
    shutil.copy(photo, tmp_path / "a" / "x.JPG")
    (tmp_path / "b").mkdir()
    shutil.copy(photo, tmp_path / "b" / "y.jpg")
    os.symlink(tmp_path / "b", tmp_path / "a" / "to_b")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")  # a -> a: must end
    files, skipped = scan_folder(tmp_path / "a", extensions={".jpg"})
    assert sorted(os.path.basename(f) for f in files) == ["x.JPG", "y.jpg"]
    assert [(os.path.basename(p), "loop" in r) for p, r in skipped] == [("loop", True)]
