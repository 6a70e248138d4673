"""The data model's schema: what each recorded feature is, and what a dataset holds.

A feature is named with dots (``observation.state``, ``observation.images.front``,
``action``); in an episode's HDF5 file the dots become groups
(``observation/state``). Camera features have ``kind == "image"`` and are stored
encoded; numeric features are stored as plain arrays with one row per control tick.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json_atomic
from ..errors import DatasetError

FORMAT_NAME = "telecorder"
FORMAT_VERSION = "1.0"
IMAGE_PREFIX = "observation.images."
IMAGE_ENCODINGS = ("jpeg", "png")
# What the times of a recording count (``extra["clock"]`` in info.json, attr ``clock`` of an episode):
# the recorder's monotonic wall clock, or a simulation's own time (faster than real time, never late).
CLOCK_MONOTONIC = "monotonic"
CLOCK_SIMULATION = "simulation"


# The most values one feature may hold per step, as info.json declares it: a 4K RGB frame is 25 million;
# beyond this a shape is damage, and what readers allocate from it (thumbnails, buffers) stays bounded.
MAX_STEP_VALUES = 1 << 27
MAX_FEATURE_DIMS = 32


@dataclass(frozen=True)
class FeatureSpec:
    """One recorded stream: a numeric array per step, or a camera image per step.

    ``names`` labels each dimension of a 1-D numeric feature (joint names, or
    ``x y z roll pitch yaw gripper``); ``unit`` is the unit and convention note a
    person needs to use the numbers correctly (radians, gripper 0 = closed 1 = open,
    what the action means).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    unit: str = ""
    kind: str = "numeric"

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith(".") or self.name.endswith(".") or ".." in self.name:
            raise ValueError(f"feature name {self.name!r} must be dotted words like 'observation.state'")
        if self.kind not in ("numeric", "image"):
            raise ValueError(f"feature {self.name!r}: kind must be 'numeric' or 'image', not {self.kind!r}")
        np.dtype(self.dtype)  # fails early on a dtype numpy cannot represent
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))
            if len(self.shape) != 1 or len(self.names) != self.shape[0]:
                raise ValueError(
                    f"feature {self.name!r}: {len(self.names)} names for shape {self.shape}"
                )
        if self.kind == "image" and (len(self.shape) != 3 or self.shape[2] != 3 or self.dtype != "uint8"):
            raise ValueError(f"image feature {self.name!r} must be uint8 (H, W, 3) RGB, got {self.dtype} {self.shape}")

    @property
    def h5_path(self) -> str:
        """Where the feature lives inside an episode file."""
        return self.name.replace(".", "/")

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def camera(self) -> str:
        """Camera name of an image feature (``observation.images.front`` -> ``front``)."""
        if not self.is_image:
            raise ValueError(f"{self.name} is not an image feature")
        return self.name.removeprefix(IMAGE_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "kind": self.kind}
        if self.names is not None:
            d["names"] = list(self.names)
        if self.unit:
            d["unit"] = self.unit
        return d

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> FeatureSpec:
        """A feature as JSON describes it; every field's type is checked (ValueError naming it)."""
        where = f"feature {name!r}"
        if not isinstance(d, Mapping):
            raise ValueError(f"{where} must be a JSON object, not {type(d).__name__}")
        shape = d.get("shape")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise ValueError(f"{where}: 'shape' must be a list of non-negative whole numbers, not {shape!r:.80}")
        if len(shape) > MAX_FEATURE_DIMS or math.prod(shape) > MAX_STEP_VALUES or any(s > MAX_STEP_VALUES for s in shape):
            raise ValueError(f"{where}: 'shape' {shape!r:.80} holds more than {MAX_STEP_VALUES} values per step "
                             f"(or more than {MAX_FEATURE_DIMS} dimensions); a damaged description")
        names = d.get("names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"{where}: 'names' must be a list of strings, not {names!r:.80}")
        return cls(
            name=name,
            dtype=_text(d, "dtype", where),
            shape=tuple(shape),
            names=tuple(names) if names is not None else None,
            unit=_text(d, "unit", where, ""),
            kind=_text(d, "kind", where, "numeric"),
        )


def image_feature(camera: str, height: int, width: int, unit: str = "") -> FeatureSpec:
    """The feature of one RGB camera."""
    return FeatureSpec(IMAGE_PREFIX + camera, "uint8", (height, width, 3), unit=unit, kind="image")


@dataclass
class DatasetInfo:
    """What every episode of a dataset has in common (``meta/info.json``)."""

    features: dict[str, FeatureSpec]
    fps: float
    robot_type: str
    image_encoding: str = "jpeg"
    jpeg_quality: int = 90
    format_version: str = FORMAT_VERSION
    total_episodes: int = 0
    total_frames: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"image_encoding must be one of {IMAGE_ENCODINGS}, not {self.image_encoding!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, not {self.jpeg_quality}")
        check_fps(self.fps)

    @classmethod
    def create(
        cls, features: Iterable[FeatureSpec], *, fps: float, robot_type: str, **kwargs: Any
    ) -> DatasetInfo:
        feats = {f.name: f for f in features}
        return cls(features=feats, fps=float(fps), robot_type=robot_type, **kwargs)

    @property
    def numeric_features(self) -> list[FeatureSpec]:
        return [f for f in self.features.values() if not f.is_image]

    @property
    def image_features(self) -> list[FeatureSpec]:
        return [f for f in self.features.values() if f.is_image]

    @property
    def cameras(self) -> list[str]:
        return [f.camera for f in self.image_features]

    @property
    def clock(self) -> str:
        """The clock of the recording's times; a dataset that does not say was recorded on the wall clock."""
        return str(self.extra.get("clock") or CLOCK_MONOTONIC)

    def differences(self, other: DatasetInfo) -> list[str]:
        """Why episodes recorded under ``other`` cannot join this dataset (empty if they can)."""
        diffs = []
        if abs(self.fps - other.fps) > 1e-9:
            diffs.append(f"fps {self.fps:g} vs {other.fps:g}")
        if self.robot_type != other.robot_type:
            diffs.append(f"robot {self.robot_type!r} vs {other.robot_type!r}")
        # Wall-clock and simulated times do not mean the same thing (durations, lateness): no mixing.
        if self.clock != other.clock:
            diffs.append(f"clock {self.clock!r} vs {other.clock!r}")
        for name in sorted(set(self.features) | set(other.features)):
            mine, theirs = self.features.get(name), other.features.get(name)
            if mine is None:
                diffs.append(f"new feature {name!r}")
            elif theirs is None:
                diffs.append(f"missing feature {name!r}")
            elif mine.to_dict() != theirs.to_dict():
                diffs.append(f"feature {name!r}: {_describe(mine)} vs {_describe(theirs)}")
        return diffs

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "fps": self.fps,
            "robot_type": self.robot_type,
            "image_encoding": self.image_encoding,
            "jpeg_quality": self.jpeg_quality,
            "total_episodes": self.total_episodes,
            "total_frames": self.total_frames,
            "features": {name: f.to_dict() for name, f in self.features.items()},
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "meta/info.json") -> DatasetInfo:
        if not isinstance(d, Mapping):
            raise DatasetError(f"{source}: not a telecorder dataset description (a JSON {type(d).__name__}, "
                               "not an object); restore it from a backup or convert the dataset again")
        if d.get("format") != FORMAT_NAME:
            raise DatasetError(f"{source}: not a telecorder dataset (format is {d.get('format')!r})")
        version = str(d.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise DatasetError(
                f"{source}: format_version {version!r} is not supported "
                f"(this telecorder reads {FORMAT_VERSION.split('.')[0]}.x); "
                "upgrade telecorder or convert the dataset"
            )
        try:
            features = d.get("features")
            if not isinstance(features, Mapping):
                raise ValueError(f"'features' must be a JSON object, not {type(features).__name__}")
            fps = d.get("fps")
            if not _is_number(fps):
                raise ValueError(f"'fps' must be a number, not {fps!r:.40}")
            extra = d.get("extra", {})
            if not isinstance(extra, Mapping):
                raise ValueError(f"'extra' must be a JSON object, not {type(extra).__name__}")
            counts = {}
            for key in ("jpeg_quality", "total_episodes", "total_frames"):
                value = d.get(key, 90 if key == "jpeg_quality" else 0)
                if not _is_int(value) or value < 0:
                    raise ValueError(f"{key!r} must be a non-negative whole number, not {value!r:.40}")
                counts[key] = int(value)
            return cls(
                features={n: FeatureSpec.from_dict(n, f) for n, f in features.items()},
                fps=float(fps),
                robot_type=_text(d, "robot_type", ""),
                image_encoding=_text(d, "image_encoding", "", "jpeg"),
                format_version=version,
                extra=dict(extra),
                **counts,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{source}: invalid dataset description ({type(e).__name__}: {e})") from e

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> DatasetInfo:
        return cls.from_dict(read_json(path), source=str(path))


# The control rates a dataset may declare, in Hz: finite, from one step per 100 s to 10 kHz.
# Durations, sleeps and statistics are computed from fps, and NaN slips through every
# "fps <= 0" check; beyond these bounds a number is damage, not a recording.
MIN_FPS = 0.01
MAX_FPS = 10_000.0


def check_fps(fps: Any, what: str = "fps") -> float:
    """``fps`` as a float, or a ValueError saying the range (see ``MIN_FPS``/``MAX_FPS``)."""
    if not _is_number(fps) or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"{what} must be a number from {MIN_FPS:g} to {MAX_FPS:g} Hz, not {fps!r:.40}")
    return float(fps)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _text(d: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where + ': ' if where else ''}{key!r} must be a string, not {value!r:.40}")
    return value


def _describe(f: FeatureSpec) -> str:
    return f"{f.dtype}{list(f.shape)}" + (f" names={list(f.names)}" if f.names else "")


def read_json(
    path: Path,
    *,
    error: type[DatasetError] = DatasetError,
    missing: str = "file is missing",
    invalid_hint: str = "; restore it or run 'telecorder doctor --repair'",
) -> Any:
    """Read a JSON file, turning every failure into one ``error`` naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as e:
        raise error(f"{path}: {missing}") from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{path}: not valid JSON ({e}){invalid_hint}") from e
    except IsADirectoryError as e:
        raise error(f"{path}: is a folder, not a JSON file{invalid_hint}") from e
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from e
