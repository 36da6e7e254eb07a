"""Fine-tuning checkpoints: every epoch's weights, optimizer moments and RNG state (safetensors) and the
JSON state that points at them, written so that a crash leaves the last good epoch, and read back only
for the same model, data and config (`geospot.train.finetune` and its distributed twin resume from them)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "finetune-state.json"
STATE_FORMAT = "geospot-finetune"
STATE_VERSION = 1


def _fingerprint(model, df, config) -> dict[str, Any]:
    digest = hashlib.sha256()
    for path, lat, lon in zip(df["path"].astype(str), df["lat"], df["lon"]):
        digest.update(f"{path}|{float(lat):.9f}|{float(lon):.9f}\n".encode("utf-8", "surrogateescape"))
    return {
        "encoder": model.encoder_name,
        "cells_hash": model.cells.hash(),
        "head": model.head.config(),
        "train_rows": int(len(df)),
        "train_sha256": digest.hexdigest(),
        # device and workers do not change the result: a run may resume elsewhere
        "config": {k: v for k, v in config.to_dict().items() if k not in ("device", "workers")},
    }


def _save_checkpoint(run_dir: Path, epoch: int, encoder, head, optimizer, fingerprint: dict,
                     history: list, bad_rows: dict[str, str]) -> None:
    """Weights file first, then the JSON that points at it (atomic replace): a crash leaves the last good state."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in encoder.state_dict().items():
        tensors[f"encoder.{k}"] = v
    for k, v in head.state_dict().items():
        tensors[f"head.{k}"] = v
    opt_state = optimizer.state_dict()
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    name = f"finetune-epoch{epoch:04d}.safetensors"
    tmp = run_dir / (name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, run_dir / name)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])}
              for g in opt_state["param_groups"]]
    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch, "weights": name,
             "fingerprint": fingerprint, "param_groups": groups, "history": history, "bad_rows": bad_rows}
    tmp_json = run_dir / (STATE_FILE + ".tmp")
    tmp_json.write_text(json.dumps(state, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp_json, run_dir / STATE_FILE)
    for old in run_dir.glob("finetune-epoch*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in {STATE_FILE}")


def _load_checkpoint(run_dir: Path, fingerprint: dict) -> dict | None:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    from geospot.models.validate import read_json_bounded

    try:
        state = read_json_bounded(path)  # bounded size and nesting
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable fine-tuning state ({exc}); delete {run_dir} to start over") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a geospot fine-tuning state (version {STATE_VERSION})")
    if json.loads(json.dumps(fingerprint, default=_json_default)) != state.get("fingerprint"):
        raise ValueError(
            f"{path}: this run directory holds a fine-tuning run of a different model, data or config; "
            f"use another run_dir or delete {run_dir} to start over"
        )
    name = state.get("weights")
    # a state file names a file of its own folder; never follow it elsewhere (../, absolute, links out)
    if not isinstance(name, str) or not re.fullmatch(r"finetune-epoch\d{1,6}\.safetensors", name):
        raise ValueError(f"{path}: 'weights' must name a finetune-epochNNNN.safetensors file in {run_dir}, "
                         f"got {name!r}; delete {run_dir} to start over")
    weights = run_dir / name
    if weights.is_symlink() or not weights.resolve().parent == run_dir.resolve():
        raise ValueError(f"{weights}: points outside {run_dir}; delete {run_dir} to start over")
    try:
        state["tensors"] = load_file(str(weights))
    except Exception as exc:  # safetensors raises several types for truncated files
        raise ValueError(f"{weights}: corrupt checkpoint ({exc}); delete {run_dir} to start over") from exc
    return state


def _restore(state: dict, encoder, head, optimizer) -> None:
    t = state["tensors"]
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in t.items() if k.startswith("encoder.")})
    head.load_state_dict({k[len("head."):]: v for k, v in t.items() if k.startswith("head.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    torch.set_rng_state(t["rng.torch"])
    cuda_states = [t[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in t]
    if cuda_states and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def resume_state(run_dir: Path, state: dict | None, encoder, head, optimizer) -> tuple[list, dict, int]:
    """``(history, bad_rows, start_epoch)``: a fresh start, or ``state`` restored into the parts
    (one clear error when the saved state does not fit this model)."""
    if state is None:
        return [], {}, 1
    try:
        _restore(state, encoder, head, optimizer)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{run_dir / STATE_FILE}: the saved fine-tuning state does not fit this model "
                         f"({' '.join(str(exc).split())[:300]}); delete {run_dir} to start over") from exc
    return state["history"], state["bad_rows"], state["epoch"] + 1
