"""Closed-loop evaluation: a policy runs episodes in simulation through ``collect --device policy``.

Nothing here runs a policy another way: each episode is recorded by the same session,
recorder and runner as ``collect``, so the rollouts are an ordinary dataset (viewable,
and fit to go back into training) and what is measured is what a user would deploy.

With a task list (``--tasks cubes``) every task gets the same episodes: episode k of each
task starts from the same scene (the k-th reset seed of ``--seed``), so a table compares
instructions on identical layouts. Grounding asks which object the policy moved: the one the
instruction names, or another (a success with the wrong object counts as a failure).

Whether the instruction matters (``--instructions wrong|blank``): the simulator keeps scoring
the asked task, and the recording keeps its instruction, while the policy hears another task's
instruction (same family, the next object) or an empty one; the confusion matrices say which
object moved for each asked (and heard) object.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TelecorderError


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96); sound at 0% and 100% too."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalConfig:
    policy: str
    episodes: int = 20
    seed: int = 0
    out: Path | None = None
    robot_model: Path | None = None
    episode_time_s: float = 10.0
    fps: float | None = None
    realtime: bool = False
    camera_size: tuple[int, int] | None = None  # (width, height); None: the policy's image size
    task: str | None = None
    execute_steps: int | None = None
    ensemble: float | None = None
    intervene: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The sim scene ("pick" | "cubes"; None: the default) and its randomization (--randomize).
    scene: str | None = None
    randomize: frozenset[str] = frozenset()
    # Per-task evaluation (--tasks): a suite name or ';'-separated task ids / instructions,
    # --episodes-per-task of each, instructions from the suite's recorded or held-out paraphrases.
    tasks: str | None = None
    episodes_per_task: int = 10
    paraphrases: str = "recorded"
    # What the policy hears with --tasks: the asked task's instruction, another task's, or "".
    instructions: str = "asked"


def evaluate(cfg: EvalConfig, console: Any = None) -> dict[str, Any]:
    """Run ``cfg.episodes`` closed-loop episodes and return the success rate and what the loop measured."""
    from rich.console import Console

    from .collect.factory import DeviceConfig, make_devices
    from .collect.session import RecordingSession, SessionConfig

    if cfg.tasks is not None:
        return evaluate_tasks(cfg, console)
    if cfg.episodes < 1:
        raise TelecorderError("--episodes must be at least 1")
    # The policy's spec says which cameras, image size and state the sim must provide; the session
    # then runs this same loaded policy (and closes it).
    policy, fps, size, out, keep = _start(cfg)
    spec = policy.spec
    console = console or Console(quiet=True)
    try:
        robot, teleop, cameras = make_devices(DeviceConfig(
            robot="sim", device="policy", robot_model=cfg.robot_model, fps=fps, seed=cfg.seed,
            sim_cameras=list(spec.cameras), camera_size=size, camera_fps=fps, policy=policy,
            intervene=cfg.intervene, task=cfg.task if cfg.task is not None else "pick up the cube",
            execute_steps=cfg.execute_steps, ensemble=cfg.ensemble, realtime=cfg.realtime,
            env_state="observation.environment_state" in spec.state_keys,
            **_scene_options(cfg),
        ))
        session = RecordingSession(robot, teleop, cameras, SessionConfig(
            out=out, episodes=cfg.episodes, episode_time_s=cfg.episode_time_s, reset_time_s=0.0,
            task=cfg.task if cfg.task is not None else "pick up the cube", fps=fps, seed=cfg.seed,
            realtime=cfg.realtime,
        ), console=console)
        summary = session.run()
        records = summary.saved
        latencies = _runner_latencies(teleop)
    finally:
        if not keep:
            shutil.rmtree(out.parent, ignore_errors=True)
    successes = sum(1 for r in records if r.get("success"))
    n = len(records)
    lo, hi = wilson_interval(successes, n)
    return {
        "policy": str(cfg.policy),
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        **_loop_fields(cfg, fps, records, summary.outcomes, latencies),
        "per_episode": [bool(r.get("success")) for r in records],
        "rollouts": str(out) if keep else None,
    }


def _start(cfg: EvalConfig) -> tuple[Any, float, tuple[int, int], Path, bool]:
    """The loaded policy, the control rate and camera size its spec asks for, where the rollouts go
    (``--out``, else a temporary folder removed at the end) and whether they are kept."""
    from .policies.loading import load_policy

    keep = cfg.out is not None
    if keep and cfg.out.exists() and any(cfg.out.iterdir()):
        raise TelecorderError(f"{cfg.out} exists and is not empty; choose a new --out folder for the rollouts")
    policy = load_policy(cfg.policy)
    spec = policy.spec
    fps = cfg.fps or spec.fps or 30.0
    size = cfg.camera_size
    if size is None:
        size = (spec.image_size[1], spec.image_size[0]) if spec.image_size else (640, 480)
    out = cfg.out if keep else Path(tempfile.mkdtemp(prefix="telecorder-eval-")) / "rollouts"
    return policy, fps, size, out, keep


def _runner_latencies(teleop: Any) -> list[float]:
    """Seconds of each chunk inference of a session's policy runner (behind an intervention device too)."""
    runner = getattr(teleop, "runner", teleop)
    return list(getattr(runner, "inference_s", []))


