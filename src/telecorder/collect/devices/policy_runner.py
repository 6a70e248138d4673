"""A policy as a teleop device: chunks inferred off the control thread, executed on time.

The control loop never waits for the model. Each tick the runner records the observation
(state and, for a policy that looks at cameras, the tick's frames), returns the action the
current chunk holds for this tick and, a little before that chunk runs out, hands the
newest observation to an inference thread, as asynchronous inference in pi0 / SmolVLA
deployments does. A chunk is aligned to the tick it was observed at, so when it arrives
the actions for ticks already gone by are skipped. With temporal ensembling (ACT) a chunk
is requested every tick and the actions every live chunk holds for this tick are averaged
with weights ``exp(-m * i)``, oldest first.

When no chunk covers a tick (the first ticks of an episode, or a policy slower than its
chunk), the last command is held and counted: ``held_ticks`` in the episode's record says
how often that happened. A policy may also answer ``None`` (no valid chunk this time, e.g.
action tokens that decode to no chunk): the tick is held likewise, ``invalid_chunks`` counts it
and the next tick asks again. On simulated time (``realtime=False``) inference is waited for,
so a rollout is the same whatever the machine's speed.

Every action passes the same safety limits as teleoperation: at most ``max_step`` change
per tick per dimension, and the robot's own joint limits.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...datasets.features import FeatureSpec
from ...datasets.model_inputs import concat_state, model_image
from ...errors import CameraError
from ...policies.base import Policy, PolicyError
from ..interfaces import Event, Frame, Teleop, TeleopOutput

# Seconds to wait for a synchronous camera's frame inside the inference thread.
_FRAME_WAIT_S = 10.0
# The sim task counts as done (and the episode ends) once it has held success this long,
# as the scripted expert's demonstrations do.
SUCCESS_HOLD_S = 0.5

SOURCE_POLICY, SOURCE_HUMAN = 0, 1

INTERVENTION_FEATURES = [
    FeatureSpec("intervention", "bool", (1,), names=("intervention",),
                unit="True where a person (or the expert corrector) acted instead of the policy"),
    FeatureSpec("action_source", "uint8", (1,), names=("action_source",),
                unit="who produced the action: 0 = policy, 1 = human (or expert corrector)"),
]


@dataclass
class _Chunk:
    start: int  # the tick whose observation it was inferred from
    actions: np.ndarray  # [k, A] robot units


@dataclass
class _Tick:
    state: np.ndarray  # normalized model state of one tick
    frames: dict[str, Frame | Future[Frame]]


class PolicyRunner(Teleop):
    """``collect --device policy``: a :class:`Policy` drives the robot."""

    device_type = "policy"

    def __init__(
        self,
        policy: Policy,
        *,
        fps: float,
        task: str = "",
        realtime: bool = True,
        execute_steps: int | None = None,
        ensemble: float | None = None,
        max_step: float = 0.25,
        action_dim: int | None = None,
        success: Callable[[], bool | None] | None = None,
        success_hold_s: float = SUCCESS_HOLD_S,
        record_source: bool = True,
    ) -> None:
        self.policy, self.spec = policy, policy.spec
        self.fps, self.task, self.realtime = float(fps), task, realtime
        horizon = self.spec.horizon
        if execute_steps is None:
            # The whole chunk, as ACT does without ensembling; replanning mid-chunk measured worse on the
            # sim task (a state-only policy cannot tell how long it has paused before a grasp).
            execute_steps = horizon
        if not 1 <= execute_steps <= horizon:
            raise PolicyError(f"--execute-steps {execute_steps}: the policy's chunks hold {horizon} actions; "
                              f"use 1..{horizon}")
        if ensemble is not None and ensemble < 0:
            raise PolicyError(f"--ensemble {ensemble}: the temporal-ensembling coefficient must be >= 0")
        if action_dim is not None and action_dim != self.spec.action_dim:
            raise PolicyError(f"the policy ({policy.describe()}) outputs {self.spec.action_dim} action dimensions; "
                              f"this robot takes {action_dim}")
        self.execute_steps, self.ensemble, self.max_step = execute_steps, ensemble, float(max_step)
        self.uses_frames = bool(self.spec.cameras)
        self._success, self._success_ticks = success, max(1, round(success_hold_s * self.fps))
        self._record_source = record_source
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._generation = 0
        self._frames: dict[str, Frame | Future[Frame]] = {}
        # Seconds of every inference of the current generation, over all episodes of this runner:
        # an evaluation's latency percentiles are over chunks, not over per-episode figures.
        self.inference_s: list[float] = []
        self._reset_episode()

    # -- Teleop -------------------------------------------------------------------------

    def features(self) -> list[FeatureSpec]:
        return list(INTERVENTION_FEATURES) if self._record_source else []

    def check_inputs(self, observation_features: Sequence[str], cameras: Sequence[str]) -> None:
        """Refuse a session that cannot give the policy what it was trained on."""
        missing = [k for k in self.spec.state_keys if k not in observation_features]
        if missing:
            hint = " (record it with --env-state)" if "observation.environment_state" in missing else ""
            raise PolicyError(f"the policy ({self.policy.describe()}) observes {missing[0]!r}, which this robot does "
                              f"not record{hint}; it records {sorted(observation_features)}")
        absent = [c for c in self.spec.cameras if c not in cameras]
        if absent:
            raise PolicyError(f"the policy ({self.policy.describe()}) looks through camera(s) {absent}; this session "
                              f"has {list(cameras) or 'no cameras'} (pick them with --sim-cameras or --camera)")

    def connect(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tc-policy")

    def set_task(self, task: Any, instruction: str = "") -> None:
        """The next episode's instruction: what the policy is conditioned on (``language_instruction``)."""
        self.task = instruction

    def start_episode(self) -> None:
        with self._lock:
            self._generation += 1
        self.policy.reset()
        self._reset_episode()

    def _reset_episode(self) -> None:
        self._tick = 0
        self._chunks: deque[_Chunk] = deque()
        self._inflight: tuple[int, int, Future[np.ndarray | None]] | None = None
        self._history: deque[_Tick] = deque(maxlen=self.spec.history)
        self._last: np.ndarray | None = None
        self._lead = 1
        self.held_ticks = 0
        self.chunks_used = 0
        self.invalid_chunks = 0
        self._succeeded = 0
        self._episode_inference: list[float] = []

    def see_frames(self, frames: dict[str, Frame | Future[Frame]]) -> None:
        self._frames = {c: frames[c] for c in self.spec.cameras if c in frames}

    def read(self, observation: dict[str, np.ndarray]) -> TeleopOutput:
        action, _ = self.step(observation)
        extra = {}
        if self._record_source:
            extra = {"intervention": np.array([False]), "action_source": np.array([SOURCE_POLICY], np.uint8)}
        return TeleopOutput(action, self.success_events(), extra)

    def success_events(self) -> set[Event]:
        """SAVE_EPISODE once the robot has reported success for ``success_hold_s`` (a sim task)."""
        if self._success is None:
            return set()
        self._succeeded = self._succeeded + 1 if self._success() else 0
        return {Event.SAVE_EPISODE} if self._succeeded >= self._success_ticks else set()

    def episode_summary(self) -> dict[str, Any]:
        lat = np.asarray(self._episode_inference) * 1000
        return {
            "policy_held_ticks": self.held_ticks,
            "policy_chunks": self.chunks_used,
            "policy_invalid_chunks": self.invalid_chunks,
            "policy_inference_ms_p50": round(float(np.median(lat)), 2) if lat.size else None,
            "policy_inference_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "policy_inference_ms_max": round(float(lat.max()), 2) if lat.size else None,
        }

    def disconnect(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.policy.close()

    # -- the schedule -------------------------------------------------------------------

    def resume(self, last_command: np.ndarray) -> None:
        """Take control again after someone else drove the robot: fresh chunks, clamped from their command."""
        self._chunks.clear()
        self._inflight = None
        with self._lock:
            self._generation += 1
        self._last = np.asarray(last_command, dtype=np.float64).copy()
        self.policy.reset()

    def observe_only(self, observation: Mapping[str, np.ndarray]) -> None:
        """Keep the observation history current on a tick where someone else acts."""
        self._remember(observation)
        self._tick += 1

    def step(self, observation: Mapping[str, np.ndarray]) -> tuple[np.ndarray, bool]:
        """This tick's command and whether it is a held one (no chunk covered the tick)."""
        t = self._tick
        self._remember(observation)
        self._harvest()
        if self._wants_chunk(t) and self._inflight is None:
            self._request(t)
            if not self.realtime:
                self._inflight[2].result()  # simulated time: the model takes no time
                self._harvest()
        target = self._action_for(t)
        state = np.asarray(observation["observation.state"], dtype=np.float64).reshape(-1)
        held = target is None
        if held:
            self.held_ticks += 1
            target = self._last if self._last is not None else state
        if self._last is None:
            self._last = state.copy()
        command = self._last + np.clip(target - self._last, -self.max_step, self.max_step)
        self._last = command
        self._tick += 1
        return command, held

    def _remember(self, observation: Mapping[str, np.ndarray]) -> None:
        state = concat_state(observation, self.spec.state_keys)
        if self.spec.state_normalizer is not None:
            state = np.asarray(self.spec.state_normalizer.normalize(state))
        self._history.append(_Tick(state.astype(np.float32), dict(self._frames)))

    def _wants_chunk(self, t: int) -> bool:
        if not self._chunks:
            return True
        if self.ensemble is not None:
            return True
        newest = self._chunks[-1]
        lead = self._lead if self.realtime else 0
        return t + lead >= newest.start + min(self.execute_steps, len(newest.actions))

    def _request(self, t: int) -> None:
        assert self._pool is not None, "connect() first"
        history = list(self._history)
        generation = self._generation
        fut = self._pool.submit(self._infer, history, generation)
        self._inflight = (t, generation, fut)

    def _infer(self, history: list[_Tick], generation: int) -> np.ndarray | None:
        obs = self._observation(history)
        t0 = time.perf_counter()
        raw = self.policy.predict(obs)
        took = time.perf_counter() - t0
        if raw is None:
            # No valid chunk this time (the policy's contract): the harvest counts it, the tick holds.
            self._note_latency(generation, took)
            return None
        out = np.asarray(raw, dtype=np.float64)
        if out.ndim == 1:
            out = out[None]
        if out.ndim != 2 or out.shape[1] != self.spec.action_dim or len(out) == 0:
            raise PolicyError(f"{self.policy.describe()}.predict returned shape {out.shape}; expected "
                              f"[k, {self.spec.action_dim}] actions")
        if not np.isfinite(out).all():
            raise PolicyError(f"{self.policy.describe()}.predict returned NaN or infinite actions")
        self._note_latency(generation, took)
        return out

    def _note_latency(self, generation: int, took: float) -> None:
        with self._lock:
            if generation == self._generation:
                self._episode_inference.append(took)
                self.inference_s.append(took)

    def _observation(self, history: list[_Tick]) -> dict[str, Any]:
        """The model input, in a TorchDataset item's layout; padding repeats the first step."""
        pad = self.spec.history - len(history)
        steps = [history[0]] * pad + history
        obs: dict[str, Any] = {
            "state": np.stack([s.state for s in steps]).astype(np.float32),
            "state_is_pad": np.array([True] * pad + [False] * len(history)),
            "language_instruction": self.task,
        }
        for cam in self.spec.cameras:
            images = {}
            for s in steps:
                key = id(s)
                if key not in images:
                    images[key] = model_image(_resolve(cam, s.frames.get(cam)), self.spec.image_size)
            obs[f"images.{cam}"] = np.stack([images[id(s)] for s in steps])
        return obs

    def _harvest(self) -> None:
        if self._inflight is None or not self._inflight[2].done():
            return
        start, generation, fut = self._inflight
        self._inflight = None
        actions = fut.result()  # a failed inference ends the episode with its error
        if generation != self._generation:
            return
        if actions is None:
            # No chunk: this tick holds (counted in held_ticks) and the next one asks again.
            self.invalid_chunks += 1
        else:
            self._chunks.append(_Chunk(start, actions))
            self.chunks_used += 1
        if self._episode_inference:
            # Ask for the next chunk this many ticks before the current one runs out.
            recent = float(np.percentile(self._episode_inference[-20:], 90))
            self._lead = 1 + math.ceil(recent * self.fps)

    def _action_for(self, t: int) -> np.ndarray | None:
        while self._chunks and self._chunks[0].start + len(self._chunks[0].actions) <= t:
            self._chunks.popleft()
        live = [c for c in self._chunks if c.start <= t < c.start + len(c.actions)]
        if not live:
            return None
        if self.ensemble is None:
            c = live[-1]
            return c.actions[t - c.start]
        weights = np.exp(-self.ensemble * np.arange(len(live)))
        acts = np.stack([c.actions[t - c.start] for c in live])
        return (weights[:, None] * acts).sum(0) / weights.sum()


def _resolve(camera: str, frame: Frame | Future[Frame] | None) -> np.ndarray:
    if frame is None:
        raise CameraError(f"camera {camera!r}: no frame for the policy")
    if isinstance(frame, Future):
        frame = frame.result(timeout=_FRAME_WAIT_S)
    return frame.image
