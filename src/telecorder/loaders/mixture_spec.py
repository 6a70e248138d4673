"""What a mixture is made of, as the user writes it: weights, camera maps, a weights file.

Torch-free, so a CLI can check a ``--mixture`` file (and fail on one readable line) before it
imports anything heavy. The file follows Octo's recipe, a list of datasets with sampling weights:

* ``[["demos/", 1.0], ["bridge/1.0.0", 0.5]]`` (pairs; a third element may be a camera map),
* ``{"demos/": 1.0, "bridge/1.0.0": 0.5}``,
* or objects, for camera maps and names:
  ``[{"path": "bridge/1.0.0", "weight": 0.5, "cameras": {"primary": "image_0"}, "name": "widowx"}]``
  (also as the values of a ``{path: {...}}`` dict).

Relative paths are relative to the file's folder, so the file travels with its datasets.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TelecorderError

__all__ = ["MAX_MIXTURE_FILE_BYTES", "WEIGHT_MODES", "MixtureEntry", "MixtureError", "check_camera_map",
           "mixture_weights", "parse_camera_map", "read_mixture_file"]

#: A weights file lists datasets, not data: anything bigger is a wrong file given by mistake.
MAX_MIXTURE_FILE_BYTES = 1 << 20
#: ``"steps"``: each dataset in proportion to its samples; ``"uniform"``: each dataset alike.
WEIGHT_MODES = ("steps", "uniform")
_ENTRY_KEYS = ("path", "weight", "cameras", "name")


class MixtureError(TelecorderError, ValueError):
    """A mixture that cannot be built: bad weights, a bad weights file, or components that cannot share
    a batch (different image sizes for one camera slot, history or horizon). A ``ValueError`` too, as
    the weights checks were before cross-embodiment mixtures."""


@dataclass(frozen=True)
class MixtureEntry:
    """One dataset of a weights file: its path (resolved), weight, camera map (slot -> camera) and name."""

    path: Path
    weight: float
    cameras: dict[str, str] | None = None
    name: str | None = None


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MixtureError(f"{where}: weight must be a number, not {value!r:.60}")
    w = float(value)
    if not math.isfinite(w) or w < 0:
        raise MixtureError(f"{where}: weight must be finite and >= 0, not {value!r:.60}")
    return w


def check_camera_map(mapping: Any, where: str) -> dict[str, str]:
    """A camera map (slot -> camera name) checked: strings, slot names usable in item keys, no camera twice."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise MixtureError(f"{where}: a camera map must be a non-empty object of slot -> camera, "
                           f"e.g. {{\"primary\": \"front\"}}, not {mapping!r:.60}")
    out: dict[str, str] = {}
    for slot, camera in mapping.items():
        if not isinstance(slot, str) or not slot or any(c.isspace() or c in "./" for c in slot):
            raise MixtureError(f"{where}: camera slot {slot!r:.40} must be a non-empty name without spaces, "
                               "'.' or '/'")
        if not isinstance(camera, str) or not camera:
            raise MixtureError(f"{where}: slot {slot!r} must name a camera (a string), not {camera!r:.40}")
        if camera in out.values():
            raise MixtureError(f"{where}: camera {camera!r} is mapped to two slots")
        out[slot] = camera
    return out