def _percentile_ms(seconds: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(np.asarray(seconds) * 1000, q)), 2) if seconds else None


def _loop_fields(cfg: EvalConfig, fps: float, records: list[dict[str, Any]], outcomes: list[Any],
                 latencies: list[float]) -> dict[str, Any]:
    """What the control loop measured over the evaluated episodes (the same keys with and without --tasks).

    ``inference_ms_p50``/``p99`` are over every chunk inference of the evaluation; ``decisions_hz``
    is chunks used per simulated second (steps / fps), the decision rate of the chunked loop.
    """
    ticks = sum(int(r.get("length", 0)) for r in records)
    chunks = sum(int(r.get("policy_chunks") or 0) for r in records)
    return {
        "seed": cfg.seed,
        "clock": "wall" if cfg.realtime else "simulation",
        "fps": fps,
        "steps": ticks,
        "held_ticks": sum(int(r.get("policy_held_ticks") or 0) for r in records),
        "human_steps": sum(int(r.get("human_steps") or 0) for r in records),
        "late_ticks": sum(o.late_ticks for o in outcomes),
        "ticks_on_time": (1 - sum(o.late_ticks + o.missed_ticks for o in outcomes) / max(1, ticks)),
        "invalid_chunks": sum(int(r.get("policy_invalid_chunks") or 0) for r in records),
        "inference_ms_p50": _percentile_ms(latencies, 50),
        "inference_ms_p99": _percentile_ms(latencies, 99),
        "decisions_hz": round(chunks * fps / ticks, 3) if ticks else None,
    }


def _scene_options(cfg: EvalConfig) -> dict[str, Any]:
    """The DeviceConfig fields of --scene and --randomize, only when given (today's defaults otherwise)."""
    opts: dict[str, Any] = {}
    if cfg.scene is not None:
        opts["scene"] = cfg.scene
    if cfg.randomize:
        opts["randomize"] = frozenset(cfg.randomize)
    return opts


# ---------------------------------------------------------------------- per-task evaluation

PARAPHRASE_SPLITS = ("recorded", "heldout")
INSTRUCTION_MODES = ("asked", "wrong", "blank")


@dataclass(frozen=True)
class PlannedTask:
    """One task of an evaluation and the instructions its episodes cycle through (episode k: k mod len)."""

    task: Any  # telecorder.sim.tasks.Task
    instructions: tuple[str, ...]


