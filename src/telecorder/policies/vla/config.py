"""The VLA's architecture and head, as saved in ``policy.json``: enough to rebuild the model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..base import PolicyError

HEADS = ("bins", "fast", "flow", "l1")
BIN_KINDS = ("uniform", "quantile")
TOKEN_HEADS = ("bins", "fast")


@dataclass(frozen=True)
class VLAConfig:
    """Sizes of the encoder and of the action head.

    The encoder reads ``[instruction tokens, image tokens, state token, readout token]``;
    ``action_vocab`` and ``max_action_tokens`` size the autoregressive decoder of the token
    heads (``bins``: one token per action dimension per step; ``fast``: a FAST sequence and
    an end token), and are 0 for ``flow`` and ``l1``.
    """

    state_dim: int
    action_dim: int
    horizon: int
    head: str = "flow"
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None  # (height, width)
    text_vocab: int = 64
    max_text_tokens: int = 24
    width: int = 128
    layers: int = 3
    attention_heads: int = 4
    mlp_ratio: int = 2
    decoder_layers: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 64)
    groups: int = 8
    action_vocab: int = 0
    max_action_tokens: int = 0
    flow_steps: int = 10
    dropout: float = 0.0
    token_dropout: float = 0.5
    # The state's dimensions, one tuple per state token (empty: one token of every dimension).
    state_groups: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "state_groups", tuple(tuple(int(i) for i in g) for g in self.state_groups))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if self.head not in HEADS:
            raise PolicyError(f"vla config: unknown head {self.head!r} (use one of {', '.join(HEADS)})")
        positive = {"state_dim": self.state_dim, "action_dim": self.action_dim, "horizon": self.horizon,
                    "text_vocab": self.text_vocab, "max_text_tokens": self.max_text_tokens, "width": self.width,
                    "layers": self.layers, "attention_heads": self.attention_heads, "mlp_ratio": self.mlp_ratio,
                    "decoder_layers": self.decoder_layers, "flow_steps": self.flow_steps}
        bad = [f"{k}={v}" for k, v in positive.items() if int(v) < 1]
        if bad:
            raise PolicyError(f"vla config: {', '.join(bad)} must be >= 1")
        if self.width % self.attention_heads:
            raise PolicyError(f"vla config: width {self.width} must be a multiple of attention_heads "
                              f"{self.attention_heads}")
        if self.cameras and self.image_size is None:
            raise PolicyError("vla config: cameras need an image_size")
        if any(c % self.groups for c in self.channels):
            raise PolicyError(f"vla config: channels {self.channels} must be multiples of groups={self.groups}")
        if self.head in TOKEN_HEADS and (self.action_vocab < 2 or self.max_action_tokens < 1):
            raise PolicyError(f"vla config: the {self.head} head needs action_vocab >= 2 and max_action_tokens >= 1")
        flat = [i for g in self.state_groups for i in g]
        if self.state_groups and (any(not g for g in self.state_groups) or len(set(flat)) != len(flat)
                                  or any(not 0 <= i < self.state_dim for i in flat)):
            raise PolicyError(f"vla config: state_groups must be non-empty, disjoint lists of state dimensions "
                              f"0..{self.state_dim - 1}")
        for name in ("dropout", "token_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise PolicyError(f"vla config: {name} {getattr(self, name)} must be in [0, 1)")

    @property
    def groups_of_state(self) -> tuple[tuple[int, ...], ...]:
        """The dimensions of each state token."""
        return self.state_groups or (tuple(range(self.state_dim)),)

    @property
    def image_grid(self) -> tuple[int, int]:
        """Rows and columns of the image-token grid: the frame halved once per stem layer (rounded up)."""
        h, w = self.image_size or (0, 0)
        for _ in self.channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        d["channels"] = list(self.channels)
        d["state_groups"] = [list(g) for g in self.state_groups]
        d["image_size"] = None if self.image_size is None else list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VLAConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise PolicyError(f"vla config: unknown field(s) {unknown}")
        kw = dict(d)
        for k in ("cameras", "channels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "state_groups" in kw:
            kw["state_groups"] = tuple(tuple(g) for g in kw["state_groups"])
        if kw.get("image_size") is not None:
            kw["image_size"] = tuple(kw["image_size"])
        return cls(**kw)
