"""CLI fuzz: every verb, every option, a seeded set of bad values; never a traceback.

Inputs (manifests, models, folders) point at paths that do not exist, so each
call ends fast in argument validation or in the verb's first check, which is
exactly the surface under test: one line, a documented exit code.
"""
from __future__ import annotations

import argparse
import os
import random
import zlib

import pytest
from hostile_util import cli

BAD_VALUES = ["", " ", "-1", "0", "-0", "1e309", "nan", "inf", "-inf", "abc", "99999999999999999999", "0x10",
              "1,2", "../..", os.fsdecode(b"\xe9t\xe9"), "%s%n", "-", "1e-320", "\U0001F600", "cuda:7", "x" * 300]
VALUES_PER_OPTION = 2
NOWHERE = "/nonexistent-geospot-fuzz"


def _leaf_parsers(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_parsers(sub, path + (name,))


def _base_argv(path, parser) -> list[str]:
    argv = list(path)
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        value = sorted(action.choices)[0] if action.choices else f"{NOWHERE}/{action.dest}"
        argv += [value] * (1 if action.nargs in (None, 1, "?") else 1)
    for action in parser._actions:
        if action.option_strings and action.required:
            argv += [f"{action.option_strings[-1]}={NOWHERE}/{action.dest}"]
    if path[-1] in ("streetview", "mapillary"):
        argv += [f"--points={NOWHERE}/points.csv"]  # one of --region/--points is needed
    if path[-1] == "serve":
        argv += [f"--model={NOWHERE}/model"]  # never start a server that waits for requests
    return argv


def _cases():
    from geospot.cli import build_parser

    cases = []
    for path, parser in _leaf_parsers(build_parser()):
        base = _base_argv(path, parser)
        cases.append(pytest.param(base, id=" ".join(path) + " (no options)"))
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.dest in ("help", "version"):
                continue
            flag = [o for o in action.option_strings if o.startswith("--")][0]
            rng = random.Random(zlib.crc32(f"{' '.join(path)} {flag}".encode()))
            for value in rng.sample(BAD_VALUES, VALUES_PER_OPTION):
                cases.append(pytest.param(base + [f"{flag}={value}"], id=f"{' '.join(path)} {flag}={value[:12]!r}"))
    return cases


@pytest.mark.parametrize("argv", _cases())
def test_no_traceback(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a verb that does write something writes it here
    for env in ("GOOGLE_MAPS_API_KEY", "MAPILLARY_ACCESS_TOKEN"):
        monkeypatch.delenv(env, raising=False)
    r = cli(capsys, *argv)
    assert r.code in (0, 1, 2, 3), r.code
    if r.code == 2:
        last = r.err.strip().splitlines()[-1] if r.err.strip() else ""
        assert "error" in last, r.err


def test_every_default_is_stated_in_the_help():
    from geospot.cli import build_parser

    missing = []
    for path, parser in _leaf_parsers(build_parser()):
        parser.format_help()  # the formatter states defaults as it renders
        for action in parser._actions:
            d = action.default
            if not action.option_strings or d is None or d is False or d == argparse.SUPPRESS:
                continue
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if "default" not in (action.help or "").lower():
                missing.append(f"{' '.join(path)} {action.option_strings[-1]}")
    assert not missing, missing


@pytest.mark.parametrize("argv, words", [
    (["embed", "m.csv", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["train", "m.csv", "--out", "o", "--epochs", "0"], "--epochs: must be >= 1"),
    (["train", "m.csv", "--out", "o", "--unfreeze", "-1"], "--unfreeze: must be >= 0"),
    (["train", "m.csv", "--out", "o", "--region", "Atlantis"], "unknown country 'Atlantis'"),
    (["cells", "m.csv", "--out", "o", "--min-per-cell", "0"], "--min-per-cell: must be >= 1"),
    (["cv", "m.csv", "--folds", "1"], "--folds: must be >= 2"),
    (["locate", "x.jpg", "--top-k", "0"], "--top-k: must be >= 1"),
    (["data", "sample", "Croatia", "--cell-km", "0"], "--cell-km: must be > 0"),
    (["embed", "m.csv", "--lr", "1"], "unrecognized arguments"),
    (["train", "m.csv", "--out", "o", "--dropout", "1.5"], "--dropout: must be < 1"),
    (["train", "m.csv", "--out", "o", "--tau-km", "nan"], "--tau-km: a finite number expected"),
])
def test_reproductions_are_one_line(argv, words, capsys):
    r = cli(capsys, *argv)
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.err


def test_debug_flag_shows_the_traceback_anywhere_on_the_line(tmp_path, capsys):
    from geospot.cli import main

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("[" * 50 + "]" * 50)
    plain = cli(capsys, "eval", tmp_path / "m", tmp_path / "x.csv")
    assert plain.code == 2 and len(plain.err.strip().splitlines()) == 1
    assert main(["eval", str(tmp_path / "m"), str(tmp_path / "x.csv"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