def plan_tasks(spec: str, scene: str | None, paraphrases: str = "recorded") -> tuple[str, list[PlannedTask]]:
    """The suite name and the tasks ``--tasks SPEC`` names.

    SPEC is a suite name (every task, instructions from the ``paraphrases`` split) or a
    ';'-separated list of task ids (instructions from the split) and instructions (used
    verbatim; each must be one of the suite's paraphrases, since the sim's success check
    belongs to a task).
    """
    from .sim.tasks import SUITES, get_suite

    if paraphrases not in PARAPHRASE_SPLITS:
        raise TelecorderError(f"--paraphrases {paraphrases}: choose {' or '.join(PARAPHRASE_SPLITS)}")
    text = spec.strip()
    if text in SUITES:
        suite = get_suite(text)
        items: list[str] = []
    else:
        matching = [s for s in SUITES.values() if scene is None or s.scene == scene]
        if not matching:
            raise TelecorderError(f"--tasks: no task suite for --scene {scene}; the suites are "
                                  f"{', '.join(f'{n} (--scene {s.scene})' for n, s in SUITES.items())}")
        suite = matching[0]
        items = [t.strip() for t in text.split(";") if t.strip()]
        if not items:
            raise TelecorderError(f"--tasks {spec!r}: give a suite name ({', '.join(SUITES)}) or "
                                  "';'-separated task ids or instructions")
    if scene is not None and suite.scene != scene:
        raise TelecorderError(f"--tasks {suite.name} is a task suite of --scene {suite.scene}, not --scene {scene}")

    def split(task: Any) -> tuple[str, ...]:
        return tuple(task.recorded if paraphrases == "recorded" else task.heldout)

    if not items:
        return suite.name, [PlannedTask(t, split(t)) for t in suite.tasks]
    planned: list[PlannedTask] = []
    ids = {t.task_id: t for t in suite.tasks}
    for item in items:
        if item in ids:
            planned.append(PlannedTask(ids[item], split(ids[item])))
            continue
        found = suite.match(item)
        if found is None:
            raise TelecorderError(
                f"--tasks: {item!r} is neither a task id nor an instruction of the {suite.name} suite, so the "
                f"sim cannot score it; the tasks are {', '.join(ids)} (e.g. {suite.tasks[0].recorded[0]!r})")
        planned.append(PlannedTask(found[0], (item,)))
    return suite.name, planned


def reset_seeds(seed: int, n: int) -> list[int]:
    """The reset seeds of episodes 0..n-1: the draws a ``collect --seed`` session makes, so episode k
    of an evaluation starts from the scene episode k of a recording with that seed starts from."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(rng.integers(2**31)) for _ in range(n)]


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluated episode: what the sim said, and which object moved."""

    instruction: str
    task_id: str
    family: str
    obj: str | None  # the object the instruction names (None: names none, no grounding)
    index: int  # k: the episode's place in every task's schedule (its scene)
    sim_success: bool
    moved: str | None  # the object that moved most (None: nothing moved)
    record: dict[str, Any] = field(default_factory=dict, compare=False)
    heard: str | None = None  # the text the policy heard ("" for a blank; None: not noted)
    heard_obj: str | None = None  # the object the heard text names (None: blank, or names none)

    @property
    def grounded(self) -> bool | None:
        """The moved object is the named one (None for an instruction that names no object)."""
        return None if self.obj is None else self.moved == self.obj

    @property
    def success(self) -> bool:
        """The sim's success check held and the named object is the one moved: another object's success fails."""
        return self.sim_success and self.grounded is not False


def tally(results: list[EpisodeResult]) -> dict[str, Any]:
    """Episodes, successes, success rate with its 95% Wilson interval, and grounding of a group of episodes."""
    n = len(results)
    wins = sum(1 for r in results if r.success)
    named = [r for r in results if r.grounded is not None]
    lo, hi = wilson_interval(wins, n)
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "grounding": sum(1 for r in named if r.grounded) / len(named) if named else None,
        "wrong_object": sum(1 for r in named if not r.grounded and r.moved is not None),
    }


