"""Shortcut-audit thresholds (torch-free, so the CLI can show them in --help quickly)."""

DEFAULT_MAX_AREA = 0.15
DEFAULT_MIN_REL_DROP = 0.2
DEFAULT_MIN_EXCESS = 3.0
