"""Cross-embodiment layout of a mixture: which robot each component is, its widths and camera slots.

Torch-free and JSON-ready, so that a trainer can store :class:`Embodiment` descriptions in a
checkpoint and a runner can pick one by robot without importing the loaders' heavy parts. The
padding itself is :class:`~telecorder.loaders.mixture.MixtureDataset`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mixture_spec import MixtureError, check_camera_map

__all__ = ["PRIMARY_SLOT", "ComponentLayout", "Embodiment", "MixtureLayout", "component_layout", "default_name",
           "differ"]

#: The slot the first camera of a component fills when no camera map is given (Octo's name).
PRIMARY_SLOT = "primary"
# What a component must expose (TorchDataset does) for its widths and cameras to be known.
_NEEDS = ("info", "cameras", "history", "horizon", "state_keys", "action_key")


@dataclass(frozen=True)
class Embodiment:
    """One robot of a mixture: its id, widths, dimension names and cameras (slot -> camera)."""

    name: str
    id: int
    action_dim: int
    state_dim: int
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    cameras: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "action_dim": self.action_dim, "state_dim": self.state_dim,
                "action_names": list(self.action_names), "state_names": list(self.state_names),
                "cameras": dict(self.cameras)}


@dataclass(frozen=True)
class ComponentLayout:
    """What one component serves: embodiment name, widths, names, camera slots, sizes, history, horizon."""

    where: str  # "component 2 (path)", for messages
    name: str
    action_dim: int
    state_dim: int
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    served: tuple[str, ...]  # the cameras its items hold, in order
    slots: dict[str, str]  # slot -> camera
    sizes: dict[str, tuple[int, int]]  # camera -> (h, w) of its frames
    history: int
    horizon: int
    tokenized: bool


def default_name(ds: Any) -> str:
    """The embodiment name of a dataset: its robot type, else its folder (the one above a version folder)."""
    robot = str(getattr(ds.info, "robot_type", "") or "")
    if robot and robot != "unknown":
        return robot
    root = Path(getattr(ds, "root", "") or "dataset")
    if re.fullmatch(r"v?[\d.]+", root.name) and root.parent.name:
        return root.parent.name  # RLDS: <name>/<version>/
    return root.name or "dataset"


def _width(info: Any, key: str) -> int:
    return int(math.prod(info.features[key].shape))


def _names(info: Any, key: str) -> tuple[str, ...]:
    """Names of each dimension of ``key``; ``key[i]`` where the dataset gives none."""
    spec = info.features[key]
    width = _width(info, key)
    names = tuple(spec.names or ())
    return names if len(names) == width else tuple(f"{key}[{i}]" for i in range(width))


def component_layout(ds: Any, k: int, name: str | None = None,
                     cameras: Mapping[str, str] | None = None) -> ComponentLayout | None:
    """The layout of component ``k`` (None when it is no TorchDataset-like loader).

    ``cameras`` maps slots to the component's cameras; by default its first camera is
    :data:`PRIMARY_SLOT` and every other camera fills a slot of its own name.
    """
    if any(not hasattr(ds, a) for a in _NEEDS):
        return None
    info = ds.info
    where = f"component {k} ({getattr(ds, 'root', type(ds).__name__)})"
    served = tuple(str(c) for c in ds.cameras)
    if cameras is None:
        slots = {(PRIMARY_SLOT if i == 0 else cam): cam for i, cam in enumerate(served)}
        if len(slots) != len(served):
            raise MixtureError(f"{where}: its camera {PRIMARY_SLOT!r} is not its first one; give it a camera map")
    else:
        slots = check_camera_map(cameras, where)
        unknown = [c for c in slots.values() if c not in served]
        if unknown:
            raise MixtureError(f"{where}: the camera map names camera(s) {unknown} it does not serve (serves "
                               f"{list(served) or 'none'}; build its TorchDataset with cameras=[...] that include them)")
    image_size = getattr(ds, "image_size", None)
    sizes: dict[str, tuple[int, int]] = {}
    for f in info.image_features:
        if f.camera in served:
            sizes[f.camera] = (int(image_size[0]), int(image_size[1])) if image_size else (int(f.shape[0]),
                                                                                          int(f.shape[1]))
    state_keys = tuple(ds.state_keys)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise MixtureError(f"{where}: an embodiment name must be a non-empty string, not {name!r:.40}")
    return ComponentLayout(
        where=where, name=name or default_name(ds),
        action_dim=_width(info, ds.action_key), state_dim=sum(_width(info, s) for s in state_keys),
        action_names=_names(info, ds.action_key),
        state_names=tuple(n for s in state_keys for n in _names(info, s)),
        served=served, slots=slots, sizes=sizes, history=int(ds.history), horizon=int(ds.horizon),
        tokenized=getattr(ds, "tokenizer", None) is not None,
    )


def differ(layouts: Sequence[ComponentLayout]) -> bool:
    """Whether the components' items differ in shape or keys (then only a padded mixture batches them)."""
    first = layouts[0]
    return any((lay.action_dim, lay.state_dim, set(lay.served), lay.sizes)
               != (first.action_dim, first.state_dim, set(first.served), first.sizes) for lay in layouts[1:])