def task_report(results: list[EpisodeResult]) -> dict[str, Any]:
    """The per-task part of the ``eval --json`` object.

    ``tasks`` is keyed by instruction text (each with its ``task_id`` and ``family``),
    ``task_ids`` groups a task's instructions, ``families`` the tasks of a family;
    ``success_rate`` is the mean over tasks and ``grounding`` the fraction over all episodes.
    """
    by_text: dict[str, list[EpisodeResult]] = {}
    by_id: dict[str, list[EpisodeResult]] = {}
    by_family: dict[str, list[EpisodeResult]] = {}
    for r in results:
        by_text.setdefault(r.instruction, []).append(r)
        by_id.setdefault(r.task_id or r.instruction, []).append(r)
        by_family.setdefault(r.family, []).append(r)
    tasks = {text: {"task_id": rs[0].task_id, "family": rs[0].family, **tally(rs)} for text, rs in by_text.items()}
    task_ids = {
        tid: {"family": rs[0].family, "instructions": list(dict.fromkeys(r.instruction for r in rs)), **tally(rs)}
        for tid, rs in by_id.items()
    }
    families = {
        fam: {"tasks": len({r.task_id for r in rs}), **tally(rs)} for fam, rs in by_family.items()
    }
    rates = [t["success_rate"] for t in task_ids.values()]
    overall = tally(results)
    return {
        "success_rate": sum(rates) / len(rates) if rates else 0.0,
        "grounding": overall["grounding"],
        "wrong_object": overall["wrong_object"],
        "tasks": tasks,
        "task_ids": task_ids,
        "families": families,
    }


def wrong_task(task: Any, suite: Any) -> Any:
    """The task whose instruction ``--instructions wrong`` gives instead of ``task``'s: the same
    family on the next object in the suite's order (and, for a stack, the next support too, so
    it stays a stack of two different cubes; a push keeps its side). pick_red -> pick_green."""
    objects = list(dict.fromkeys(t.obj for t in suite.tasks))

    def shift(name: str | None) -> str | None:
        return objects[(objects.index(name) + 1) % len(objects)] if name in objects else name

    want = (task.family, shift(task.obj), shift(task.support), task.side)
    for other in suite.tasks:
        if (other.family, other.obj, other.support, other.side) == want:
            return other
    for other in suite.tasks:
        if other.family == task.family and other.obj != task.obj:
            return other
    raise TelecorderError(f"--instructions wrong: the {suite.name} suite has no other {task.family} task "
                          f"than {task.task_id} to take a wrong instruction from")


def heard_instruction(mode: str, text: str, task: Any, j: int, suite: Any, paraphrases: str) -> tuple[str, str | None]:
    """What the policy hears in place of ``text`` (the j-th instruction of ``task``) and the object
    that names: the text itself, the j-th paraphrase (same split) of :func:`wrong_task`, or ""."""
    if mode == "asked":
        return text, task.obj
    if mode == "blank":
        return "", None
    other = wrong_task(task, suite)
    split = other.recorded if paraphrases == "recorded" else other.heldout
    return split[j % len(split)], other.obj


def confusion(results: list[EpisodeResult], by: str, objects: list[str]) -> dict[str, Any]:
    """Counts of episodes by named object (``by``: "obj", the asked one, or "heard_obj") x moved
    object; ``objects`` orders the rows and columns, and the last column, "none", is nothing moved."""
    named = [r for r in results if getattr(r, by) is not None]
    seen = [o for r in named for o in (getattr(r, by), r.moved) if o is not None]
    order = list(dict.fromkeys([*objects, *seen]))
    rows = [o for o in order if any(getattr(r, by) == o for r in named)]
    cols = [o for o in order if o in objects or any(r.moved == o for r in named)] + ["none"]
    counts = [[0] * len(cols) for _ in rows]
    for r in named:
        counts[rows.index(getattr(r, by))][cols.index(r.moved if r.moved is not None else "none")] += 1
    return {"rows": rows, "cols": cols, "counts": counts}


