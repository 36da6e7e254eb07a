"""One error path for every verb: expected failures become one line, never a traceback.

Exit codes (documented in docs/errors.md):
  0  success
  1  done, but some inputs failed (each named on stderr; the rest were answered)
  2  usage or setup error: bad argument, unusable model/manifest/cache, missing
     network; nothing (or nothing more) was done
  3  a collector stopped at its request budget (rerun to resume)
  130 interrupted (Ctrl-C)

A traceback is printed only with the global `--debug` flag (or GEOSPOT_DEBUG=1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

EXIT_OK = 0
EXIT_INPUTS_FAILED = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130

_MAX_LINE = 500  # a reason is one line; a server's or library's essay is cut (after redaction)


def one_line(text: object) -> str:
    """Collapse a message to one printable line (surrogate-escaped names included)."""
    s = " ".join(str(text).split())
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= _MAX_LINE else s[: _MAX_LINE - 3] + "..."


def describe(exc: BaseException) -> str:
    """The reason of an exception as one line, naming the file when the exception knows it."""
    if isinstance(exc, MemoryError):
        return "out of memory" + (f": {exc}" if str(exc) else " (the input needs more memory than is available)")
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (recursion limit)"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeError):
        return f"cannot decode text ({exc.__class__.__name__}: {exc.reason})" if hasattr(exc, "reason") else str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else str(exc.filename)
        return f"{name}: {exc.strerror or exc}"
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, (OSError, ValueError, KeyError, LookupError)) or _is_geospot_error(exc):
        return text
    return f"{text} ({exc.__class__.__name__}; rerun with --debug for the traceback)"


def _is_geospot_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("geospot.")


def print_error(message: str) -> None:
    """`error: reason` on stderr; a message listing several problems keeps one line per problem."""
    lines = [one_line(line) for line in str(message).splitlines() if line.strip()][:50] or ["unknown error"]
    if not lines[0].startswith(("error:", "interrupted")):
        lines[0] = f"error: {lines[0]}"
    print("\n".join(lines), file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # Library warnings are messages for the user, not source locations.
    print(f"warning: {one_line(message)}", file=file or sys.stderr)


def _make_streams_safe() -> None:
    # A non-UTF-8 file name (surrogate-escaped by Python) must print, not crash the batch.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def run_verb(func, args, debug: bool = False) -> int:
    """Run one verb; every failure ends in one line on stderr and a documented exit code."""
    _make_streams_safe()
    saved = warnings.showwarning
    if not debug:
        warnings.showwarning = _show_warning
    try:
        return int(func(args) or 0)
    except SystemExit as exc:  # verbs raise SystemExit("error: ...") for usage/setup errors
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print_error(str(exc.code))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the whole point: no traceback without --debug
        if debug:
            traceback.print_exc()
        print_error(describe(exc))
        return EXIT_USAGE
    finally:
        warnings.showwarning = saved


# ------------------------------------------------------------------ parser: one-line errors, stated defaults


class DefaultsHelp(argparse.HelpFormatter):
    """States every option's default in its help (unless the help already names it)."""

    def add_argument(self, action: argparse.Action) -> None:
        if action.help is not argparse.SUPPRESS and action.option_strings and _states_default(action):
            text = action.help or ""
            if "default" not in text.lower():
                action.help = (text + " " if text else "") + "(default: %(default)s)"
        super().add_argument(action)


def _states_default(action: argparse.Action) -> bool:
    d = action.default
    return d is not None and d is not False and d is not argparse.SUPPRESS and not isinstance(
        action, (argparse._HelpAction, argparse._VersionAction))


class GeospotParser(argparse.ArgumentParser):
    """argparse with one-line errors and stated defaults, inherited by every sub-parser."""

    _formatters: dict[type, type] = {}

    def __init__(self, *a, **kw):
        fmt = kw.get("formatter_class") or argparse.HelpFormatter
        if not issubclass(fmt, DefaultsHelp):
            if fmt not in self._formatters:
                self._formatters[fmt] = type(f"Defaults{fmt.__name__}", (DefaultsHelp, fmt), {})
            fmt = self._formatters[fmt]
        kw["formatter_class"] = fmt
        super().__init__(*a, **kw)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")
