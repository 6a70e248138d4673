"""The ``Policy`` interface and the description of what a policy observes (``PolicySpec``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..actions.normalize import Normalizer
from ..errors import TelecorderError

POLICY_FORMAT = "telecorder-policy/1"


class PolicyError(TelecorderError):
    """A policy cannot be loaded or used: a corrupt or incompatible checkpoint, a bad factory, a wrong output."""


@dataclass(frozen=True)
class PolicySpec:
    """What a policy observes and produces; the runner builds observations from it.

    ``state_keys`` are the dataset features concatenated (in order) into ``state``;
    ``cameras`` are the camera names whose frames arrive as ``images.<camera>``, resized to
    ``image_size`` = ``(height, width)`` (None: as recorded); ``history`` steps of each.
    ``state_normalizer`` is the normalizer the loader applied to ``state`` in training (None:
    raw). ``horizon`` is the length of the action chunks ``predict`` returns; ``fps`` the
    control rate of the training data (None: unknown).
    """

    action_dim: int
    horizon: int = 1
    state_keys: tuple[str, ...] = ("observation.state",)
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None
    history: int = 1
    fps: float | None = None
    state_normalizer: Normalizer | None = field(default=None, compare=False)
    action_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.action_dim < 1 or self.horizon < 1 or self.history < 1:
            raise PolicyError(
                f"policy spec: action_dim, horizon and history must be >= 1, got "
                f"{self.action_dim}, {self.horizon}, {self.history}"
            )
        object.__setattr__(self, "state_keys", tuple(self.state_keys))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if self.action_names is not None:
            object.__setattr__(self, "action_names", tuple(self.action_names))

    def to_dict(self) -> dict[str, Any]:
        return {
            "action_dim": self.action_dim,
            "horizon": self.horizon,
            "state_keys": list(self.state_keys),
            "cameras": list(self.cameras),
            "image_size": None if self.image_size is None else list(self.image_size),
            "history": self.history,
            "fps": self.fps,
            "state_normalizer": None if self.state_normalizer is None else self.state_normalizer.to_dict(),
            "action_names": None if self.action_names is None else list(self.action_names),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicySpec:
        norm = d.get("state_normalizer")
        return cls(
            action_dim=int(d["action_dim"]),
            horizon=int(d.get("horizon", 1)),
            state_keys=tuple(d.get("state_keys", ("observation.state",))),
            cameras=tuple(d.get("cameras", ())),
            image_size=None if d.get("image_size") is None else tuple(d["image_size"]),
            history=int(d.get("history", 1)),
            fps=None if d.get("fps") is None else float(d["fps"]),
            state_normalizer=None if norm is None else Normalizer.from_dict(norm),
            action_names=None if d.get("action_names") is None else tuple(d["action_names"]),
        )


class Policy(ABC):
    """A control policy: an observation in, a chunk of actions out.

    ``predict`` receives one observation in the layout of a :class:`TorchDataset` item, not
    batched, as numpy arrays:

    * ``state``: float32 ``[history, D]``, the features ``spec.state_keys`` concatenated and
      normalized with ``spec.state_normalizer``; ``state_is_pad``: bool ``[history]``;
    * ``images.<camera>``: uint8 ``[history, 3, h, w]`` RGB for each of ``spec.cameras``;
    * ``language_instruction``: str (the ``--task``).

    It returns ``[k, action_dim]`` actions in robot units (k >= 1, usually ``spec.horizon``),
    the first for the step observed, or ``None`` when it has no valid chunk this time (e.g.
    action tokens that decode to no chunk): the runner then holds the last command, counts it
    (``policy_invalid_chunks`` of the episode) and asks again on the next tick. It may be slow:
    the runner calls it off the control thread. ``reset`` is called at the start of every episode.
    """

    spec: PolicySpec

    def reset(self) -> None:  # noqa: B027 - a stateless policy has nothing to reset
        """Forget the previous episode (recurrent state, caches)."""

    @abstractmethod
    def predict(self, observation: Mapping[str, Any]) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - most policies hold nothing to release
        """Release what the policy holds (a GPU context, a server connection)."""

    def describe(self) -> str:
        return type(self).__name__


def last_step_inputs(observation: Mapping[str, Any], who: str, state_dim: int, cameras: tuple[str, ...],
                     image_size: tuple[int, int] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The newest step of an observation, checked: ``state`` ``[1, state_dim]`` float32 and each camera's
    frame ``[1, 3, h, w]`` uint8 (a history-less input is taken as one step); a :class:`PolicyError`
    naming ``who`` and the key otherwise."""
    if "state" not in observation:
        raise PolicyError(f"{who}: observation has no 'state' (has {sorted(observation)})")
    state = np.asarray(observation["state"], dtype=np.float32)
    if state.ndim == 1:
        state = state[None]
    if state.ndim != 2 or state.shape[1] != state_dim:
        raise PolicyError(f"{who}: 'state' must be [history, {state_dim}], got {state.shape}")
    images = {}
    h, w = image_size or (0, 0)
    for cam in cameras:
        key = f"images.{cam}"
        if key not in observation:
            raise PolicyError(f"{who}: observation has no {key!r} (has {sorted(observation)})")
        img = np.asarray(observation[key])
        if img.ndim == 3:
            img = img[None]
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[1:] != (3, h, w):
            raise PolicyError(f"{who}: {key!r} must be uint8 [history, 3, {h}, {w}], got {img.dtype} {img.shape}")
        images[cam] = np.ascontiguousarray(img[-1:])
    return np.ascontiguousarray(state[-1:]), images


def check_model_fits_spec(who: str, spec: PolicySpec, action_dim: int, horizon: int, cameras: tuple[str, ...]) -> None:
    """A model's output shape and cameras against the spec it is deployed with; a :class:`PolicyError` else."""
    if action_dim != spec.action_dim or horizon != spec.horizon:
        raise PolicyError(f"{who}: model outputs {horizon} x {action_dim}, spec says {spec.horizon} x {spec.action_dim}")
    if tuple(cameras) != tuple(spec.cameras):
        raise PolicyError(f"{who}: model cameras {tuple(cameras)} differ from spec {spec.cameras}")