class MixtureLayout:
    """The shape every item of a cross-embodiment mixture has, and which embodiment each component is.

    ``action_dim``/``state_dim``: the widest component's (or the widths asked for, if wider);
    ``slots``: every camera slot in order of first appearance; ``sizes``: slot -> (h, w).
    """

    def __init__(self, layouts: Sequence[ComponentLayout], action_dim: int | None = None,
                 state_dim: int | None = None) -> None:
        self.components = list(layouts)
        first = self.components[0]
        for lay in self.components[1:]:
            if (lay.history, lay.horizon) != (first.history, first.horizon):
                raise MixtureError(f"{lay.where} has history {lay.history} and horizon {lay.horizon}, {first.where} "
                                   f"{first.history} and {first.horizon}: give every dataset the same ones")
            if lay.tokenized != first.tokenized:
                with_tok = lay if lay.tokenized else first
                raise MixtureError(f"{with_tok.where} has an action tokenizer and another component none: give "
                                   "every dataset one, or none")
        self.history, self.horizon = first.history, first.horizon
        self.action_dim = self._wide("action_dim", action_dim)
        self.state_dim = self._wide("state_dim", state_dim)
        self.slots: list[str] = []
        self.sizes: dict[str, tuple[int, int]] = {}
        owner: dict[str, tuple[ComponentLayout, str]] = {}
        for lay in self.components:
            for slot, cam in lay.slots.items():
                size = lay.sizes[cam]
                if slot not in self.sizes:
                    self.slots.append(slot)
                    self.sizes[slot], owner[slot] = size, (lay, cam)
                elif self.sizes[slot] != size:
                    other, other_cam = owner[slot]
                    raise MixtureError(
                        f"camera slot {slot!r}: {lay.where} camera {cam!r} gives {size[0]}x{size[1]} images, "
                        f"{other.where} camera {other_cam!r} {self.sizes[slot][0]}x{self.sizes[slot][1]}; "
                        "give every TorchDataset the same image_size=(h, w)")
        self.embodiments: list[Embodiment] = []
        self.ids: list[int] = []
        by_name: dict[str, tuple[int, ComponentLayout]] = {}
        for lay in self.components:
            if lay.name not in by_name:
                by_name[lay.name] = (len(self.embodiments), lay)
                self.embodiments.append(Embodiment(lay.name, len(self.embodiments), lay.action_dim, lay.state_dim,
                                                   lay.action_names, lay.state_names, dict(lay.slots)))
            else:
                eid, seen = by_name[lay.name]
                ours = (lay.action_dim, lay.state_dim, lay.action_names, lay.state_names)
                theirs = (seen.action_dim, seen.state_dim, seen.action_names, seen.state_names)
                if ours != theirs:
                    raise MixtureError(
                        f"{lay.where} and {seen.where} are both embodiment {lay.name!r} but their actions/states "
                        f"differ ({lay.action_dim}/{lay.state_dim}-D vs {seen.action_dim}/{seen.state_dim}-D, or "
                        "their names); give them different names")
                for slot, cam in lay.slots.items():
                    self.embodiments[eid].cameras.setdefault(slot, cam)
            self.ids.append(by_name[lay.name][0])

    def _wide(self, attr: str, asked: int | None) -> int:
        widest = max(self.components, key=lambda lay: getattr(lay, attr))
        width = getattr(widest, attr)
        if asked is None:
            return width
        if int(asked) < width:
            raise MixtureError(f"{attr}={asked} is narrower than {widest.where}'s {width}")
        return int(asked)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: padded widths, camera slots (with sizes) and the embodiments."""
        return {"action_dim": self.action_dim, "state_dim": self.state_dim, "history": self.history,
                "horizon": self.horizon, "slots": list(self.slots),
                "image_sizes": {s: list(self.sizes[s]) for s in self.slots},
                "embodiments": [e.to_dict() for e in self.embodiments]}
