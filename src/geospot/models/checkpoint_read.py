"""Reading a model directory without torch: ``config.json`` validated field by field, the cell
table checked against its hash, the answer's parts (support, calibration, estimate) and the head's
shapes from the safetensors header. Every problem is a `CheckpointError` naming the file; the NumPy
prediction path and `geospot.models.checkpoint.GeoModel` both read through here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from geospot.models.validate import read_json_bounded, safetensors_shapes, shape_problems

FORMAT = "geospot-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"
CELLS_FILES = ("cells.json", "cells.safetensors")
SUPPORT_FILE = "support.safetensors"


class CheckpointError(Exception):
    """A model directory that cannot be loaded (or saved); the message names the file and the reason."""


def read_config(root: Path) -> dict[str, Any]:
    """The validated ``config.json`` of a model directory (torch-free); `CheckpointError` otherwise."""
    if not root.is_dir():
        raise CheckpointError(f"{root}: model directory not found")
    config = _read_config(root / CONFIG_FILE)
    _check_encoder_fields(root / CONFIG_FILE, config)
    return config


def load_cells(root: Path, config: dict[str, Any]):
    """The model's `CellTable`, checked against the count and hash in its config (torch-free)."""
    from geospot.geo.cells import CellTable

    missing = [name for name in CELLS_FILES if not (root / name).is_file()]
    if missing:
        raise CheckpointError(f"{root / missing[0]}: missing (the model's cell table)")
    try:
        cells = CellTable.load(root)
    except Exception as exc:  # any parse failure of the cell files is a checkpoint problem
        # CellTable's messages usually name the damaged file already; otherwise name it here.
        where = "" if str(root) in str(exc) else f"{root / CELLS_FILES[0]}: "
        raise CheckpointError(f"{where}cannot load the model's cell table: {exc}") from exc
    want, num_cells = config["cells"], config["head"]["num_cells"]
    if len(cells) != want["count"] or len(cells) != num_cells:
        raise CheckpointError(
            f"{root / CELLS_FILES[0]}: holds {len(cells)} cells but {root / CONFIG_FILE} says "
            f"{want['count']} and the head predicts {num_cells}"
        )
    if cells.hash() != want["hash"]:
        raise CheckpointError(
            f"{root / CELLS_FILES[0]}: cell table hash {cells.hash()[:12]}… does not match "
            f"{want['hash'][:12]}… recorded in {root / CONFIG_FILE}; the cells were changed or belong to another model"
        )
    return cells


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {path.parent} is not a geospot model directory")
    try:
        config = read_json_bounded(path)  # size and nesting bounded before parsing
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: not a geospot model (format {found!r}, expected {FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} was written by a newer geospot "
            f"({config.get('geospot_version', 'unknown')}); this one reads up to {FORMAT_VERSION} — upgrade geospot"
        )
    _require(path, config, "encoder", dict)
    _require(path, config["encoder"], "name", str, "encoder.")
    _require(path, config, "head", dict)
    for key in ("embed_dim", "num_cells", "hidden"):
        _require(path, config["head"], key, int, "head.")
    _require(path, config["head"], "dropout", (int, float), "head.")
    _require(path, config["head"], "normalize", bool, "head.")
    _require(path, config, "cells", dict)
    _require(path, config["cells"], "count", int, "cells.")
    _require(path, config["cells"], "hash", str, "cells.")
    head = config["head"]
    if head["embed_dim"] < 1 or head["num_cells"] < 1 or head["hidden"] < 0 or not 0 <= head["dropout"] < 1:
        raise CheckpointError(f"{path}: invalid head shape {head}")
    return config


def _read_answer_parts(root: Path, config: dict, n_cells: int):
    """Support points, calibration and default estimate (all optional: older models have none)."""
    from geospot.models.answer import ESTIMATES
    from geospot.models.calibration import Calibration
    from geospot.models.distribution import Support

    support = None
    if config.get("support") is not None:
        if config["support"] != SUPPORT_FILE:
            raise CheckpointError(f"{root / CONFIG_FILE}: 'support' must be {SUPPORT_FILE!r} or null")
        path = root / SUPPORT_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the model's support points)")
        try:
            from safetensors.numpy import load_file as load_numpy

            support = Support.from_arrays(load_numpy(str(path)))
            support.check_cells(n_cells)
        except Exception as exc:
            raise CheckpointError(f"{path}: corrupt or inconsistent support points: {exc}") from exc
    try:
        calibration = Calibration.from_dict(config.get("calibration")) if config.get("calibration") else None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE}: bad 'calibration': {exc}") from exc
    estimate = config.get("estimate")
    if estimate is not None and estimate not in ESTIMATES:
        raise CheckpointError(f"{root / CONFIG_FILE}: unknown 'estimate' {estimate!r}; known: {', '.join(ESTIMATES)}")
    return support, calibration, estimate


def _require(path: Path, obj: dict, key: str, kind, prefix: str = "") -> None:
    value = obj.get(key)
    # JSON true/false are Python bools, which are also ints: only accept them where a bool is wanted.
    if key not in obj or not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        want = kind.__name__ if isinstance(kind, type) else "number"
        raise CheckpointError(f"{path}: '{prefix}{key}' is missing or not a {want} (got {value!r})")


def _read_safetensors(path: Path, what: str) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for truncated/garbled files
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({what}): {exc}") from exc


def head_shapes(head_cfg: dict) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a head as config.json's ``head`` describes it (linear or one hidden layer)."""
    d, c, h = head_cfg["embed_dim"], head_cfg["num_cells"], head_cfg["hidden"]
    if h > 0:
        return {"hidden_layer.weight": (h, d), "hidden_layer.bias": (h,), "out.weight": (c, h), "out.bias": (c,)}
    return {"out.weight": (c, d), "out.bias": (c,)}


def _check_head_header(path: Path, head_cfg: dict) -> None:
    """The head shapes config.json implies must be those stored in the file (read from its header only)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (head weights)")
    try:
        stored = safetensors_shapes(path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    problems = shape_problems({k: v[1] for k, v in stored.items()}, head_shapes(head_cfg))
    if problems:
        raise CheckpointError(f"{path}: does not match the head described in config.json: " + "; ".join(problems))


_MAX_INPUT_SIZE = 1024


def _check_encoder_name(path: Path, config: dict) -> None:
    """The encoder must be registered (imports the encoders, so torch: not on the NumPy path,
    where a missing ONNX record sends an unknown name to the same check when building it)."""
    from geospot.encoders import list_encoders

    name = config["encoder"]["name"]
    if name not in list_encoders():
        raise CheckpointError(f"{path}: unknown encoder {name!r}; known: {', '.join(list_encoders())}")


def _check_encoder_fields(path: Path, config: dict) -> None:
    """Preprocessing and mask must be usable before any photo is decoded with them (torch-free)."""
    enc = config["encoder"]
    pre = enc.get("preprocess")
    if pre:
        from geospot.encoders.preprocess import Preprocess

        try:
            if not isinstance(pre, dict):
                raise ValueError(f"expected an object, got {type(pre).__name__}")
            p = Preprocess.from_dict(pre)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{path}: invalid encoder.preprocess ({exc})") from None
        if p.size > _MAX_INPUT_SIZE or p.resize > 2 * p.size:
            raise CheckpointError(f"{path}: encoder.preprocess asks for {p.size} px inputs resized from "
                                  f"{p.resize} px; geospot allows at most {_MAX_INPUT_SIZE} px and resize <= 2 x size")
    if config.get("mask") is not None:
        from geospot.data.masks import Mask

        try:
            Mask.from_dict(config["mask"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid mask ({exc})") from None
