"""Task lists in recording sessions: ``collect --tasks SPEC --task-order ...``, skip, and ``info`` per task.

Everything runs the real simulator and the real scripted experts on simulated time
(``--no-realtime``), without cameras, so each session takes a second or two.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")

from telecorder.cli import collect_main, main
from telecorder.collect.factory import DeviceConfig, make_devices
from telecorder.collect.interfaces import Event
from telecorder.collect.key_bindings import GAMEPAD, KEYBOARD, TERMINAL, help_text
from telecorder.collect.session import RecordingSession, SessionConfig
from telecorder.collect.task_list import TaskList, TaskListError, parse_task_spec
from telecorder.datasets.dataset import Dataset
from telecorder.policies import Policy, PolicySpec
from telecorder.sim.tasks import get_suite

TESTS = Path(__file__).parent
FAST = ["--robot", "sim", "--no-realtime", "--sim-cameras", "none", "--episode-time", "20"]
# Four quick tasks, one given in odd case and spacing: it must be stored verbatim.
FOUR = "Pick up the RED cube. ; grab the green block; lift the blue cube; put the red cube in the bin"


def _records(root: Path) -> list[dict]:
    return Dataset.open(root).records


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tasks") / "balanced"
    assert collect_main(["--device", "scripted", "--scene", "cubes", "--tasks", FOUR, "--task-order", "balanced",
                         "--episodes", "8", "--seed", "5", "--env-state", *FAST, "--out", str(out)]) == 0
    return out


def test_balanced_session_records_each_instruction_with_its_task(balanced: Path) -> None:
    suite = get_suite("cubes")
    ds = Dataset.open(balanced)
    assert len(ds) == 8
    per_task = Counter(r["task_id"] for r in ds.records)
    wins = Counter(r["task_id"] for r in ds.records if r["success"])
    assert set(per_task) == {"pick_red", "pick_green", "pick_blue", "bin_red"}
    # Balanced: the task with the fewest successes goes next, so successes never differ by more than one.
    assert max(wins.values()) - min(wins[t] for t in per_task) <= 1 and sum(wins.values()) >= 6
    for ep in ds:
        a = ep.attrs
        assert a["task"] == a["language_instruction"]
        task, index = suite.match(a["task"])
        assert (a["task_id"], int(a["paraphrase_index"]), a["task_family"]) == (task.task_id, index, task.family)
        assert a["sim_scene_name"] == "cubes"
    verbatim = [r["task"] for r in ds.records if r["task_id"] == "pick_red"]
    assert set(verbatim) == {"Pick up the RED cube."}, "the instruction is stored as given"
    extra = ds.info.extra
    assert extra["task_suite"] == "cubes" and extra["sim_scene"] == "cubes"
    assert extra["tasks"]["bin_red"] == {"family": "bin", "paraphrases": list(suite.by_id("bin_red").recorded),
                                         "heldout": list(suite.by_id("bin_red").heldout)}
    names = ds.info.features["observation.environment_state"].names
    assert len(names) == 24 and names[:7] == ("red_cube.x", "red_cube.y", "red_cube.z", "red_cube.qw",
                                              "red_cube.qx", "red_cube.qy", "red_cube.qz")
    assert names[-3:] == ("bin.x", "bin.y", "bin.z")


def test_info_shows_counts_and_success_per_task(balanced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(balanced), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    records = _records(balanced)
    assert s["task_suite"] == "cubes"
    for task_id, row in s["per_task"].items():
        mine = [r for r in records if r["task_id"] == task_id]
        assert row["episodes"] == len(mine) and row["successes"] == sum(bool(r["success"]) for r in mine)
        assert row["success_rate"] == row["successes"] / len(mine)
    assert main(["info", str(balanced)]) == 0
    table = capsys.readouterr().out
    assert "tasks (suite cubes)" in table and "bin_red" in table and "Pick up the RED cube." in table


def test_cycle_goes_round_and_a_count_file_ends_the_session(tmp_path: Path) -> None:
    spec = tmp_path / "tasks.json"
    spec.write_text(json.dumps({"suite": "cubes", "tasks": [
        {"task_id": "pick_green", "count": 2},
        {"task_id": "pick_blue", "paraphrases": ["lift the blue cube"], "count": 1},
    ]}))
    out = tmp_path / "counted"
    # No --episodes: the counts say how many (3); the scene comes from the suite.
    assert collect_main(["--device", "scripted", "--tasks", str(spec), "--seed", "2", *FAST, "--out", str(out)]) == 0
    recs = _records(out)
    assert Counter(r["task_id"] for r in recs if r["success"]) == {"pick_green": 2, "pick_blue": 1}
    assert {r["task"] for r in recs if r["task_id"] == "pick_blue"} == {"lift the blue cube"}
    green = get_suite("cubes").by_id("pick_green")
    assert {r["paraphrase_index"] for r in recs if r["task_id"] == "pick_green"} <= set(range(len(green.recorded)))


@pytest.mark.parametrize("extra", [["--device", "scripted"],
                                   ["--device", "policy", "--policy", "toy_policies:hold", "--intervene", "expert"]])
def test_the_expert_refuses_an_instruction_outside_the_suite(tmp_path: Path, extra: list[str],
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "nothing"
    code = collect_main([*extra, "--scene", "cubes", "--tasks", "pick up the red cube; dance a little jig", *FAST,
                         "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "'dance a little jig'" in err
    assert "pick_red ('pick up the red cube')" in err and "push_blue_right" in err, "the known tasks are listed"
    assert not out.exists(), "nothing may be recorded"


def test_a_policy_records_any_text_and_is_told_each_instruction(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "policy"
    assert collect_main(["--device", "policy", "--policy", "toy_policies:hold", "--scene", "cubes", "--tasks",
                         "wave at the camera; put the green cube in the bin", "--episodes", "2", "--robot", "sim",
                         "--no-realtime", "--sim-cameras", "none", "--episode-time", "0.5", "--out", str(out)]) == 0
    recs = _records(out)
    free, known = recs
    assert (free["task"], free["task_id"], free["paraphrase_index"]) == ("wave at the camera", "", -1)
    assert free["success"] is None, "free text: the simulator cannot judge it"
    assert (known["task_id"], known["paraphrase_index"], known["success"]) == ("bin_green", 0, False)


class Listener(Policy):
    """Holds the arm still and notes the instruction of every observation it is given."""

    spec = PolicySpec(action_dim=6, horizon=5)

    def __init__(self) -> None:
        self.heard: list[str] = []

    def predict(self, observation):
        self.heard.append(observation["language_instruction"])
        return np.repeat(np.asarray(observation["state"][-1], dtype=np.float64)[None], 5, axis=0)


def test_the_policy_is_conditioned_on_each_episodes_instruction(tmp_path: Path) -> None:
    policy = Listener()
    tasks = parse_task_spec("pick up the red cube; say something nice", scene="cubes")
    robot, teleop, cams = make_devices(DeviceConfig(scene="cubes", device="policy", policy=policy, sim_cameras=[],
                                                    realtime=False, tasks=tasks))
    RecordingSession(robot, teleop, cams, SessionConfig(out=tmp_path / "p", episodes=2, episode_time_s=0.4,
                                                        realtime=False, tasks=tasks)).run()
    assert set(policy.heard) == {"pick up the red cube", "say something nice"}
    assert policy.heard[0] == "pick up the red cube" and policy.heard[-1] == "say something nice"


def test_skip_saves_nothing_counts_it_and_moves_on(tmp_path: Path) -> None:
    suite = get_suite("cubes")
    tasks = TaskList.from_suite(suite, "cycle", seed=0)
    robot, teleop, cams = make_devices(DeviceConfig(scene="cubes", sim_cameras=[], seed=4, realtime=False,
                                                    tasks=tasks))
    session = RecordingSession(robot, teleop, cams, SessionConfig(
        out=tmp_path / "skip", episodes=2, episode_time_s=20, reset_time_s=0, seed=4, realtime=False, tasks=tasks))
    session.post(Event.SKIP_TASK)  # as if k was pressed as the first episode began
    summary = session.run()
    recs = _records(tmp_path / "skip")
    assert summary.skipped == 1 and tasks.skipped["pick_red"] == 1 and len(recs) == 2
    assert [r["task_id"] for r in recs] == ["pick_green", "pick_blue"], "the skipped instruction is not saved"
    assert [o.kind for o in summary.outcomes] == ["skip", "save", "save"]
    # Balanced: a skipped task is not offered again straight away, even though it has the fewest.
    bal = TaskList.from_suite(suite, "balanced", seed=0)
    first = bal.next()
    bal.skip(first)
    assert bal.next().task_id != first.task_id


def test_the_skip_key_is_in_the_one_table_and_the_help() -> None:
    for controls in (TERMINAL, KEYBOARD, GAMEPAD):
        assert controls.session[Event.SKIP_TASK] == ("k",)
        assert "k skip instruction" in controls.terminal_line().replace("[bold]", "").replace("[/]", "")
    assert not {"k"} & set(KEYBOARD.motion_keys()), "k must not move the arm"
    assert "k skip instruction" in help_text() and "Back skip instruction" in help_text()


def test_task_specs_txt_semicolons_json_and_yaml(tmp_path: Path) -> None:
    txt = tmp_path / "tasks.txt"
    txt.write_text("# my tasks\npick up the red cube\n\n  GRAB the red block \nwave hello\nput the blue cube "
                   "on the green cube\n")
    tl = parse_task_spec(str(txt), scene="cubes")
    assert [(e.task_id, e.texts, e.indices) for e in tl.entries] == [
        ("pick_red", ("pick up the red cube", "GRAB the red block"), (0, 1)),
        ("", ("wave hello",), (-1,)),
        ("stack_blue_on_green", ("put the blue cube on the green cube",), (0,)),
    ]
    assert tl.suite.name == "cubes" and tl.unmatched() == ["wave hello"]
    semi = parse_task_spec("push the red cube to the left edge;; put the green cube in the bin ;", scene=None)
    assert [e.task_id for e in semi.entries] == ["push_red_left", "bin_green"] and semi.suite.scene == "cubes"
    # Cycle goes round in list order; random and balanced are seeded.
    assert [semi.next().task_id for _ in range(3)] == ["push_red_left", "bin_green", "push_red_left"]
    draws = [[parse_task_spec("cubes", order="random", seed=9).next().text for _ in range(1)] for _ in range(2)]
    assert draws[0] == draws[1]
    own = tmp_path / "own.yaml"
    own.write_text("tasks:\n  - task_id: wave\n    family: gesture\n    paraphrases: [wave hello, say hi]\n"
                   "    count: 2\n  - task_id: bin_red\n")
    mine = parse_task_spec(str(own), scene="cubes")
    assert mine.target is None and mine.entries[0].indices == (0, 1) and mine.entries[1].task is not None
    assert mine.info_extra()["tasks"]["wave"] == {"family": "gesture", "paraphrases": ["wave hello", "say hi"],
                                                  "heldout": []}
    for bad, words in [("nosuchsuite", "no task suite"), (str(tmp_path / "missing.txt"), "no such file"),
                       ("cubes", "--scene cubes")]:
        with pytest.raises(TaskListError, match=words):
            parse_task_spec(bad, scene="pick" if bad == "cubes" else None)
    broken = tmp_path / "bad.json"
    broken.write_text(json.dumps([{"task_id": "pick_red", "count": 0}]))
    with pytest.raises(TaskListError, match="'count' must be a whole number"):
        parse_task_spec(str(broken))


def test_yaml_without_pyyaml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("- pick up the red cube\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(TaskListError, match="PyYAML"):
        parse_task_spec(str(spec))


def test_env_state_is_every_object_in_the_fixed_layout(balanced: Path) -> None:
    ds = Dataset.open(balanced)
    with ds.episode(ds.episode_indices[0]) as ep:
        state = ep.numeric("observation.environment_state")
    assert state.shape[1] == 24 and np.all(np.isfinite(state))
    quats = state[:, 3:7]
    assert np.allclose(np.linalg.norm(quats, axis=1), 1, atol=1e-4) and np.all(quats[:, 0] >= 0)


def test_live_view_draws_the_instruction_above_the_cameras(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pygame")
    from telecorder.collect.live_view import LiveView, view_layout

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    plain, banner = view_layout(2, 3), view_layout(2, 3, instruction=True)
    assert banner.banner is not None and banner.banner[1] == 0 and plain.banner is None
    assert all(t[1] >= banner.banner[3] for t in banner.tiles), "the cameras sit below the instruction"
    assert banner.size[1] - plain.size[1] == banner.banner[3]
    view = LiveView([], controls=KEYBOARD, instruction=True)
    with view:
        assert view.wait_open(30), view.error
        view.set_instruction("put the blue cube on the green cube, please, and then some more words to shrink")
        drawn = view.frames_drawn
        deadline = time.monotonic() + 10
        while view.frames_drawn < drawn + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert view.frames_drawn >= drawn + 3 and view.error is None


def test_a_resumed_balanced_session_counts_what_the_dataset_holds(tmp_path: Path) -> None:
    out, two = tmp_path / "resumed", "pick up the red cube; pick up the green cube"
    assert collect_main(["--device", "scripted", "--tasks", two, "--episodes", "1", "--seed", "1", *FAST,
                         "--out", str(out)]) == 0
    assert collect_main(["--device", "scripted", "--tasks", two, "--task-order", "balanced", "--episodes", "1",
                         "--seed", "1", "--resume", *FAST, "--out", str(out)]) == 0
    recs = _records(out)
    assert [r["task_id"] for r in recs] == ["pick_red", "pick_green"], "balanced goes on from the dataset's counts"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("big.txt", None, r"bytes is no task list"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, r"not valid JSON \(RecursionError"),
    ("binary.txt", b"\xff\xfe\x00pick", r"cannot read it"),
    ("long.txt", "pick up " + "very " * 1000 + "red cube\n", r"instruction of \d+ characters"),
    ("long.json", json.dumps([{"paraphrases": ["grab " + "x" * 3000]}]), r"task 1: an instruction of"),
    ("nan.json", '[{"task_id": "pick_red", "count": NaN}]', r"'count' must be a whole number"),
])
def test_hostile_task_files_are_one_line_errors(tmp_path, name, content, message):
    from telecorder.collect.task_list import MAX_TASK_FILE_BYTES, TaskListError, parse_task_spec

    path = tmp_path / name
    if content is None:
        with open(path, "wb") as fh:  # sparse: declares more than a task list could hold
            fh.truncate(MAX_TASK_FILE_BYTES + 1)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(TaskListError, match=message):
        parse_task_spec(str(path), scene="cubes")


def test_a_task_file_that_is_no_regular_file(tmp_path):
    from telecorder.collect.task_list import TaskListError, parse_task_spec

    link = tmp_path / "tasks.txt"
    link.symlink_to("/dev/zero")  # a link to a device: refused before anything is read
    with pytest.raises(TaskListError, match="not a regular file"):
        parse_task_spec(str(link), scene="cubes")
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(TaskListError, match="not a regular file"):
        parse_task_spec(str(folder), scene="cubes")
