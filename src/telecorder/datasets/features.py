"""The data model's schema: what each recorded feature is, and what a dataset holds.

A feature is named with dots (``observation.state``, ``observation.images.front``,
``action``); in an episode's HDF5 file the dots become groups
(``observation/state``). Camera features have ``kind == "image"`` and are stored
encoded; numeric features are stored as plain arrays with one row per control tick.
"""

from __future__ import annotations

import json
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
        return cls(
            name=name,
            dtype=str(d["dtype"]),
            shape=tuple(d["shape"]),
            names=tuple(d["names"]) if d.get("names") is not None else None,
            unit=str(d.get("unit", "")),
            kind=str(d.get("kind", "numeric")),
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
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")

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
            return cls(
                features={n: FeatureSpec.from_dict(n, f) for n, f in d["features"].items()},
                fps=float(d["fps"]),
                robot_type=str(d["robot_type"]),
                image_encoding=str(d.get("image_encoding", "jpeg")),
                jpeg_quality=int(d.get("jpeg_quality", 90)),
                format_version=version,
                total_episodes=int(d.get("total_episodes", 0)),
                total_frames=int(d.get("total_frames", 0)),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{source}: invalid dataset description ({type(e).__name__}: {e})") from e

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> DatasetInfo:
        return cls.from_dict(read_json(path), source=str(path))


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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e}){invalid_hint}") from e
