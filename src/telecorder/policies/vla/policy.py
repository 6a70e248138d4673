"""A trained VLA as a :class:`~telecorder.policies.Policy`: instruction, frames and state in, a chunk out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...actions.normalize import Normalizer
from ...errors import missing_extra
from ..base import Policy, PolicyError, PolicySpec, check_model_fits_spec, last_step_inputs
from .action_codes import BinCodec, FastCodec
from .model import VLAModel
from .text import InstructionTokenizer

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e


@dataclass(eq=False)
class VLAPolicy(Policy):
    """``predict`` returns ``[horizon, action_dim]`` raw-unit actions, or None when the generated tokens
    do not decode to a chunk (a FAST sequence without its end token or with the wrong number of
    coefficients): the runner then holds the last command and counts it. ``invalid_chunks`` and
    ``inference_s`` (seconds per chunk) accumulate over the policy's life.

    ``temperature`` 0 decodes tokens greedily; above 0 samples them. The flow head draws its
    noise from a generator seeded with ``seed``, so a rollout is reproducible.
    """

    model: VLAModel
    spec: PolicySpec
    action_normalizer: Normalizer
    text: InstructionTokenizer
    codec: BinCodec | FastCodec | None = None
    num_threads: int | None = 1
    temperature: float = 0.0
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        self.model.eval()
        cfg = self.model.cfg
        check_model_fits_spec("vla policy", self.spec, cfg.action_dim, cfg.horizon, cfg.cameras)
        if (cfg.head in ("bins", "fast")) != (self.codec is not None):
            raise PolicyError(f"vla policy: the {cfg.head} head {'needs' if self.codec is None else 'takes no'} "
                              "action tokenizer")
        if self.codec is not None and self.codec.vocab != cfg.action_vocab:
            raise PolicyError(f"vla policy: the action tokenizer has {self.codec.vocab} ids, the model "
                              f"{cfg.action_vocab}")
        self.generator = torch.Generator().manual_seed(int(self.seed))
        self.invalid_chunks = 0
        self.inference_s: list[float] = []
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _instruction(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if text not in self._texts:
            ids, mask = self.text.encode([text])
            self._texts[text] = torch.from_numpy(ids), torch.from_numpy(mask)
        return self._texts[text]

    def _inputs(self, observation: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.model.cfg
        state, images = last_step_inputs(observation, "vla policy", cfg.state_dim, cfg.cameras, cfg.image_size)
        return torch.from_numpy(state), {c: torch.from_numpy(v) for c, v in images.items()}

    def predict_normalized(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        """The chunk in normalized units ``[horizon, action_dim]``, or None when its tokens do not decode."""
        state, images = self._inputs(observation)
        text, mask = self._instruction(str(observation.get("language_instruction") or ""))
        eos = self.codec.eos if isinstance(self.codec, FastCodec) else None
        with torch.inference_mode():
            out = self.model.act(state, images, text, mask, eos=eos, temperature=self.temperature,
                                 generator=self.generator)
        if self.codec is None:
            return out[0].numpy().astype(np.float64)
        chunk, _why = self.codec.decode(out[0].tolist())
        return chunk

    def predict(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        t0 = time.perf_counter()
        y = self.predict_normalized(observation)
        self.inference_s.append(time.perf_counter() - t0)
        if y is None:
            self.invalid_chunks += 1
            return None
        return np.asarray(self.action_normalizer.unnormalize(np.asarray(y, np.float64)), dtype=np.float64)

    def describe(self) -> str:
        cfg = self.model.cfg
        obs = f"instruction + cameras {', '.join(cfg.cameras)} + state" if cfg.cameras else "instruction + state"
        return f"VLAPolicy({cfg.head} head; {obs} [{cfg.state_dim}] -> {cfg.horizon} x {cfg.action_dim} actions)"
