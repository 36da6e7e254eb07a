"""GeoCLIP's weights: converted once, safely, from the `geoclip` package's pickles to safetensors.

The `geoclip` PyPI package (MIT) ships its trained weights as pickled `.pth`
files, plus its 100K-coordinate GPS gallery as a CSV. geospot never unpickles
arbitrary data: `read_pth` first scans the pickle's opcodes and refuses any
global other than the three a plain tensor dict needs, then loads it with
`torch.load(weights_only=True)` (PyTorch's restricted unpickler) and refuses
anything but tensors. `convert_geoclip` writes the result, with the gallery, to
one safetensors file in the cache; after that only safetensors are read.

Two sources, neither touched without being asked:
- an installed `geoclip` package (`pip install --no-deps geoclip==1.3.0`):
  `convert_installed_package` finds its files without importing it (also done
  by `load_weights` on first use: local files, no network);
- the explicit download (`geospot models --download geoclip`): the package's
  wheel from PyPI (pinned size and SHA-256), read as a zip, never installed.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import torch

from geospot.encoders.base import cache_root

GEOCLIP_VERSION = "1.3.0"
WHEEL_NAME = f"geoclip-{GEOCLIP_VERSION}-py3-none-any.whl"
# PyPI's stable per-file URL; the size and hash are those of the wheel this port was tested on.
WHEEL_URL = f"https://files.pythonhosted.org/packages/py3/g/geoclip/{WHEEL_NAME}"
WHEEL_SIZE = 40_292_198
WHEEL_SHA256 = "08a93791166a279d52b95c466a952c75f17f654cc61bdf6ab20355325b564dec"

PACKAGE_FILES = {
    "location": "model/weights/location_encoder_weights.pth",
    "image_head": "model/weights/image_encoder_mlp_weights.pth",
    "logit_scale": "model/weights/logit_scale_weights.pth",
    "gallery": "model/gps_gallery/coordinates_100K.csv",
}
WEIGHTS_FILE = "geoclip.safetensors"
_ALLOWED_GLOBALS = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2"}
# Every class reference must go through GLOBAL (checked against the allow-list); these other ways of naming or
# building objects are refused outright. BUILD stays allowed: it can only set state on the allowed objects
# (PyTorch uses it for a state dict's `_metadata`).
_REFUSED_OPCODES = {"STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}


class UnsafeCheckpoint(ValueError):
    """A pickle holds something other than plain tensors; it is not loaded."""


def geoclip_dir() -> Path:
    """Cache folder of the converted GeoCLIP weights: $GEOSPOT_CACHE/models/geoclip."""
    return cache_root() / "models" / "geoclip"


def weights_path() -> Path:
    return geoclip_dir() / WEIGHTS_FILE


def _check_pickle(pkl: bytes, what: str) -> None:
    for op, arg, _ in pickletools.genops(pkl):
        if op.name in _REFUSED_OPCODES:
            raise UnsafeCheckpoint(f"{what}: pickle opcode {op.name} is not allowed in a plain tensor file; not loaded")
        if op.name == "GLOBAL":
            module_name = str(arg)
            storage = module_name.startswith("torch ") and module_name.endswith("Storage")
            if module_name not in _ALLOWED_GLOBALS and not storage:
                raise UnsafeCheckpoint(f"{what}: refers to {module_name.replace(' ', '.')}, not only tensors; "
                                       f"not loaded")


def read_pth(data: bytes, what: str) -> dict[str, torch.Tensor] | torch.Tensor:
    """A `.pth` (torch zip format) holding a tensor or a {name: tensor} dict, read without running code."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkls = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkls) != 1:
                raise UnsafeCheckpoint(f"{what}: not a torch zip checkpoint (expected one data.pkl)")
            _check_pickle(z.read(pkls[0]), what)
    except zipfile.BadZipFile:
        raise UnsafeCheckpoint(f"{what}: not a torch zip checkpoint (legacy pickles are refused)") from None
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    raise UnsafeCheckpoint(f"{what}: holds {type(obj).__name__}, expected tensors only")


def read_gallery_csv(text: str, what: str) -> np.ndarray:
    """float64 [N, 2] (lat, lon) from a CSV with latitude/longitude columns (LAT/LON, lat/lon, latitude/longitude)."""
    rows = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(rows, [])]
    try:
        i_lat = next(header.index(n) for n in ("lat", "latitude") if n in header)
        i_lon = next(header.index(n) for n in ("lon", "lng", "longitude") if n in header)
    except StopIteration:
        raise ValueError(f"{what}: needs a header with lat and lon columns, got {header}") from None
    out = []
    for line_no, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            lat, lon = float(row[i_lat]), float(row[i_lon])
        except (IndexError, ValueError):
            raise ValueError(f"{what}: row {line_no}: lat/lon are not numbers ({','.join(row)[:60]})") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"{what}: row {line_no}: ({lat}, {lon}) is outside [-90, 90] x [-180, 180]")
        out.append((lat, lon))
    if not out:
        raise ValueError(f"{what}: no coordinates")
    return np.asarray(out, dtype=np.float64)


