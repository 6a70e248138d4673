"""The reference behavioral-cloning policy: a small CNN + MLP that predicts action chunks.

The model (:class:`BCModel`) sees one step: the normalized state vector and, for the
``images`` variant, one RGB frame per camera. Each camera has its own encoder (four
stride-2 3x3 convolutions with GroupNorm and ReLU, then a spatial softmax over 32
keypoint maps, whose expected image coordinates are projected to 64 features; 16, 32,
64 and 64 channels: about 3x faster to train on a CPU than 32-64-128-128); the
state goes through a two-layer MLP; the concatenation goes through an MLP head that
outputs ``horizon`` actions at once (ACT-style chunking without the CVAE), in the
action normalizer's units. Training minimizes the L1 error over the non-padded rows.

:class:`BCPolicy` wraps a model with its :class:`PolicySpec` and action normalizer and
turns one observation (the loader's layout) into raw-unit actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..actions.normalize import Normalizer
from ..errors import missing_extra
from .base import Policy, PolicyError, PolicySpec, check_model_fits_spec, last_step_inputs

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["ENV_STATE_KEY", "OBS_VARIANTS", "BCConfig", "BCModel", "BCPolicy"]

ENV_STATE_KEY = "observation.environment_state"
OBS_VARIANTS = ("state", "images")


@dataclass(frozen=True)
class BCConfig:
    """The model's architecture; saved in ``policy.json`` and enough to rebuild it."""

    state_dim: int
    action_dim: int
    horizon: int
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None  # (height, width) of the camera inputs
    channels: tuple[int, ...] = (16, 32, 64, 64)
    keypoints: int = 32
    image_features: int = 64
    state_hidden: int = 128
    hidden: int = 256
    head_layers: int = 2
    groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if self.state_dim < 1 or self.action_dim < 1 or self.horizon < 1:
            raise PolicyError(
                f"bc config: state_dim, action_dim and horizon must be >= 1, got "
                f"{self.state_dim}, {self.action_dim}, {self.horizon}"
            )
        if self.cameras and self.image_size is None:
            raise PolicyError("bc config: cameras need an image_size")
        if any(c % self.groups for c in self.channels):
            raise PolicyError(f"bc config: channels {self.channels} must be multiples of groups={self.groups}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        d["channels"] = list(self.channels)
        d["image_size"] = None if self.image_size is None else list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BCConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise PolicyError(f"bc config: unknown field(s) {unknown}")
        kw = dict(d)
        for k in ("cameras", "channels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if kw.get("image_size") is not None:
            kw["image_size"] = tuple(kw["image_size"])
        return cls(**kw)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image coordinates of each of ``keypoints`` learned feature maps."""

    def __init__(self, in_channels: int, keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, keypoints, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        b, k, h, w = x.shape
        attn = torch.softmax(x.reshape(b, k, h * w), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
        xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # [h*w, 2]
        return (attn @ grid).reshape(b, 2 * k)


class ImageEncoder(nn.Module):
    """uint8 ``[B, 3, h, w]`` -> ``[B, image_features]``."""

    def __init__(self, cfg: BCConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(cfg.groups, c), nn.ReLU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, cfg.keypoints)
        self.out = nn.Sequential(nn.Linear(2 * cfg.keypoints, cfg.image_features), nn.ReLU())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float() / 255.0 - 0.5
        return self.out(self.pool(self.conv(x)))


def _mlp(d_in: int, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(d_in, hidden), nn.ReLU()]
        d_in = hidden
    return nn.Sequential(*mods)


class BCModel(nn.Module):
    """State (+ camera frames) of one step -> a normalized action chunk ``[B, horizon, A]``."""

    def __init__(self, cfg: BCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleDict({cam: ImageEncoder(cfg) for cam in cfg.cameras})
        self.state_mlp = _mlp(cfg.state_dim, cfg.state_hidden, 2)
        d = cfg.state_hidden + cfg.image_features * len(cfg.cameras)
        self.head = _mlp(d, cfg.hidden, cfg.head_layers)
        self.out = nn.Linear(cfg.hidden, cfg.horizon * cfg.action_dim)

    def forward(self, state: torch.Tensor, images: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``state`` float ``[B, D]``; ``images[cam]`` uint8 ``[B, 3, h, w]``."""
        feats = [self.state_mlp(state)]
        for cam in self.cfg.cameras:
            if images is None or cam not in images:
                raise PolicyError(f"bc model: no image for camera {cam!r}")
            feats.append(self.encoders[cam](images[cam]))
        y = self.out(self.head(torch.cat(feats, dim=-1)))
        return y.reshape(-1, self.cfg.horizon, self.cfg.action_dim)


@dataclass(eq=False)
class BCPolicy(Policy):
    """A trained :class:`BCModel` as a :class:`Policy`: one observation in, raw actions out.

    ``num_threads`` (default 1; None leaves torch's setting) is applied with
    ``torch.set_num_threads`` when the policy is built: one observation through this small
    model takes a few milliseconds on one core, and more intra-op threads only compete with
    the control loop. The same count gives bitwise-identical outputs from run to run.
    """

    model: BCModel
    spec: PolicySpec
    action_normalizer: Normalizer
    num_threads: int | None = 1
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        self.model.eval()
        cfg = self.model.cfg
        check_model_fits_spec("bc policy", self.spec, cfg.action_dim, cfg.horizon, cfg.cameras)

    def _inputs(self, observation: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.model.cfg
        state, images = last_step_inputs(observation, "bc policy", cfg.state_dim, cfg.cameras, cfg.image_size)
        return torch.from_numpy(state), {c: torch.from_numpy(v) for c, v in images.items()}

    def predict_normalized(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The model's raw output: ``[horizon, action_dim]`` float32 in normalized units."""
        state, images = self._inputs(observation)
        with torch.inference_mode():
            y = self.model(state, images)
        return y[0].numpy().copy()

    def predict(self, observation: Mapping[str, Any]) -> np.ndarray:
        y = self.predict_normalized(observation).astype(np.float64)
        return np.asarray(self.action_normalizer.unnormalize(y), dtype=np.float64)

    def describe(self) -> str:
        cfg = self.model.cfg
        obs = f"cameras {', '.join(cfg.cameras)} + state" if cfg.cameras else "state"
        return f"BCPolicy({obs} [{cfg.state_dim}] -> {cfg.horizon} x {cfg.action_dim} actions)"