def parse_camera_map(text: str, where: str = "--camera-map") -> dict[str, str]:
    """``"primary=front,wrist=wrist"`` -> ``{"primary": "front", "wrist": "wrist"}``."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in str(text).split(",")):
        slot, eq, camera = part.partition("=")
        if not eq or not slot.strip() or not camera.strip():
            raise MixtureError(f"{where} {text!r:.80}: write slot=camera pairs separated by ',', "
                               "e.g. primary=front,wrist=wrist")
        if slot.strip() in pairs:
            raise MixtureError(f"{where} {text!r:.80}: slot {slot.strip()!r} is given twice")
        pairs[slot.strip()] = camera.strip()
    return check_camera_map(pairs, f"{where} {text!r:.80}")


def mixture_weights(lengths: Sequence[int], weights: str | Sequence[float]) -> list[float]:
    """The sampling weight of each component: ``"steps"`` (its length), ``"uniform"`` (1 each) or given."""
    if isinstance(weights, str):
        if weights == "steps":
            return [float(n) for n in lengths]
        if weights == "uniform":
            return [1.0] * len(lengths)
        raise MixtureError(f"unknown mixture weights {weights!r} (use {' or '.join(WEIGHT_MODES)}, or one number "
                           "per dataset)")
    given = list(weights)
    if len(given) != len(lengths):
        raise MixtureError(f"{len(given)} mixture weight(s) for {len(lengths)} dataset(s)")
    return [_weight(w, f"mixture weight {k}") for k, w in enumerate(given)]


def _read_text(path: Path) -> str:
    where = str(path)
    if path.exists() and not path.is_file():
        raise MixtureError(f"{where}: not a regular file (a folder, device or pipe); give the mixture's .json file")
    if not path.is_file():
        raise MixtureError(f"{where}: no such mixture file")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_MIXTURE_FILE_BYTES:
                raise MixtureError(f"{where}: {size} bytes is no mixture file (at most "
                                   f"{MAX_MIXTURE_FILE_BYTES >> 20} MiB); give the .json of datasets and weights")
            return fh.read(MAX_MIXTURE_FILE_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MixtureError(f"{where}: cannot read it ({e})") from e


def _entry(raw: Any, k: int, file: Path, base: Path) -> MixtureEntry:
    where = f"{file}: entry {k}"
    cameras: Any = None
    name: Any = None
    if isinstance(raw, (list, tuple)):
        if len(raw) not in (2, 3):
            raise MixtureError(f"{where}: a list entry is [path, weight] or [path, weight, camera map], "
                               f"not {len(raw)} item(s)")
        path, weight = raw[0], raw[1]
        cameras = raw[2] if len(raw) == 3 else None
    elif isinstance(raw, Mapping):
        unknown = sorted(str(key) for key in raw if key not in _ENTRY_KEYS)
        if unknown:
            raise MixtureError(f"{where}: unknown key(s) {unknown} (an entry has {', '.join(_ENTRY_KEYS)})")
        if "path" not in raw or "weight" not in raw:
            raise MixtureError(f"{where}: an entry needs 'path' and 'weight'")
        path, weight, cameras, name = raw["path"], raw["weight"], raw.get("cameras"), raw.get("name")
    else:
        raise MixtureError(f"{where}: an entry is [path, weight] or an object with path and weight, "
                           f"not {type(raw).__name__}")
    if not isinstance(path, str) or not path.strip():
        raise MixtureError(f"{where}: the path must be a non-empty string, not {path!r:.60}")
    where = f"{file}: entry {k} ({path!r:.80})"
    w = _weight(weight, where)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise MixtureError(f"{where}: 'name' must be a non-empty string, not {name!r:.40}")
    cams = None if cameras is None else check_camera_map(cameras, where)
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = base / resolved
    if not resolved.exists():
        raise MixtureError(f"{where}: no such dataset ({resolved}); paths are relative to the file's folder")
    return MixtureEntry(resolved, w, cams, name)


def read_mixture_file(path: str | Path, base: str | Path | None = None) -> list[MixtureEntry]:
    """The datasets and weights of an Octo-style mixture file (see the module docstring), checked.

    ``base`` is the folder relative paths start from (default: the file's folder). Every problem is a
    :class:`MixtureError` naming the file (and the entry): bad JSON, a wrong type, a NaN, infinite or
    negative weight, all weights zero, a dataset that does not exist, a dataset listed twice.
    """
    file = Path(path).expanduser()
    text = _read_text(file)
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise MixtureError(f"{file}: not valid JSON ({type(e).__name__}: {str(e)[:120]})") from e
    root = Path(base) if base is not None else file.resolve().parent
    if isinstance(doc, Mapping):
        for p, v in doc.items():
            if isinstance(v, Mapping) and "path" in v:
                raise MixtureError(f"{file}: entry {p!r:.80} gives its path twice (as the key and as 'path')")
        raws: list[Any] = [{"path": p, **v} if isinstance(v, Mapping) else [p, v] for p, v in doc.items()]
    elif isinstance(doc, list):
        raws = doc
    else:
        raise MixtureError(f"{file}: a mixture file holds a list of [path, weight] or an object of path: weight, "
                           f"not {type(doc).__name__}")
    if not raws:
        raise MixtureError(f"{file}: lists no datasets")
    entries = [_entry(raw, k, file, root) for k, raw in enumerate(raws)]
    seen: dict[Path, int] = {}
    for k, e in enumerate(entries):
        key = e.path.resolve()
        if key in seen:
            raise MixtureError(f"{file}: entries {seen[key]} and {k} are the same dataset ({e.path})")
        seen[key] = k
    if sum(e.weight for e in entries) <= 0:
        raise MixtureError(f"{file}: every weight is 0; give at least one dataset a positive weight")
    return entries
