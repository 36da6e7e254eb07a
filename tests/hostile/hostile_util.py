"""Helpers of the hostile-input suite (a module of its own: every test folder has a `conftest`)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