def instruction_report(results: list[EpisodeResult], mode: str, objects: list[str]) -> dict[str, Any]:
    """The ``eval --json`` keys of what the policy heard: ``instructions``, ``confusion`` (asked x
    moved) and, for ``wrong``, ``heard_confusion`` (heard x moved) and ``followed_heard``, the
    fraction of episodes whose moved object is the heard one."""
    out: dict[str, Any] = {"instructions": mode, "confusion": confusion(results, "obj", objects)}
    if mode == "wrong":
        out["heard_confusion"] = confusion(results, "heard_obj", objects)
        named = [r for r in results if r.heard_obj is not None]
        out["followed_heard"] = sum(1 for r in named if r.moved == r.heard_obj) / len(named) if named else None
    return out


def _borrowed(policy: Any, heard: str | None = None) -> Any:
    """The loaded policy, lent to one session after another: a session closes its policy at the end,
    and this one must live until the last task (the evaluation closes it once). With ``heard``, the
    policy is given that instruction instead of the session's (which the recording keeps)."""
    from .policies.base import Policy

    class Borrowed(Policy):
        spec = policy.spec

        def reset(self) -> None:
            policy.reset()

        def predict(self, observation: Any) -> Any:
            if heard is not None:
                observation = {**observation, "language_instruction": heard}
            return policy.predict(observation)

        def describe(self) -> str:
            return policy.describe()

    return Borrowed()


def _watched(robot: Any, task: Any, seeds: list[int], heard: str | None = None) -> Any:
    """The sim follower as one evaluation session sees it: each reset puts this evaluation's scene
    (the next of ``seeds``) and ``task`` in, and the end of each episode notes the object that moved most.
    ``heard``: the instruction the policy was given instead, noted in each episode's attributes."""
    from .collect.interfaces import Robot

    class SceneWatch(Robot):
        robot_type = robot.robot_type

        def __init__(self) -> None:
            self.moved: list[str | None] = []
            self._start: dict[str, Any] | None = None
            self._next = 0

        def connect(self) -> None:
            robot.connect()

        def features(self) -> list[Any]:
            return robot.features()

        def observe(self) -> dict[str, Any]:
            return robot.observe()

        def act(self, action: Any) -> Any:
            return robot.act(action)

        def reset(self, seed: int | None = None) -> None:
            # The session draws its own seed; episode k of every task must start from the same scene.
            seed = seeds[min(self._next, len(seeds) - 1)]
            self._next += 1
            robot.set_task(task)
            robot.reset(seed)
            self._start = robot.env.object_positions()

        def set_task(self, *_args: Any, **_kwargs: Any) -> None:
            """The session's choice (the same task, matched from the instruction) gives way to the
            evaluation's, set at each reset."""

        def success(self) -> bool | None:
            ok = robot.success()
            # The recorder asks once, at the end of the episode: the moment to see what moved.
            self.moved.append(None if self._start is None else robot.env.moved_object(self._start))
            return ok

        def counters(self) -> dict[str, int]:
            return robot.counters()

        def scene_attrs(self) -> dict[str, Any]:
            attrs = robot.scene_attrs()
            return attrs if heard is None else {**attrs, "eval_heard_instruction": heard}

        def disconnect(self) -> None:
            robot.disconnect()

        def __getattr__(self, name: str) -> Any:
            return getattr(robot, name)

    return SceneWatch()


