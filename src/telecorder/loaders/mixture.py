"""Several loaders sampled by weight, as Octo mixes its training sets, across robots too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import missing_extra
from .embodiment import MixtureLayout, component_layout, differ
from .mixture_spec import MixtureError, mixture_weights

try:
    import torch
    from torch.utils.data import Dataset as _TorchBase
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["MixtureDataset", "MixtureError"]


def _pad_last(t: torch.Tensor, width: int) -> torch.Tensor:
    """``t`` with zeros appended to its last dimension up to ``width``."""
    if t.shape[-1] == width:
        return t
    out = t.new_zeros((*t.shape[:-1], width))
    out[..., : t.shape[-1]] = t
    return out


class MixtureDataset(_TorchBase):
    """Several datasets sampled by weight, as Octo mixes its training sets, across robots too.

    ``components`` are ``(dataset, weight)`` pairs, or datasets with ``weights`` given once:
    ``"steps"`` (each in proportion to its samples; the default for bare datasets), ``"uniform"``
    (each dataset alike) or one number per dataset.

    Map-style with a fixed ``length`` (default: the components' total): item ``i`` draws
    a component with probability proportional to its weight and then a uniform item of
    it, from a generator seeded by ``(seed, epoch, i)``. Items are therefore reproducible
    whatever the DataLoader's worker count or shuffling (:meth:`choose` says which);
    call :meth:`set_epoch` to draw fresh samples each epoch. Each component keeps its own
    normalization statistics and options and may be of any format the loaders read; items
    gain ``dataset_index`` (int64 tensor).

    Components of one shape (same widths, cameras and image sizes) are served as they are.
    Components that differ, or any mixture given ``names``, ``camera_maps`` or
    ``cross_embodiment=True``, are padded into one layout that the default collate batches:

    * ``action`` ``[horizon, A]`` and ``state`` ``[history, D]`` with zeros (in normalized units)
      up to the widest component's width (or ``action_dim``/``state_dim`` if wider);
      ``action_dim_is_pad`` ``[A]`` / ``state_dim_is_pad`` ``[D]``: bool, True where a dimension is padding;
    * ``images.<slot>`` for every camera slot of the mixture, and ``image_is_pad`` (bool, one per
      slot in :attr:`slots` order), True where the component has no camera in that slot (its
      image is zeros). ``camera_maps`` gives each component a ``{slot: camera}`` map (None:
      its first camera fills ``"primary"`` and each other camera a slot of its own name);
      cameras a map leaves out are not served (build the TorchDataset with ``cameras=`` to
      skip decoding them). A slot's images must have one size across components;
    * ``embodiment_id`` (int64) and ``embodiment`` (str): the component's name from ``names``, else
      its robot type, else its folder; components of one name share an id (and must have the
      same widths and dimension names).

    Components must then share history and horizon. :meth:`embodiments` and :meth:`describe`
    give the layout as JSON-ready dicts for a checkpoint.
    """

    def __init__(
        self,
        components: Sequence[Any],
        seed: int = 0,
        length: int | None = None,
        *,
        weights: str | Sequence[float] | None = None,
        names: Sequence[str | None] | None = None,
        camera_maps: Sequence[Mapping[str, str] | None] | None = None,
        cross_embodiment: bool | None = None,
        action_dim: int | None = None,
        state_dim: int | None = None,
    ) -> None:
        if not components:
            raise MixtureError("MixtureDataset needs at least one (dataset, weight) pair")
        pairs = [isinstance(c, tuple) for c in components]
        if all(pairs):
            if weights is not None:
                raise MixtureError("give the weights once: as (dataset, weight) pairs or as weights=, not both")
            self.datasets = [d for d, _ in components]
            raw = mixture_weights([len(d) for d in self.datasets], [w for _, w in components])
        elif not any(pairs):
            self.datasets = list(components)
            raw = mixture_weights([len(d) for d in self.datasets], "steps" if weights is None else weights)
        else:
            raise MixtureError("give every component as a (dataset, weight) pair, or none")
        weights_arr = np.array(raw, dtype=np.float64)
        if (weights_arr < 0).any() or not np.isfinite(weights_arr).all() or weights_arr.sum() <= 0:
            raise MixtureError(f"mixture weights must be finite, >= 0 and not all zero, got {weights_arr.tolist()}")
        for k, (d, w) in enumerate(zip(self.datasets, weights_arr, strict=True)):
            if w > 0 and len(d) == 0:
                raise MixtureError(f"component {k}, of positive weight, has no samples")
        self.weights = weights_arr / weights_arr.sum()
        self._cdf = np.cumsum(self.weights)
        self.seed = int(seed)
        self.epoch = 0
        self.length = int(length) if length is not None else sum(len(d) for d in self.datasets)

        n = len(self.datasets)
        for what, given in (("names", names), ("camera_maps", camera_maps)):
            if given is not None and len(given) != n:
                raise MixtureError(f"{len(given)} {what} for {n} dataset(s): give one per dataset (None: the default)")
        asked = any(x is not None for x in (names, camera_maps, action_dim, state_dim)) or bool(cross_embodiment)
        try:
            self._layouts = [component_layout(d, k, None if names is None else names[k],
                                              None if camera_maps is None else camera_maps[k])
                             for k, d in enumerate(self.datasets)]
        except MixtureError:
            if asked:
                raise
            self._layouts = [None] * n  # served as they are, as before cross-embodiment mixtures
        layouts = [lay for lay in self._layouts if lay is not None]
        if cross_embodiment is None:
            cross_embodiment = asked or (len(layouts) == n and differ(layouts))
        #: The padded layout (None: components are served as they are).
        self.layout: MixtureLayout | None = None
        if cross_embodiment:
            if len(layouts) != n:
                k = next(k for k, lay in enumerate(self._layouts) if lay is None)
                raise MixtureError(f"component {k} ({type(self.datasets[k]).__name__}) does not say its widths and "
                                   "cameras; a cross-embodiment mixture takes TorchDataset components")
            self.layout = MixtureLayout(layouts, action_dim, state_dim)
            self._masks = [self._component_masks(k) for k in range(n)]

    def _component_masks(self, k: int) -> dict[str, torch.Tensor]:
        assert self.layout is not None
        lay = self.layout.components[k]
        return {
            "action_dim_is_pad": torch.arange(self.layout.action_dim) >= lay.action_dim,
            "state_dim_is_pad": torch.arange(self.layout.state_dim) >= lay.state_dim,
            "image_is_pad": torch.tensor([s not in lay.slots for s in self.layout.slots], dtype=torch.bool),
        }

    @property
    def slots(self) -> list[str]:
        """The camera slots of a padded mixture (``images.<slot>`` keys, ``image_is_pad`` order); [] otherwise."""
        return list(self.layout.slots) if self.layout is not None else []

    def _described(self) -> MixtureLayout:
        if self.layout is not None:
            return self.layout
        layouts = [lay for lay in self._layouts if lay is not None]
        if len(layouts) != len(self._layouts):
            raise MixtureError("a component does not say its widths and cameras (not a TorchDataset)")
        return MixtureLayout(layouts)

    def embodiments(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per embodiment, by id: ``name``, ``id``, ``action_dim``, ``state_dim``,
        ``action_names``, ``state_names``, ``cameras`` (slot -> camera)."""
        return [e.to_dict() for e in self._described().embodiments]

    def describe(self) -> dict[str, Any]:
        """JSON-ready: padded widths, slots and image sizes, embodiments, and each dataset's
        embodiment id and sampling weight (``padded``: whether items are padded)."""
        layout = self._described()
        return {**layout.describe(), "padded": self.layout is not None,
                "datasets": [{"path": str(getattr(d, "root", "")), "embodiment_id": layout.ids[k],
                              "weight": float(self.weights[k])} for k, d in enumerate(self.datasets)]}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        # Components that draw per epoch themselves (TorchDataset's paraphrase="random") follow.
        for d in self.datasets:
            if callable(getattr(d, "set_epoch", None)):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def choose(self, i: int) -> tuple[int, int]:
        """(component, item within it) that item ``i`` stands for."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self.datasets) - 1)
        while self.weights[k] == 0:  # float round-off at the top of the cdf
            k -= 1
        return k, int(rng.integers(len(self.datasets[k])))

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, j = self.choose(int(i))
        item = dict(self.datasets[k][j])
        if self.layout is not None:
            item = self._pad(k, item)
        item["dataset_index"] = torch.tensor(k, dtype=torch.int64)
        return item

    def close(self) -> None:
        """Close what each component opened in this process (episodes, decoders, threads)."""
        for d in self.datasets:
            if callable(getattr(d, "close", None)):
                d.close()

    def _pad(self, k: int, item: dict[str, Any]) -> dict[str, Any]:
        """A component's item in the mixture's layout: slots, padded widths, masks, embodiment."""
        assert self.layout is not None
        layout, lay = self.layout, self.layout.components[k]
        out: dict[str, Any] = {}
        for slot in layout.slots:
            cam = lay.slots.get(slot)
            if cam is None:
                h, w = layout.sizes[slot]
                out[f"images.{slot}"] = torch.zeros((layout.history, 3, h, w), dtype=torch.uint8)
            else:
                out[f"images.{slot}"] = item[f"images.{cam}"]
        out.update((key, v) for key, v in item.items() if not key.startswith("images."))
        out["state"] = _pad_last(item["state"], layout.state_dim)
        out["action"] = _pad_last(item["action"], layout.action_dim)
        out.update((key, m.clone()) for key, m in self._masks[k].items())
        out["embodiment_id"] = torch.tensor(layout.ids[k], dtype=torch.int64)
        out["embodiment"] = lay.name
        return out
