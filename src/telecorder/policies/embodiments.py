"""One BC model for several robots: what a cross-embodiment checkpoint holds and how a robot picks its part.

A policy trained on a mixture of robots (``telecorder train --mixture``) has one model whose
input is the state padded to the widest robot's, feature by feature (every robot's joint state
starts at the same place, and its object pose at another), plus a one-hot embodiment id, and whose output
is an action chunk as wide as the widest robot's action. Each robot (embodiment) keeps what
its own loader used: the state features, the state normalizer, the action normalizer, the
action names. :class:`MixturePolicy` holds them all; :meth:`MixturePolicy.for_robot` returns
the :class:`EmbodimentPolicy` of the robot a runner drives (by its ``robot_type``, else by its
action names), which reads that robot's observations and returns that robot's actions. A robot
the policy was not trained for is refused, naming the ones it knows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..actions.normalize import Normalizer
from ..errors import missing_extra
from .base import Policy, PolicyError, PolicySpec, last_step_inputs
from .limits import MAX_EMBODIMENTS

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["MAX_EMBODIMENTS", "EmbodimentEntry", "EmbodimentPolicy", "MixturePolicy", "mixture_meta", "model_input", "place_state"]


@dataclass(frozen=True)
class EmbodimentEntry:
    """One robot of a mixture policy: its name (robot type), id, spec and action normalizer."""

    name: str
    id: int
    spec: PolicySpec
    action_normalizer: Normalizer
    state_dim: int
    #: Where each of its state values goes in the padded state (each state feature has its own place,
    #: so that e.g. the object pose reads the same for every robot); default: the first ``state_dim``.
    state_slots: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        slots = tuple(int(s) for s in self.state_slots) or tuple(range(self.state_dim))
        if len(slots) != self.state_dim or len(set(slots)) != len(slots) or min(slots, default=0) < 0:
            raise PolicyError(f"embodiment {self.name!r}: {len(slots)} distinct state slots >= 0 needed for its "
                              f"{self.state_dim}-D state")
        object.__setattr__(self, "state_slots", slots)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "state_dim": self.state_dim, "state_slots": list(self.state_slots),
                "spec": self.spec.to_dict(), "action_normalizer": self.action_normalizer.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmbodimentEntry:
        return cls(str(d["name"]), int(d["id"]), PolicySpec.from_dict(d["spec"]),
                   Normalizer.from_dict(d["action_normalizer"]), int(d["state_dim"]),
                   tuple(int(s) for s in d.get("state_slots") or ()))


def mixture_meta(mixture: MixturePolicy | None) -> dict[str, Any]:
    """The ``policy.json`` entries of a policy of several robots (none for one robot)."""
    if mixture is None:
        return {}
    return {"embodiments": [e.to_dict() for e in mixture.embodiments], "state_width": mixture.state_width}


def place_state(state: torch.Tensor, slots: Sequence[int], width: int) -> torch.Tensor:
    """A robot's state ``[B, D]`` in the padded layout ``[B, width]`` (zeros where it has nothing)."""
    out = torch.zeros(state.shape[0], width, dtype=state.dtype)
    out[:, list(slots)] = state
    return out


def model_input(state: torch.Tensor, embodiment: torch.Tensor, count: int) -> torch.Tensor:
    """The padded ``state`` ``[B, width]`` with the one-hot ``embodiment`` ids ``[B]`` appended."""
    onehot = torch.nn.functional.one_hot(embodiment.long(), count).to(state.dtype)
    return torch.cat([state, onehot], dim=1)


class MixturePolicy(Policy):
    """A model trained on several robots; :meth:`for_robot` gives the policy of one of them.

    ``inner`` is the trained policy over the padded layout (a :class:`~.bc.BCPolicy` or a
    :class:`~.vla.policy.VLAPolicy` whose state is the padded state plus the one-hot id and whose
    actions are the padded chunk, never unnormalized: each robot does that with its own normalizer).
    Used directly (no robot chosen), it is the first embodiment's policy.
    """

    def __init__(self, inner: Any, embodiments: Sequence[EmbodimentEntry], state_width: int,
                 info: dict[str, Any] | None = None) -> None:
        if not embodiments:
            raise PolicyError("a mixture policy needs at least one embodiment")
        self.inner = inner
        self.embodiments = list(embodiments)
        self.state_width = int(state_width)
        self.info = dict(info or {})
        cfg = inner.model.cfg
        if cfg.state_dim != self.state_width + len(self.embodiments):
            raise PolicyError(f"mixture policy: the model reads {cfg.state_dim} state values, the embodiments need "
                              f"{self.state_width} + {len(self.embodiments)} (padded state + one-hot id)")
        for e in self.embodiments:
            if (e.spec.action_dim > cfg.action_dim or max(e.state_slots, default=0) >= self.state_width
                    or e.spec.horizon != cfg.horizon or e.id >= len(self.embodiments)):
                raise PolicyError(f"mixture policy: embodiment {e.name!r} ({e.state_dim}-D state, "
                                  f"{e.spec.action_dim}-D actions) does not fit the model")
        self._default = EmbodimentPolicy(self, self.embodiments[0])
        self.spec = self._default.spec

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.embodiments]

    def for_robot(self, robot_type: str | None, action_names: Sequence[str] | None = None) -> EmbodimentPolicy:
        """The policy of the robot a runner drives: by ``robot_type``, else by identical action names."""
        for e in self.embodiments:
            if robot_type and e.name == robot_type:
                return EmbodimentPolicy(self, e)
        if action_names is not None:
            for e in self.embodiments:
                if e.spec.action_names is not None and tuple(e.spec.action_names) == tuple(action_names):
                    return EmbodimentPolicy(self, e)
        known = ", ".join(f"{e.name} ({e.spec.action_dim}-D)" for e in self.embodiments)
        raise PolicyError(f"this policy was not trained for robot {robot_type!r}"
                          f"{f' ({len(action_names)}-D actions)' if action_names is not None else ''}; "
                          f"it knows: {known}. Train it with a dataset of this robot in the mixture")

    def predict(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        return self._default.predict(observation)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return f"mixture of {', '.join(self.names)}: {self.inner.describe()}"


class EmbodimentPolicy(Policy):
    """One robot's view of a :class:`MixturePolicy`: its observations in, its actions out."""

    def __init__(self, parent: MixturePolicy, entry: EmbodimentEntry) -> None:
        self.parent, self.entry, self.spec = parent, entry, entry.spec

    def reset(self) -> None:
        self.parent.inner.reset()

    def predict(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        state, _ = last_step_inputs(observation, f"mixture policy ({self.entry.name})", self.entry.state_dim,
                                    (), None)
        padded = place_state(torch.from_numpy(state), self.entry.state_slots, self.parent.state_width)
        x = model_input(padded, torch.tensor([self.entry.id]), len(self.parent.embodiments))
        y = self.parent.inner.predict_normalized({**observation, "state": x.numpy()})
        if y is None:  # tokens that decode to no chunk: the runner holds the last command
            return None
        y = np.asarray(y, dtype=np.float64)[:, : self.spec.action_dim]
        return np.asarray(self.entry.action_normalizer.unnormalize(y), dtype=np.float64)

    def describe(self) -> str:
        return f"{self.parent.describe()}, as {self.entry.name}"