def evaluate_tasks(cfg: EvalConfig, console: Any = None) -> dict[str, Any]:
    """``eval --tasks``: ``cfg.episodes_per_task`` episodes of every task, episode k of each from the same scene."""
    from rich.console import Console

    from .collect.factory import DeviceConfig, make_devices
    from .collect.session import RecordingSession, SessionConfig
    from .sim.tasks import get_suite

    n = cfg.episodes_per_task
    if n < 1:
        raise TelecorderError("--episodes-per-task must be at least 1")
    if cfg.instructions not in INSTRUCTION_MODES:
        raise TelecorderError(f"--instructions {cfg.instructions}: choose {', '.join(INSTRUCTION_MODES)}")
    suite_name, planned = plan_tasks(cfg.tasks or "", cfg.scene, cfg.paraphrases)
    suite = get_suite(suite_name)
    # Refused before any episode runs: a task with no wrong instruction to give.
    heard_of = {(i, j): heard_instruction(cfg.instructions, text, p.task, j, suite, cfg.paraphrases)
                for i, p in enumerate(planned) for j, text in enumerate(p.instructions)}
    scene = cfg.scene or suite.scene
    policy, fps, size, out, keep = _start(cfg)
    spec = policy.spec
    console = console or Console(quiet=True)
    seeds = reset_seeds(cfg.seed, n)
    results: list[EpisodeResult] = []
    records: list[dict[str, Any]] = []
    outcomes: list[Any] = []
    latencies: list[float] = []
    opts = {**_scene_options(cfg), "scene": scene}
    try:
        for i, plan in enumerate(planned):
            task = plan.task
            # One plain single-instruction session per instruction of the task (the records store it).
            for j, text in enumerate(plan.instructions):
                ks = list(range(j, n, len(plan.instructions)))
                if not ks:
                    continue
                heard, heard_obj = heard_of[(i, j)]
                given = None if cfg.instructions == "asked" else heard
                robot, teleop, cameras = make_devices(DeviceConfig(
                    robot="sim", device="policy", robot_model=cfg.robot_model, fps=fps, seed=cfg.seed,
                    sim_cameras=list(spec.cameras), camera_size=size, camera_fps=fps,
                    policy=_borrowed(policy, given),
                    intervene=cfg.intervene, task=text, execute_steps=cfg.execute_steps, ensemble=cfg.ensemble,
                    realtime=cfg.realtime, env_state="observation.environment_state" in spec.state_keys, **opts,
                ))
                watch = _watched(robot, task, [seeds[k] for k in ks], given)
                session = RecordingSession(watch, teleop, cameras, SessionConfig(
                    out=out, episodes=len(ks), episode_time_s=cfg.episode_time_s, reset_time_s=0.0, task=text,
                    fps=fps, seed=cfg.seed, realtime=cfg.realtime, resume=out.exists(),
                ), console=console)
                summary = session.run()
                outcomes += summary.outcomes
                latencies += _runner_latencies(teleop)
                saved = summary.saved
                if len(saved) != len(ks) or len(watch.moved) < len(saved):
                    raise TelecorderError(f"eval: the session of {text!r} saved {len(saved)} of {len(ks)} episodes")
                for k, rec, moved in zip(ks, saved, watch.moved, strict=False):
                    records.append(rec)
                    results.append(EpisodeResult(
                        instruction=text, task_id=task.task_id, family=task.family, obj=task.obj, index=k,
                        sim_success=bool(rec.get("success")), moved=moved, record=rec,
                        heard=heard, heard_obj=heard_obj,
                    ))
    finally:
        policy.close()
        if not keep:
            shutil.rmtree(out.parent, ignore_errors=True)
    order = {p.task.task_id: i for i, p in enumerate(planned)}
    results.sort(key=lambda r: (order[r.task_id], r.index))
    report = task_report(results)
    total = len(results)
    wins = sum(1 for r in results if r.success)
    lo, hi = wilson_interval(wins, total)
    return {
        "policy": str(cfg.policy),
        "episodes": total,
        "successes": wins,
        "success_rate": report["success_rate"],
        "ci95": [round(lo, 4), round(hi, 4)],
        **_loop_fields(cfg, fps, records, outcomes, latencies),
        "per_episode": [r.success for r in results],
        "rollouts": str(out) if keep else None,
        "grounding": report["grounding"],
        "wrong_object": report["wrong_object"],
        "scene": scene,
        "task_suite": suite_name,
        "paraphrases": cfg.paraphrases,
        "episodes_per_task": n,
        "reset_seeds": seeds,
        "tasks": report["tasks"],
        "task_ids": report["task_ids"],
        "families": report["families"],
        **instruction_report(results, cfg.instructions, list(dict.fromkeys(t.obj for t in suite.tasks))),
    }