def _rename_location(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`LocEnc{i}.capsule.{0,1,3,5}` / `LocEnc{i}.head.0` -> our `branches.{i}.{rff,mlp.0,mlp.2,mlp.4,head}`."""
    names = {"capsule.0.b": "rff.b", "capsule.1": "mlp.0", "capsule.3": "mlp.2", "capsule.5": "mlp.4", "head.0": "head"}
    out = {}
    for key, value in state.items():
        scale, _, rest = key.partition(".")
        if not scale.startswith("LocEnc") or not scale[6:].isdigit():
            raise ValueError(f"unexpected GeoCLIP location-encoder key {key!r}")
        for theirs, ours in names.items():
            if rest == theirs or rest.startswith(theirs + "."):
                out[f"location.branches.{scale[6:]}.{ours}{rest[len(theirs):]}"] = value
                break
        else:
            raise ValueError(f"unexpected GeoCLIP location-encoder key {key!r}")
    return out


def convert_files(files: dict[str, bytes], source: str, dest: str | Path | None = None) -> Path:
    """Convert the package's four files (contents by `PACKAGE_FILES` key) to one safetensors file."""
    from safetensors.torch import save_file

    from geospot.models.geoclip.network import GeoClipLocationEncoder, image_head

    location = read_pth(files["location"], f"{source}: {PACKAGE_FILES['location']}")
    head = read_pth(files["image_head"], f"{source}: {PACKAGE_FILES['image_head']}")
    scale = read_pth(files["logit_scale"], f"{source}: {PACKAGE_FILES['logit_scale']}")
    if not isinstance(location, dict) or not isinstance(head, dict) or not isinstance(scale, torch.Tensor):
        raise ValueError(f"{source}: GeoCLIP files do not have the expected structure")
    gallery = read_gallery_csv(files["gallery"].decode("utf-8"), f"{source}: {PACKAGE_FILES['gallery']}")
    state = _rename_location(location)
    state.update({f"image_head.{k}": v for k, v in head.items()})
    state["logit_scale"] = scale.reshape(())
    # the gallery as the package reads it: float32 (its predictions use these exact values)
    state["gallery"] = torch.from_numpy(gallery.astype(np.float32))
    # strict shape check against our modules before anything is cached
    GeoClipLocationEncoder().load_state_dict({k[len("location."):]: v for k, v in state.items()
                                              if k.startswith("location.")}, strict=True)
    image_head().load_state_dict({k[len("image_head."):]: v for k, v in state.items() if k.startswith("image_head.")},
                                 strict=True)
    target = Path(dest) if dest is not None else weights_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    save_file({k: v.contiguous().float() for k, v in state.items()}, str(tmp),
              metadata={"source": source, "geoclip_version": GEOCLIP_VERSION, "licence": "MIT"})
    tmp.replace(target)
    return target


def installed_package_dir() -> Path | None:
    """Folder of an installed `geoclip` package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def convert_installed_package(dest: str | Path | None = None, package_dir: str | Path | None = None) -> Path:
    """Convert the weights of an installed `geoclip` package (no network)."""
    folder = Path(package_dir) if package_dir is not None else installed_package_dir()
    if folder is None:
        raise FileNotFoundError("the geoclip package is not installed")
    files = {}
    for key, rel in PACKAGE_FILES.items():
        path = folder / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the installed geoclip package")
        files[key] = path.read_bytes()
    return convert_files(files, f"geoclip package at {folder}", dest)


def convert_wheel(wheel: str | Path, dest: str | Path | None = None) -> Path:
    """Convert the weights inside a geoclip wheel (a zip; nothing is installed or imported)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            files = {key: z.read(f"geoclip/{rel}") for key, rel in PACKAGE_FILES.items()}
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{wheel}: not a geoclip wheel ({exc})") from None
    return convert_files(files, Path(wheel).name, dest)


def download_geoclip(progress: bool = True, url: str | None = None, sha256: str | None = None,
                     size: int | None = None) -> Path:
    """Explicit download: the geoclip wheel from PyPI (pinned size and SHA-256), converted to safetensors;
    the wheel is deleted afterwards. `url`/`sha256`/`size` default to the pinned 1.3.0 wheel."""
    from geospot.downloads import RemoteFile, fetch

    wheel = geoclip_dir() / WHEEL_NAME
    remote = RemoteFile(url or WHEEL_URL, size=size if url else WHEEL_SIZE, sha256=sha256 if url else WHEEL_SHA256)
    fetch(remote, wheel, progress=progress)
    target = convert_wheel(wheel)
    wheel.unlink(missing_ok=True)
    return target


def load_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The converted tensors (safetensors only); `FileNotFoundError` with the command to run when absent."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else weights_path()
    if not path.is_file():
        if installed_package_dir() is not None and path == weights_path():
            return load_weights(convert_installed_package())  # local files, converted once; no network
        raise FileNotFoundError(
            f"{path}: GeoCLIP weights are not on this machine. Get them once with `geospot models --download "
            f"geoclip` (network, ~40 MB + the 1.7 GB CLIP ViT-L/14 tower), or `pip install --no-deps "
            f"geoclip=={GEOCLIP_VERSION}` (its location weights are then converted locally)")
    return load_file(str(path))
