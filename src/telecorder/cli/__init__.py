"""The ``telecorder`` command and the ``collect`` entry point: argument parsing only."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from .. import __version__
from ..errors import TelecorderError

EXIT_ERROR = 2
EXIT_PROBLEMS = 1

# The key paragraph at the end is collect.key_bindings.help_text(), pasted (importing it here would load
# every device module for any command); tests/test_live_view_x11.py fails when the two disagree.
COLLECT_EXAMPLES = """\
examples:
  # 5 scripted pick-and-lift demos on the built-in MuJoCo arm, 2 rendered cameras
  collect --device scripted --robot sim --episodes 5 --episode-time 10 --out demos/

  # add a USB camera and a looping video file as extra cameras, record at 50 Hz
  collect --robot sim --device scripted --fps 50 --out demos/ \\
      --camera side=/dev/video0,size=640x480,fps=30 --camera top=clip.mp4,loop

  # your own MJCF arm driven by a smooth joint sweep, appended to an existing dataset
  collect --robot sim --robot-model my_arm.xml --script sweep --out arm_data/ --resume

  # a trained policy drives the sim arm; press i to take over with the keyboard, i to hand back
  collect --device policy --policy ckpt/ --intervene keyboard --robot sim --out rollouts/

  # DAgger with nobody present: the scripted expert corrects the policy, on simulated time
  collect --device policy --policy ckpt/ --intervene expert --no-realtime --env-state --out dagger/

  # steer the sim arm with the keyboard in the live window (it opens by default; needs a display)
  collect --device keyboard --robot sim --episodes 3 --out kb_demos/

  # a gamepad on a PC without a screen: no live view, the pad still steers
  collect --device gamepad --robot sim --no-display --out pad_demos/

keys while recording, in the terminal and in the live window:
  every device: n or Right save, r or Left re-record, q or Esc save & quit, i take over / hand back
  except --device keyboard, whose keys are held in the live window (it needs one):
    move     w/s forward/back, a/d left/right, r/f up/down
    turn     Up/Down pitch down/up, Right/Left roll right/left, q/e yaw left/right
    gripper  Space/c open/close
    session  Enter save, Backspace re-record, Esc save & quit, i take over / hand back
  --device gamepad (and the keys of every device):
    move     left stick forward/back, left/right; right stick up/down; LB/RB down/up
    turn     Y toggles rotation mode: left stick pitch/roll, right stick yaw
    gripper  LT/RT open/close
    session  A save, B re-record, Start save & quit, X take over / hand back
Ctrl-C discards the episode in progress; every episode saved before stays intact.
"""

INFO_EXAMPLES = """\
examples:
  telecorder info demos/
  telecorder info demos/ --episodes      # one line per episode
  telecorder info demos/ --json
"""

DOCTOR_EXAMPLES = """\
examples:
  telecorder doctor demos/               # validate every episode, print the sync report
  telecorder doctor demos/ --frames all  # also decode every stored frame
  telecorder doctor demos/ --repair      # salvage interrupted episodes, rebuild index and stats
  telecorder doctor demos/ --json > report.json
  telecorder doctor demos/ --runner beam --beam-options '--direct_num_workers=2'   # checks on Apache Beam

exit status: 0 no errors, 1 errors found (or warnings with --strict), 2 not a dataset.
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:  # NaN passes "<= 0", and inf breaks every duration
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
    return value


def _usb_latency_ms(text: str) -> float:
    """An FTDI latency timer in ms: 1..255 as the chip allows, or 0 for an adapter without one."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of milliseconds (0..255), not {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be 0..255 ms (an FTDI latency timer), not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x480, not {text!r}") from e


def add_collect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="scripted",
                   help="teleop front-end: scripted, leader_arm, kinesthetic, vr, gamepad, keyboard, policy")
    p.add_argument("--robot", default="sim", choices=["sim", "dynamixel"],
                   help="follower robot: sim (MuJoCo, default) or dynamixel (--follower-port or --emulate)")
    p.add_argument("--robot-model", type=Path,
                   help="MJCF file of your own arm: the simulated arm for --robot sim; with --robot dynamixel, the "
                        "model end-effector devices solve IK on (joints named as calibrated, a site 'ee_site' at the "
                        "grasp point; --emulate defaults to the built-in arm's)")
    p.add_argument("--script", default="expert", choices=["expert", "sweep"],
                   help="what --device scripted does: the pick-and-lift expert, or a joint sweep")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create (or append to with --resume)")
    pol = p.add_argument_group("policy in the loop (--device policy)")
    pol.add_argument("--policy", help="a checkpoint folder 'telecorder train' wrote, or module:factory returning a Policy")
    pol.add_argument("--intervene", choices=["leader_arm", "gamepad", "keyboard", "vr", "expert"],
                     help="who may take over from the policy (key i, gamepad X, VR x; a leader arm also by moving "
                          "it); expert = the sim's scripted expert corrects automatically")
    pol.add_argument("--execute-steps", type=int, default=None,
                     help="actions of each chunk to run before the next chunk takes over (default: the whole chunk)")
    pol.add_argument("--ensemble", type=float, default=None, metavar="M",
                     help="ACT temporal ensembling: a chunk every tick, averaged with weights exp(-M*i)")
    p.add_argument("--resume", action="store_true", help="append to an existing dataset with the same schema")
    p.add_argument("--episodes", type=int, default=10, help="episodes to save (default 10)")
    p.add_argument("--episode-time", type=_positive_float, default=20.0, help="time limit per episode in s (default 20)")
    p.add_argument("--reset-time", type=float, default=2.0, help="pause between episodes in s (default 2)")
    p.add_argument("--task", default=None, help="task / language instruction stored with each episode")
    p.add_argument("--fps", type=_positive_float, default=30.0, help="control rate in Hz (default 30, up to 200)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=SOURCE[,size=WxH][,fps=F][,loop]",
                   help="an OpenCV camera: device index, /dev/videoN, video file or stream URL (repeatable)")
    p.add_argument("--sim-cameras", default=None,
                   help="comma-separated sim cameras to record (default: all of the model's; 'none' for none)")
    p.add_argument("--camera-size", type=_size, default=(640, 480), help="sim camera resolution (default 640x480)")
    p.add_argument("--camera-fps", type=_positive_float, default=30.0,
                   help="sim camera frame rate (default 30); sim frames are captured at control ticks, so at most --fps")
    p.add_argument("--image-format", choices=["jpeg", "png"], default="jpeg", help="frame encoding (png = lossless)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    p.add_argument("--display", action=argparse.BooleanOptionalAction, default=None,
                   help="a live window with the cameras, the episode status and the active key map (default: on "
                        "for --device keyboard and gamepad and --intervene keyboard/gamepad, off otherwise); "
                        "--device keyboard reads its keys in that window, so with --no-display it still opens "
                        "one, keys only")
    p.add_argument("--operator", default=None, help="operator name stored with each episode")
    p.add_argument("--seed", type=int, default=None, help="seed for scene randomization and the script")
    p.add_argument("--no-realtime", action="store_true",
                   help="sim only: run on simulated time as fast as physics and rendering allow, no reset "
                        "pause (times in the file are simulation time; not with a real robot, camera or person)")
    p.add_argument("--env-state", action="store_true",
                   help="sim only: also record the task cube's world pose as observation.environment_state "
                        "(privileged simulator state)")
    v = p.add_argument_group("End-effector devices (--device vr|gamepad|keyboard, with --robot sim, or --robot "
                             "dynamixel and --robot-model ARM.xml for IK)")
    v.add_argument("--pose-stream", type=Path, help="vr: replay a controller pose stream (JSON lines) instead of a headset")
    v.add_argument("--vr-hand", choices=["left", "right"], default="right")
    v.add_argument("--vr-scale", type=_positive_float, default=1.0, help="vr: controller-to-robot motion scale")
    v.add_argument("--vr-axes", default="openxr_to_robot", help="vr: axis preset (openxr_to_robot, identity)")
    g = p.add_argument_group("Dynamixel arms (--device leader_arm|kinesthetic, --robot dynamixel)")
    g.add_argument("--leader-port", help="serial port of the leader arm, e.g. /dev/ttyUSB0")
    g.add_argument("--follower-port", help="serial port of the follower arm (--robot dynamixel)")
    g.add_argument("--leader-calibration", type=Path, help="leader calibration JSON (default: config dir)")
    g.add_argument("--follower-calibration", type=Path, help="follower calibration JSON (default: config dir)")
    g.add_argument("--baudrate", type=int, default=1_000_000, help="bus baud rate (default 1000000)")
    g.add_argument("--emulate", action="store_true",
                   help="use the built-in emulated arm (Protocol 2.0 bus emulator) for any port not given")
    g.add_argument("--emulate-drop-rate", type=float, default=0.0, help="emulator: fraction of replies dropped")
    g.add_argument("--emulate-crc-rate", type=float, default=0.0, help="emulator: fraction of replies corrupted")
    g.add_argument("--emulate-latency", type=float, default=0.0,
                   help="emulator fault: seconds added to each reply, on top of the modelled bus timing")
    g.add_argument("--emulate-usb-latency-ms", type=_usb_latency_ms, default=1.0,
                   help="emulator: the adapter's FTDI latency timer (default 1, as tuned; 16 is the factory setting)")
    g.add_argument("--emulate-dead", action="append", default=[], metavar="ID:SECONDS",
                   help="emulator: servo ID stops answering SECONDS after start (repeatable)")
    g.add_argument("--hand-file", type=Path, help="emulator: CSV/JSON joint trajectory the hand moves the arm along")


def run_collect(args: argparse.Namespace, console: Console) -> int:
    from ..collect.cameras.opencv import CameraSpec
    from ..collect.factory import DeviceConfig, EmulatorOptions, make_devices
    from ..collect.key_bindings import controls_for
    from ..collect.session import RecordingSession, SessionConfig

    sim_cams = None
    if args.sim_cameras is not None:
        sim_cams = [] if args.sim_cameras == "none" else [c for c in args.sim_cameras.split(",") if c]
    try:
        specs = [CameraSpec.parse(c) for c in args.camera]
    except ValueError as e:
        raise TelecorderError(str(e)) from e
    try:
        dead = {int(k): float(v) for k, v in (d.split(":") for d in args.emulate_dead)}
    except ValueError as e:
        raise TelecorderError(f"--emulate-dead takes ID:SECONDS, e.g. 3:5.0 ({e})") from e
    task = args.task
    if task is None:
        task = "pick up the cube" if args.device in ("scripted", "policy") and args.robot_model is None else ""
    controls = controls_for(args.device, args.intervene)
    robot, teleop, cameras = make_devices(
        DeviceConfig(
            policy=args.policy,
            intervene=args.intervene,
            task=task,
            execute_steps=args.execute_steps,
            ensemble=args.ensemble,
            robot=args.robot,
            device=args.device,
            robot_model=args.robot_model,
            script=args.script,
            fps=args.fps,
            seed=args.seed,
            sim_cameras=sim_cams,
            camera_size=args.camera_size,
            camera_fps=args.camera_fps,
            cameras=specs,
            leader_port=args.leader_port,
            follower_port=args.follower_port,
            leader_calibration=args.leader_calibration,
            follower_calibration=args.follower_calibration,
            baudrate=args.baudrate,
            emulate=args.emulate,
            pose_stream=args.pose_stream,
            vr_hand=args.vr_hand,
            vr_scale=args.vr_scale,
            vr_axes=args.vr_axes,
            realtime=not args.no_realtime,
            env_state=args.env_state,
            emulator=EmulatorOptions(drop_rate=args.emulate_drop_rate, crc_error_rate=args.emulate_crc_rate,
                                     latency_s=args.emulate_latency, dead_after_s=dead, hand_file=args.hand_file,
                                     usb_latency_ms=args.emulate_usb_latency_ms),
        )
    )
    session = RecordingSession(
        robot,
        teleop,
        cameras,
        SessionConfig(
            out=args.out,
            episodes=args.episodes,
            episode_time_s=args.episode_time,
            reset_time_s=args.reset_time,
            task=task,
            fps=args.fps,
            resume=args.resume,
            image_encoding=args.image_format,
            jpeg_quality=args.jpeg_quality,
            operator=args.operator,
            seed=args.seed,
            display=args.display if args.display is not None else controls.view_by_default,
            controls=controls.device,
            realtime=not args.no_realtime,
        ),
        console=console,
    )
    session.run()
    return 0


def run_info(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_info

    print_info(console, args.dataset, per_episode=args.episodes, as_json=args.json)
    return 0


def run_stats(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_stats

    print_stats(console, args.dataset, as_json=args.json)
    return 0


def run_doctor(args: argparse.Namespace, console: Console) -> int:
    from .reports import print_doctor

    if args.beam_options and args.runner != "beam":
        raise TelecorderError("--beam-options: add --runner beam")
    return print_doctor(console, args.dataset, repair=args.repair, frames=args.frames,
                        as_json=args.json, strict=args.strict, runner=args.runner,
                        beam_options=list(args.beam_options or []))


EMULATE_EXAMPLES = """\
examples:
  telecorder emulate --ids 1-7 --model xl330-m288 --link leader.tty   # serve until Ctrl-C
  telecorder emulate --ids 1-6 --hand demo --drop-rate 0.05            # the sim-arm demonstration, lossy bus
  telecorder emulate --ids 1-6 --hand my_motion.csv                    # columns: t,1,2,... (radians)
  telecorder emulate --ids 1-7 --baudrate 57600 --usb-latency-ms 16    # a factory-fresh bus and U2D2
"""

CALIBRATE_EXAMPLES = """\
examples:
  telecorder calibrate --arm leader --port /dev/ttyUSB0 --ids 1-6        # guided, in the terminal
  telecorder calibrate --arm follower --port /dev/ttyUSB1 --ids 1-6 --signs 1,-1,1,1,1
  telecorder calibrate --arm leader --port /dev/ttyUSB0 --ids 1-6 --pose-file pose.json   # scripted
"""


def parse_ids(text: str) -> list[int]:
    """``1-7`` or ``1,2,5`` or ``1-3,7``."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            ids += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"servo ids like 1-7 or 1,2,5, not {text!r}") from e
    return ids


def run_vr_record(args: argparse.Namespace, console: Console) -> int:
    from ..collect.devices.vr import OpenXRClient

    with OpenXRClient() as client:
        console.print(f"OpenXR runtime {client.runtime_name}, system {client.system_name}", highlight=False)
        console.print(f"recording controller poses to {args.out} (Ctrl-C stops)", highlight=False)
        n = client.record_stream(args.out, seconds=args.seconds)
        # Which controllers the runtime bound: the recorded buttons depend on the profile.
        profiles = client.interaction_profiles()
    bound = ", ".join(f"{hand} {profile or 'none (not bound: switched off?)'}" for hand, profile in profiles.items())
    console.print(f"controllers: {bound}", highlight=False)
    console.print(f"wrote {n} samples to {args.out}", highlight=False)
    return 0


def run_emulate(args: argparse.Namespace, console: Console) -> int:
    import signal

    from ..collect.dynamixel.emulator import BusEmulator, FaultConfig
    from ..collect.dynamixel.hand import HandMotion

    if args.hand == "none":
        hand = None
    elif args.hand == "builtin":
        hand = HandMotion.builtin(args.ids)
    elif args.hand == "demo":
        from ..collect.dynamixel.emulated_arm import demonstration_motion

        hand = demonstration_motion()
    else:
        hand = HandMotion.from_file(args.hand)
    dead = {int(k): float(v) for k, v in (d.split(":") for d in args.dead)}
    faults = FaultConfig(drop_rate=args.drop_rate, crc_error_rate=args.crc_rate, latency_s=args.latency,
                         dead_after_s=dead)
    emu = BusEmulator(args.ids, args.model, args.baudrate, hand=hand, faults=faults,
                      usb_latency_ms=args.usb_latency_ms, usb_packet_bytes=args.usb_packet_bytes)
    path = emu.start()
    try:
        if args.link:
            emu.link(args.link)
        console.print(f"{path}", highlight=False)
        console.print(f"emulating {len(args.ids)} x {args.model} (ids {args.ids}) at {args.baudrate} baud, "
                      f"USB latency timer {args.usb_latency_ms:g} ms"
                      + (f", linked as {args.link}" if args.link else "") + "; Ctrl-C stops", highlight=False)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("emulator stopped")
    finally:
        emu.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a server command the way Ctrl-C does, so its clean-up runs."""
    raise KeyboardInterrupt


def run_calibrate(args: argparse.Namespace, console: Console) -> int:
    from ..collect.dynamixel.bus import DynamixelBus
    from ..collect.dynamixel.calibration_session import calibrate_arm

    signs = [int(s) for s in args.signs.split(",")] if args.signs else None
    bus = DynamixelBus(args.port, args.ids, baudrate=args.baudrate)
    calibrate_arm(bus, args.arm, out=args.out, pose_file=args.pose_file, signs=signs, gripper=not args.no_gripper,
                  console=console)
    return 0


CONVERT_EXAMPLES = """\
examples:
  telecorder convert demos/ demos_rlds/ --to rlds                 # TFDS/RLDS, readable by tfds.builder_from_directory
  telecorder convert demos/ demos_oxe/ --to oxe --image-size 256x256 --cameras front:image,wrist:wrist_image
  telecorder convert demos/ demos_oxe/ --to oxe --val-fraction 0.1 --binarize-gripper  # Octo/OpenVLA: train + val
  telecorder convert demos/ demos_lerobot/ --to lerobot --codec av1 --workers 2
  telecorder convert lerobot_ds/ native/ --to native --episodes 0-9,15 --skip-bad
  telecorder convert lerobot_ds/ native/ --to native --cameras cam_high --skip-missing-cameras
  telecorder convert episodes_hdf5/ demos/ --to native --from aloha --fps 30
  telecorder convert demos/ act_data/ --to aloha --fps 50 --episode-length 400   # ACT: 50 Hz, equal lengths
  telecorder convert demos/ rm/ --to robomimic             # actions scaled into [-1, 1], statistics stored
  telecorder convert demos/ demos_rlds/ --to rlds --workers 2        # shards written in parallel, merged
  telecorder convert demos/ demos_rlds/ --to rlds --runner beam --beam-options '--direct_num_workers=2'

formats: native, rlds, oxe (write only), lerobot (v2.0/v2.1/v3.0 in, v3.0 out), aloha, robomimic.
"""


def run_convert(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..converters.pipeline import (
        ConvertOptions,
        convert,
        parse_cameras,
        parse_episode_ranges,
    )

    writer_options = {k: v for k, v in {
        "codec": args.codec, "file_format": args.file_format, "compress": args.compress or None,
        "action_space": args.action_space, "robot_model": args.robot_model,
        "language_embeddings": args.language_embeddings,
        "binarize_gripper": True if args.binarize_gripper else None,
        "episode_length": args.episode_length, "actions": args.robomimic_actions, "sim": args.aloha_sim,
    }.items() if v is not None}
    if args.episode_length is not None and args.to != "aloha":
        raise TelecorderError("--episode-length: only ALOHA output (--to aloha) has fixed-length episodes")
    if args.aloha_sim is not None and args.to != "aloha":
        raise TelecorderError("--aloha-sim/--no-aloha-sim: only for ALOHA output (--to aloha)")
    if args.beam_options and args.runner != "beam":
        raise TelecorderError("--beam-options: add --runner beam")
    if args.robomimic_actions is not None and args.to != "robomimic":
        raise TelecorderError("--robomimic-actions: only for robomimic output (--to robomimic)")
    reader_options: dict[str, object] = {"tabular_only": True} if args.tabular_only else {}
    if args.strict_timestamps:
        reader_options["strict_timestamps"] = True
    if args.exclude_bad:
        from ..converters import detect_format

        if (getattr(args, "from") or detect_format(args.src)) != "native":
            raise TelecorderError("--exclude-bad: only native datasets carry bad-episode marks")
        reader_options["exclude_bad"] = True
    opts = ConvertOptions(
        to=args.to,
        src_format=getattr(args, "from"),
        episodes=parse_episode_ranges(args.episodes) if args.episodes else None,
        image_size=args.image_size,
        fps=args.fps,
        cameras=parse_cameras(args.cameras) if args.cameras else None,
        workers=args.workers,
        overwrite=args.overwrite,
        resume=args.resume,
        skip_bad=args.skip_bad,
        skip_missing_cameras=args.skip_missing_cameras,
        val_fraction=args.val_fraction or 0.0,
        runner=args.runner,
        beam_options=list(args.beam_options or []),
        shard_episodes=args.shard_episodes,
        reader_options=reader_options,
        writer_options=writer_options,
    )
    columns = (TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None, rate="")
        t0 = time.perf_counter()

        def on_episode(done: int, total: int, frames: int) -> None:
            rate = frames / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, completed=done, total=total, rate=f"{rate:.0f} frames/s")

        report = convert(args.src, args.dst, opts, on_episode=on_episode)
    console.print(
        f"wrote {report.episodes} episode(s), {report.frames} frames to {report.output} as {args.to} "
        f"in {report.seconds:.1f} s ({report.frames_per_s:.0f} frames/s)"
        + (f"; {report.resumed} converted before were kept" if report.resumed else ""), highlight=False)
    for cam, why in report.cameras_left_out.items():
        console.print(f"[yellow]left out camera[/] {cam!r}: {why}", highlight=False)
    if report.timestamp_offsets:
        from ..converters.lerobot.timing import offset_note

        console.print(f"[yellow]note[/] {offset_note(report.timestamp_offsets)}", highlight=False)
    for _, reason in report.skipped:
        console.print(f"[yellow]skipped[/] {reason}", highlight=False)
    if args.episode_length is not None:
        from ..converters.aloha.core import length_fit_summary

        console.print(length_fit_summary(report.output), highlight=False)
    return 0


VIEW_EXAMPLES = """\
examples:
  telecorder view demos/                       # browse: arrows step, shift = 1 s, space play, PgUp/PgDn episodes, d bad
  telecorder view demos/ --episode 3 --step 40 --screenshot view.png   # headless, same layout
"""

EXPORT_EXAMPLES = """\
examples:
  telecorder export demos/ --episode 0 --mp4 ep0.mp4
  telecorder export demos/ --episode 0 --contact-sheet ep0.png --frames 8
  telecorder export demos/ --episode 0 --gif ep0.gif
"""


def run_view(args: argparse.Namespace, console: Console) -> int:
    if args.screenshot is not None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from ..viewers.browser import EpisodeBrowser

    browser = EpisodeBrowser(args.dataset, episode=args.episode)
    if args.screenshot is not None:
        browser.screenshot(args.screenshot, episode=args.episode, step=args.step)
        console.print(f"wrote {args.screenshot}", highlight=False)
        return 0
    browser.run()
    return 0


def run_export(args: argparse.Namespace, console: Console) -> int:
    from ..viewers import export

    if not (args.mp4 or args.gif or args.contact_sheet):
        raise TelecorderError("say what to export: --mp4 FILE, --gif FILE and/or --contact-sheet FILE")
    if args.mp4:
        n = export.export_mp4(args.dataset, args.episode, args.mp4, plot=not args.no_plot)
        console.print(f"wrote {args.mp4} ({n} frames)", highlight=False)
    if args.gif:
        export.export_gif(args.dataset, args.episode, args.gif)
        console.print(f"wrote {args.gif}", highlight=False)
    if args.contact_sheet:
        export.contact_sheet(args.dataset, args.episode, args.contact_sheet, frames_per_camera=args.frames)
        console.print(f"wrote {args.contact_sheet}", highlight=False)
    return 0


TOKENIZER_EXAMPLES = """\
examples:
  telecorder tokenizer fit demos/ --kind fast --chunk-seconds 1 --out tok/
  telecorder tokenizer report demos/ --tokenizer tok/
  telecorder tokenizer report demos/ --tokenizer tok/ --json
"""


def run_tokenizer(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from ..actions.fit_report import fit_fast, report

    if args.action == "fit":
        if args.out is None:
            raise TelecorderError("tokenizer fit needs --out DIR")
        result = fit_fast(args.dataset, args.out, chunk_seconds=args.chunk_seconds, vocab_size=args.vocab_size,
                          scale=args.scale)
        console.print(f"FAST tokenizer fitted on {result['chunks']} chunks of {result['horizon']} x "
                      f"{result['action_dim']}; saved to {result['out']}", highlight=False)
        return 0
    if args.tokenizer is None:
        raise TelecorderError("tokenizer report needs --tokenizer DIR (made by 'telecorder tokenizer fit')")
    r = report(args.dataset, args.tokenizer)
    if args.json:
        console.print_json(json.dumps(r))
        return 0
    console.print(
        f"{r['chunks']} chunks of {r['horizon']} steps x {r['action_dim']} dims: FAST "
        f"{r['tokens_per_chunk_mean']:.1f} tokens per chunk (p99 {r['tokens_per_chunk_p99']:.0f}) vs "
        f"{r['naive_tokens_per_chunk']} naive 256-bin tokens: {r['compression_vs_naive']:.1f}x fewer; "
        f"encode {r['encode_chunks_per_s']:.0f} / decode {r['decode_chunks_per_s']:.0f} chunks/s", highlight=False)
    table = Table(title="reconstruction error in the action's units")
    for col in ("dimension", "RMSE", "max"):
        table.add_column(col)
    for name in r["rmse"]:
        table.add_row(name, f"{r['rmse'][name]:.4f}", f"{r['max_abs_error'][name]:.4f}")
    console.print(table)
    return 0


TRAIN_EXAMPLES = """\
examples:
  # state-only policy (joint state + object pose), 3000 steps: a few minutes on a CPU
  telecorder train demos/ --out policies/bc_state

  # from the cameras (resized to 96x96) + joint state, chunks of 20 actions
  telecorder train demos/ --out policies/bc_images --obs images --cameras front,wrist --max-minutes 20

  # HG-DAgger: demonstrations plus intervention rollouts; human-labelled steps weigh 5x, policy
  # steps 1x (--policy-weight 0 keeps only the human-labelled steps)
  telecorder train demos/ rollouts1/ rollouts2/ --out policies/round2 --intervention-weight 5

the folder gets policy.json (spec, normalizers, training summary) and model.safetensors;
'collect --device policy' runs it.
"""


def run_train(args: argparse.Namespace, console: Console) -> int:
    from rich import progress as rp

    from ..policies.train import train_bc

    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise TelecorderError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    cameras = None if args.cameras is None else [c.strip() for c in args.cameras.split(",") if c.strip()]
    width, height = args.image_size
    with rp.Progress(rp.TextColumn("[bold]training"), rp.BarColumn(), rp.TextColumn("{task.completed}/{task.total}"),
                     rp.TextColumn("{task.fields[losses]}"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
                     console=console) as progress:
        task = progress.add_task("train", total=args.steps, losses="")

        def on_progress(step: int, total: int, loss: float, val_loss: float | None) -> None:
            if step % 10 and step != total:
                return
            text = f"loss {loss:.4f}" + ("" if val_loss is None else f"  val {val_loss:.4f}")
            progress.update(task, completed=step, total=total, losses=text)

        summary = train_bc(
            args.dataset, args.out, obs=args.obs, steps=args.steps, horizon=args.horizon,
            val_episodes=args.val_episodes, batch_size=args.batch_size, lr=args.lr, image_size=(height, width),
            cameras=cameras, seed=args.seed, intervention_weight=args.intervention_weight,
            policy_weight=args.policy_weight, on_progress=on_progress, overwrite=args.overwrite,
            num_threads=args.threads, max_minutes=args.max_minutes, state_noise=args.state_noise,
            state_keys=None if args.state_keys is None else [k.strip() for k in args.state_keys.split(",") if k.strip()],
            skip_nonfinite=args.skip_nonfinite,
        )
    for root, bad in summary.get("skipped_nonfinite", {}).items():
        console.print(f"[yellow]left out[/] {len(bad)} episode(s) of {root} holding NaN/inf values "
                      f"(--skip-nonfinite): {', '.join(bad)}", highlight=False)
    val = summary["final_val_loss"]
    console.print(
        f"trained {summary['steps']} steps on {summary['train_samples']} samples "
        f"({len(summary['train_episodes'])} episodes) in {summary['train_time_s']:.0f} s: train loss "
        f"{summary['initial_train_loss']:.4f} -> {summary['final_train_loss']:.4f}"
        + ("" if val is None else f", val loss {val:.4f} ({len(summary['val_episodes'])} episodes)")
        + f"; saved to {summary['out']}", highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="telecorder",
        description="Record robot teleoperation demonstrations and turn them into VLA training data.",
        formatter_class=fmt,
        epilog="run 'telecorder COMMAND --help' for a command's options and examples",
    )
    parser.add_argument("--version", action="version", version=f"telecorder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("collect", help="record episodes from a teleop device", description="Record episodes: "
                       "follower state, commanded actions and every camera, each sample with its capture time.",
                       epilog=COLLECT_EXAMPLES, formatter_class=fmt)
    add_collect_arguments(p)
    p.set_defaults(func=run_collect)

    p = sub.add_parser("info", help="summarize a dataset", description="Summarize a dataset: episodes, frames, "
                       "duration, features, tasks, success rate, size on disk.", epilog=INFO_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    p.add_argument("--episodes", action="store_true", help="also list every episode")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_info)

    p = sub.add_parser("stats", help="per-feature statistics (mean, std, min, max, q01, q99)",
                       description="Print the dataset's per-feature statistics, merged episode by episode "
                       "(q01/q99 within 0.5% relative error).",
                       epilog="examples:\n  telecorder stats demos/\n  telecorder stats demos/ --json\n",
                       formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_stats)

    p = sub.add_parser("doctor", help="validate a dataset and report timing/sync",
                       description="Validate every episode (schema, timestamps, NaN/inf, frames) and report the "
                       "control rate, late ticks and per-camera frame age, repeats and drops.",
                       epilog=DOCTOR_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    p.add_argument("--repair", action="store_true", help="mend what can be mended, then check again")
    p.add_argument("--frames", choices=["none", "ends", "all"], default="ends",
                   help="which stored frames to decode (default: first and last of each camera)")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--runner", choices=["local", "beam"], default="local",
                   help="check episodes in this process (default) or in an Apache Beam pipeline")
    p.add_argument("--beam-options", action="append", metavar="'--OPT=V ...'", help="Beam pipeline options")
    p.set_defaults(func=run_doctor)

    p = sub.add_parser("convert", help="convert between native, RLDS/OXE, LeRobot, ALOHA and robomimic",
                       description="Convert a dataset into another format; the source format is detected. "
                       "Output is built next to DST and moved into place when complete.",
                       epilog=CONVERT_EXAMPLES, formatter_class=fmt)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--to", required=True, choices=["native", "rlds", "oxe", "lerobot", "aloha", "robomimic"])
    p.add_argument("--from", dest="from", choices=["native", "rlds", "lerobot", "aloha", "robomimic"],
                   help="source format (default: detected)")
    p.add_argument("--episodes", help="episodes to convert, e.g. 0-9,15")
    p.add_argument("--image-size", type=_size, help="resize frames to WIDTHxHEIGHT (area or Lanczos)")
    p.add_argument("--fps", type=_positive_float, help="resample to this control rate by timestamps")
    p.add_argument("--cameras", help="select/rename cameras: front:image,wrist:wrist_image; the others are never "
                   "read")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="parallel processes; above 1 each converts and writes a shard of episodes, merged at the end")
    p.add_argument("--runner", choices=["local", "beam"], default="local",
                   help="local processes (default), or an Apache Beam pipeline (pip install 'telecorder[beam]')")
    p.add_argument("--beam-options", action="append", metavar="'--OPT=V ...'",
                   help="Beam pipeline options, e.g. '--direct_num_workers=2 --direct_running_mode=multi_processing' "
                   "or '--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp'")
    p.add_argument("--shard-episodes", type=_positive_int, metavar="N",
                   help="episodes per shard when sharded (default: 8 shards per worker, at most 64 episodes each)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--resume", action="store_true", help="native output: keep episodes an interrupted run converted")
    p.add_argument("--skip-bad", action="store_true", help="convert the rest when an episode is bad, and list it")
    p.add_argument("--exclude-bad", action="store_true", help="leave out episodes marked bad (in the viewer)")
    p.add_argument("--tabular-only", action="store_true", help="LeRobot source: numeric data only, no videos")
    p.add_argument("--strict-timestamps", action="store_true",
                   help="LeRobot source: refuse rows whose timestamps run a constant offset (up to one frame) off "
                   "their video, instead of giving each row its own frame by that offset")
    p.add_argument("--skip-missing-cameras", action="store_true",
                   help="leave out cameras whose video files are missing for some of the episodes, and list them")
    p.add_argument("--codec", choices=["h264", "av1"], help="LeRobot output video codec (default h264)")
    p.add_argument("--file-format", choices=["tfrecord", "array_record"], help="RLDS output shard format")
    p.add_argument("--compress", action="store_true", help="ALOHA output: JPEG-compressed image rows (robomimic: gzip the observations)")
    p.add_argument("--action-space", choices=["eef", "joint"], help="OXE output: EEF deltas (default) or joints")
    p.add_argument("--robot-model", type=Path, help="OXE output: MJCF/URDF for forward kinematics")
    p.add_argument("--language-embeddings", type=Path, help="OXE output: .npy with one embedding per episode")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="RLDS/OXE output: whole episodes to a 'val' split (deterministic), e.g. 0.1")
    p.add_argument("--binarize-gripper", action="store_true",
                   help="OXE output: gripper action 0 = closed / 1 = open, split at 0.5 (Octo/OpenVLA convention)")
    p.add_argument("--episode-length", type=_positive_int, metavar="N",
                   help="ALOHA output: every episode exactly N steps, padded by holding its last step or cut "
                   "(ACT stacks whole episodes); each file records its original length")
    p.add_argument("--aloha-sim", action=argparse.BooleanOptionalAction, default=None,
                   help="ALOHA output: the 'sim' attribute ACT reads (real robot: ACT shifts actions one step); "
                   "default from the source (sim clock or a simulated robot)")
    p.add_argument("--robomimic-actions", choices=["normalized", "raw"],
                   help="robomimic output: actions scaled per dimension into [-1, 1] with the statistics stored "
                   "(default), or raw robot units")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("view", help="browse episodes in a window (or save a screenshot)",
                       description="Episode browser: cameras, timeline, state/action plots, sync info; "
                       "mark bad episodes with d.", epilog=VIEW_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path)
    p.add_argument("--episode", type=int, default=None)
    p.add_argument("--step", type=int, default=0, help="with --screenshot: the step to show")
    p.add_argument("--screenshot", type=Path, help="render headless and save a PNG instead of opening a window")
    p.set_defaults(func=run_view)

    p = sub.add_parser("export", help="export an episode as MP4, GIF or a PNG contact sheet",
                       epilog=EXPORT_EXAMPLES, formatter_class=fmt,
                       description="Export the camera grid of an episode (with an action plot strip).")
    p.add_argument("dataset", type=Path)
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--mp4", type=Path)
    p.add_argument("--gif", type=Path)
    p.add_argument("--contact-sheet", type=Path)
    p.add_argument("--frames", type=int, default=8, help="contact sheet: frames per camera")
    p.add_argument("--no-plot", action="store_true", help="mp4: no action plot strip")
    p.set_defaults(func=run_export)

    p = sub.add_parser("tokenizer", help="fit and measure action tokenizers (FAST)",
                       description="Fit the FAST (DCT + BPE) action tokenizer on a dataset's actions, or report "
                       "tokens per chunk against naive 256-bin tokens, reconstruction error and throughput.",
                       epilog=TOKENIZER_EXAMPLES, formatter_class=fmt)
    p.add_argument("action", choices=["fit", "report"])
    p.add_argument("dataset", type=Path)
    p.add_argument("--kind", choices=["fast"], default="fast")
    p.add_argument("--chunk-seconds", type=_positive_float, default=1.0)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--scale", type=_positive_float, default=10.0, help="DCT coefficient scale before rounding")
    p.add_argument("--out", type=Path, help="fit: where to save the tokenizer")
    p.add_argument("--tokenizer", type=Path, help="report: a fitted tokenizer folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_tokenizer)

    p = sub.add_parser("train", help="train the reference behavioral-cloning policy on a dataset",
                       description="Train a small CNN + MLP policy that predicts chunks of actions from the joint "
                       "state and object pose (--obs state) or from camera frames and the joint state (--obs "
                       "images), with an L1 loss on normalized actions; hold out whole episodes for a "
                       "validation loss; save a checkpoint folder.",
                       epilog=TRAIN_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path, nargs="+",
                   help="dataset folder(s); several (demos + DAgger rollouts) train together under one normalization")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to create")
    p.add_argument("--state-keys", metavar="A,B",
                   help="numeric features concatenated into the state (default: observation.state, plus "
                        "observation.environment_state for --obs state)")
    p.add_argument("--state-noise", type=float, default=0.05, metavar="SIGMA",
                   help="Gaussian noise on the normalized state in training, for robustness to the policy's own "
                        "drift (default 0.05; 0 turns it off)")
    p.add_argument("--max-minutes", type=_positive_float, default=None,
                   help="wall-clock budget: fewer steps if --steps would not fit (loading included)")
    p.add_argument("--obs", choices=["state", "images"], default="state",
                   help="what the policy sees (default state: observation.state + observation.environment_state)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    p.add_argument("--horizon", type=int, default=20, help="actions predicted per chunk (default 20)")
    p.add_argument("--val-episodes", type=int, default=None,
                   help="episodes held out (the last by number) for the validation loss (default 10%%)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (state) or 64 (images)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    p.add_argument("--image-size", type=_size, default=(96, 96), metavar="WxH",
                   help="camera frames are resized to this (default 96x96)")
    p.add_argument("--cameras", default=None, help="comma-separated cameras for --obs images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization and sampling (default 0)")
    p.add_argument("--intervention-weight", type=float, default=None,
                   help="sampling weight of human-labelled steps of intervention episodes (default 1)")
    p.add_argument("--policy-weight", type=float, default=1.0,
                   help="sampling weight of policy-acted steps (default 1; 0 drops them)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default 1 for --obs state, 2 for --obs images)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="leave out episodes whose state or action holds NaN/inf (default: refuse, naming the first)")
    p.set_defaults(func=run_train)

    p = sub.add_parser("emulate", help="serve an emulated Dynamixel servo chain on a pseudo-terminal",
                       description="A Protocol 2.0 chain of X-series servos behind a pseudo-terminal that "
                       "dynamixel_sdk (and so any Dynamixel program) opens like a U2D2 adapter. Replies take the "
                       "time a real bus would: every byte 10 bits at --baudrate, each servo's Return Delay Time, and "
                       "the adapter's FTDI latency timer (--usb-latency-ms). Torque-off servos follow a scripted hand "
                       "motion; faults can be injected.",
                       epilog=EMULATE_EXAMPLES, formatter_class=fmt)
    p.add_argument("--ids", type=parse_ids, default=parse_ids("1-6"), help="servo ids (default 1-6)")
    p.add_argument("--model", default="xl330-m288", help="servo model (xl330-m288, xl330-m077, xl430-w250, ...)")
    p.add_argument("--baudrate", type=int, default=1_000_000,
                   help="bus speed the servos use and the wire time is charged at (default 1000000)")
    p.add_argument("--usb-latency-ms", type=_usb_latency_ms, default=1.0,
                   help="the emulated adapter's FTDI latency timer: 1 (default, as GELLO/LeRobot tune a U2D2), "
                   "16 (factory setting), 0 (no adapter delay)")
    p.add_argument("--usb-packet-bytes", type=int, choices=[64, 512], default=512,
                   help="the adapter's USB packet size: 512 (high-speed FTDI, the U2D2's; default) or 64 "
                   "(full-speed, e.g. FT232R)")
    p.add_argument("--link", type=Path, help="also make this symlink to the device path")
    p.add_argument("--hand", default="builtin", help="torque-off motion: builtin, demo (sim arm), none, or a file")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of replies dropped")
    p.add_argument("--crc-rate", type=float, default=0.0, help="fraction of replies with a corrupted CRC")
    p.add_argument("--latency", type=float, default=0.0,
                   help="fault: seconds added before each reply, on top of the modelled bus timing")
    p.add_argument("--dead", action="append", default=[], metavar="ID:SECONDS",
                   help="servo ID stops answering SECONDS after start (repeatable)")
    p.set_defaults(func=run_emulate)

    p = sub.add_parser("vr-record", help="record raw VR controller poses and buttons from an OpenXR runtime",
                       description="Save timestamped controller poses, squeeze, trigger and buttons as JSON lines "
                       "(the --pose-stream format of 'collect --device vr').",
                       epilog="examples:\n  telecorder vr-record session.jsonl --seconds 60\n"
                       "  collect --device vr --pose-stream session.jsonl --robot sim --out demos/\n",
                       formatter_class=fmt)
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    p.set_defaults(func=run_vr_record)

    p = sub.add_parser("calibrate", help="calibrate a leader or follower Dynamixel arm",
                       description="Torque off, then guided steps (known pose, range sweep, gripper open/closed); "
                       "the result is saved as JSON. --pose-file makes it non-interactive.",
                       epilog=CALIBRATE_EXAMPLES, formatter_class=fmt)
    p.add_argument("--arm", choices=["leader", "follower"], required=True)
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--ids", type=parse_ids, default=parse_ids("1-6"), help="servo ids, gripper last (default 1-6)")
    p.add_argument("--baudrate", type=int, default=1_000_000)
    p.add_argument("--signs", help="comma-separated +1/-1 per arm joint (default all +1)")
    p.add_argument("--no-gripper", action="store_true", help="the last id is an arm joint, not a gripper")
    p.add_argument("--pose-file", type=Path, help="JSON: known_pose, names, signs, gripper open/closed, range")
    p.add_argument("--out", type=Path, help="where to save (default: ~/.config/telecorder/calibration/ARM.json)")
    p.set_defaults(func=run_calibrate)
    add_eval_parser(sub, fmt)
    add_replay_parser(sub, fmt)
    add_edit_parser(sub, fmt)
    return parser


def _run(func: Callable[[argparse.Namespace, Console], int], args: argparse.Namespace) -> int:
    console = Console(stderr=False)
    err = Console(stderr=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return func(args, console)
    except TelecorderError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return EXIT_ERROR
    except (ValueError, ImportError) as e:
        # Bad arguments and missing optional extras are the user's to fix, not bugs: no traceback.
        if os.environ.get("TELECORDER_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


EVAL_EXAMPLES = """\
examples:
  # success rate of a trained policy over 50 simulated episodes, with a 95% interval
  telecorder eval ckpt/ --robot sim --episodes 50 --seed 1000

  # keep the rollouts (a normal dataset: view it, or train on it) and print JSON
  telecorder eval ckpt/ --episodes 10 --out rollouts/ --json

  # your own policy class, at wall-clock pace as on hardware
  telecorder eval my_pkg.policies:make_policy --episodes 5 --realtime
"""


def run_eval(args: argparse.Namespace, console: Console) -> int:
    import json

    from ..evaluation import EvalConfig, evaluate

    if args.robot != "sim":
        raise TelecorderError("telecorder eval measures success in simulation: use --robot sim "
                              "(on hardware, run 'collect --device policy' and judge the episodes)")
    cfg = EvalConfig(
        policy=args.policy, episodes=args.episodes, seed=args.seed, out=args.out, robot_model=args.robot_model,
        episode_time_s=args.episode_time, fps=args.fps, realtime=args.realtime,
        camera_size=args.camera_size, task=args.task, execute_steps=args.execute_steps, ensemble=args.ensemble,
    )
    if args.json:
        result = evaluate(cfg)
        print(json.dumps(result))
        return 0
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        progress.add_task(f"evaluating {args.policy} on {args.episodes} episodes", total=None)
        result = evaluate(cfg)
    lo, hi = result["ci95"]
    console.print(
        f"success rate {100 * result['success_rate']:.1f}% ({result['successes']}/{result['episodes']}), "
        f"95% interval {100 * lo:.1f}-{100 * hi:.1f}%; held ticks {result['held_ticks']} of {result['steps']}"
        + (f"; rollouts in {result['rollouts']}" if result["rollouts"] else ""),
        highlight=False,
    )
    return 0


def add_eval_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("eval", help="closed-loop success rate of a policy in simulation",
                       description="Run a policy in closed loop through 'collect --device policy' on the sim "
                       "and print its success rate with a 95% (Wilson) interval.",
                       epilog=EVAL_EXAMPLES, formatter_class=fmt)
    p.add_argument("policy", help="checkpoint folder ('telecorder train' output) or module:factory")
    p.add_argument("--robot", default="sim", help="sim (the only robot that can tell success)")
    p.add_argument("--robot-model", type=Path, help="MJCF of your own arm (needs the task cube to score)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to run (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scene randomization (default 0)")
    p.add_argument("--out", type=Path, help="keep the rollouts as a dataset here (default: discarded)")
    p.add_argument("--episode-time", type=_positive_float, default=10.0, help="time limit per episode in s")
    p.add_argument("--fps", type=_positive_float, default=None, help="control rate (default: the policy's)")
    p.add_argument("--realtime", action="store_true", help="pace by the wall clock (default: simulated time)")
    p.add_argument("--camera-size", type=_size, default=None, help="sim camera size (default: the policy's)")
    p.add_argument("--task", default=None, help="language instruction given to the policy")
    p.add_argument("--execute-steps", type=int, default=None, help="actions of each chunk to run")
    p.add_argument("--ensemble", type=float, default=None, metavar="M", help="ACT temporal ensembling")
    p.add_argument("--json", action="store_true", help="print one JSON object (success_rate, episodes, ...)")
    p.set_defaults(func=run_eval)


REPLAY_EXAMPLES = """\
examples:
  # replay episode 3 on the sim arm in its recorded scene, and see how far the states drift
  telecorder replay demos/ --episode 3 --robot sim

  # as fast as the simulation runs, as JSON (per joint p50/p95/max drift, task success)
  telecorder replay demos/ --episode 3 --no-realtime --json

  # keep the replay as a dataset of its own (view it, or compare it with the original)
  telecorder replay demos/ --episode 3 --out replayed/

  # on the real follower arm (it must stand near the episode's start pose), at half speed first
  telecorder replay demos/ --episode 3 --robot dynamixel --port /dev/ttyUSB1 --speed 0.5
  telecorder replay demos/ --episode 3 --robot dynamixel --port /dev/ttyUSB1
  telecorder replay demos/ --episode 3 --robot dynamixel --emulate   # the emulated arm, no hardware

Ctrl-C stops the replay (the arm holds where it stands); with --out nothing is kept then.
exit status: 0 replayed, 2 refused (wrong action space, arm too far from the start pose, ...).
"""


def run_replay(args: argparse.Namespace, console: Console) -> int:
    import json

    from ..replay.drift import print_report
    from ..replay.player import ReplayConfig, replay

    cfg = ReplayConfig(
        dataset=args.dataset, episode=args.episode, robot=args.robot, robot_model=args.robot_model, port=args.port,
        calibration=args.calibration, baudrate=args.baudrate, emulate=args.emulate, out=args.out,
        realtime=not args.no_realtime, start_tolerance=args.start_tolerance, speed=args.speed,
    )
    # With --json, stdout carries the report only: progress and session lines go to stderr.
    report = replay(cfg, Console(stderr=True) if args.json else console)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, console)
    return 130 if report["interrupted"] else 0


def add_replay_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("replay", help="send a recorded episode's actions to a robot and measure the drift",
                       description="Send one episode's recorded actions to the sim or a Dynamixel arm at the "
                       "recorded rate, with the start check and ramp of teleoperation, and report how far the "
                       "measured states drift from the recorded ones (per joint p50/p95/max) and whether the task "
                       "still succeeds. Records nothing unless --out is given.",
                       epilog=REPLAY_EXAMPLES, formatter_class=fmt)
    p.add_argument("dataset", type=Path, help="a telecorder or LeRobot dataset folder")
    p.add_argument("--episode", type=int, required=True, help="episode number to replay")
    p.add_argument("--robot", default="sim", choices=["sim", "dynamixel"], help="follower robot (default sim)")
    p.add_argument("--robot-model", type=Path, help="MJCF of your own arm for --robot sim (the recording's)")
    p.add_argument("--port", "--follower-port", dest="port", help="--robot dynamixel: the follower's serial port")
    p.add_argument("--calibration", "--follower-calibration", dest="calibration", type=Path,
                   help="follower calibration JSON (default: config dir)")
    p.add_argument("--baudrate", type=int, default=1_000_000, help="bus baud rate (default 1000000)")
    p.add_argument("--emulate", action="store_true", help="--robot dynamixel: use the built-in emulated arm")
    p.add_argument("--start-tolerance", type=_positive_float, default=0.6,
                   help="how far (rad per joint) the arm may stand from the episode's first state (default 0.6)")
    p.add_argument("--speed", type=_positive_float, default=1.0,
                   help="fraction of the recorded rate, e.g. 0.5 for half speed on a first run (default 1)")
    p.add_argument("--no-realtime", action="store_true",
                   help="sim only: run on simulated time, as fast as physics allows (the drift is the same)")
    p.add_argument("--out", type=Path, help="record the replay as a dataset here (default: record nothing)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=run_replay)


EDIT_EXAMPLES = """\
examples:
  telecorder edit merge demos_mon/ demos_tue/ --out demos_all/
  telecorder edit delete-episodes demos/ 3,7-9 --out demos_clean/
  telecorder edit delete-episodes demos/ 3,7-9 --in-place
  telecorder edit split demos/ --val-fraction 0.1 --out-train demos_train/ --out-val demos_val/
  telecorder edit set-task demos/ --episodes 0-4 "pick up the red cube"
  telecorder edit set-task demos/ --from-file tasks.csv        # rows: episodes,task  (e.g. 5-9,"stack, then push")
  telecorder edit remove-feature demos/ observation.images.wrist --in-place

every edit builds a complete dataset in a hidden folder and puts it in place in one step:
a crash leaves the old dataset as it was. Episodes are renumbered 0..N-1 in the result and
keep where they came from (source_dataset, source_episode_index). 'telecorder doctor' passes
on every result.
"""


def run_edit(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..datasets import edit

    ops = {
        "merge": lambda cb: edit.merge(args.datasets, args.out, progress=cb),
        "delete-episodes": lambda cb: edit.delete_episodes(
            args.dataset, edit.parse_episodes(args.episodes), out=args.out, in_place=args.in_place, progress=cb),
        "split": lambda cb: edit.split(args.dataset, val_fraction=args.val_fraction, out_train=args.out_train,
                                       out_val=args.out_val, seed=args.seed, progress=cb),
        "set-task": lambda cb: edit.set_task(
            args.dataset, _edit_tasks(args), out=args.out, progress=cb,
            episodes=edit.parse_episodes(args.episodes) if args.episodes else None),
        "remove-feature": lambda cb: edit.remove_features(args.dataset, args.features, out=args.out,
                                                          in_place=args.in_place, progress=cb),
    }
    if args.json:
        print(json.dumps(ops[args.op](None).to_dict()))
        return 0
    columns = (TextColumn(args.op), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=None)
        report = ops[args.op](lambda done, total: progress.update(task, completed=done, total=total))
    for name, path in report.outputs.items():
        console.print(f"{args.op}: {report.episodes[name]} episode(s), {report.frames[name]} frames in {path}"
                      + (f" ({name})" if name != "out" else ""), highlight=False)
    return 0


def _edit_tasks(args: argparse.Namespace) -> dict[int, str] | str:
    from ..datasets import edit

    if (args.task is None) == (args.from_file is None):
        raise TelecorderError("set-task: give the task text, or --from-file tasks.csv (not both)")
    if args.from_file is not None:
        if args.episodes:
            raise TelecorderError("set-task: --episodes goes with a task text; the file names its own episodes")
        return edit.read_task_file(args.from_file)
    return args.task


class _IntermixedParser(argparse.ArgumentParser):
    """Options may come between positionals (``set-task DS --episodes 0-4 "text"``): plain argparse
    gives an optional positional nothing once an option follows the first one."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inside:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_edit_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("edit", help="merge, split, delete episodes, relabel tasks, remove features",
                       description="Edit native datasets: each edit is atomic, runs under the dataset lock, "
                       "recomputes statistics and keeps the index consistent.",
                       epilog=EDIT_EXAMPLES, formatter_class=fmt)
    ops = p.add_subparsers(dest="op", metavar="OPERATION", parser_class=_IntermixedParser)
    ops.required = True

    def op(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        q = ops.add_parser(name, help=help_text, description=help_text, formatter_class=fmt,
                           epilog=f"example:\n  {example}\n")
        q.add_argument("--json", action="store_true", help="print what was done as one JSON object")
        q.set_defaults(func=run_edit)
        return q

    q = op("merge", "episodes of several datasets with the same features into a new one",
           "telecorder edit merge demos_mon/ demos_tue/ --out demos_all/")
    q.add_argument("datasets", nargs="+", type=Path, help="datasets to merge, in this order")
    q.add_argument("--out", type=Path, required=True, help="new folder for the merged dataset")

    q = op("delete-episodes", "leave episodes out (renumbering the rest)",
           "telecorder edit delete-episodes demos/ 3,7-9 --in-place")
    q.add_argument("dataset", type=Path)
    q.add_argument("episodes", help="episode numbers and ranges, e.g. 3,7-9")
    q.add_argument("--out", type=Path, help="new folder for the result")
    q.add_argument("--in-place", action="store_true", help="replace the dataset itself (atomically)")

    q = op("split", "whole episodes into a training and a validation dataset, deterministically",
           "telecorder edit split demos/ --val-fraction 0.1 --out-train demos_train/ --out-val demos_val/")
    q.add_argument("dataset", type=Path)
    q.add_argument("--val-fraction", type=float, required=True, help="share of episodes for validation (0-1)")
    q.add_argument("--out-train", type=Path, required=True)
    q.add_argument("--out-val", type=Path, required=True)
    q.add_argument("--seed", type=int, default=0, help="seed of the episode shuffle (default 0)")

    q = op("set-task", "relabel language instructions (task and language_instruction), in place by default",
           'telecorder edit set-task demos/ --episodes 0-4 "pick up the red cube"')
    q.add_argument("dataset", type=Path)
    q.add_argument("task", nargs="?", help="the new instruction")
    q.add_argument("--episodes", help="episodes to relabel, e.g. 0-4 (default: all)")
    q.add_argument("--from-file", type=Path, help="CSV of episodes,task rows (a header line is allowed)")
    q.add_argument("--out", type=Path, help="write the result to a new folder instead")

    q = op("remove-feature", "drop cameras or numeric features from every episode",
           "telecorder edit remove-feature demos/ observation.images.wrist --out demos_front/")
    q.add_argument("dataset", type=Path)
    q.add_argument("features", nargs="+", help="feature names (a bare camera name works too)")
    q.add_argument("--out", type=Path, help="new folder for the result")
    q.add_argument("--in-place", action="store_true", help="replace the dataset itself (atomically)")


def _glue_beam_options(argv: Sequence[str]) -> list[str]:
    """``--beam-options '--a=1 --b=2'`` as users write it: argparse would take the value, which
    starts with dashes, for an option of its own."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--beam-options" and i + 1 < len(args):
            out.append(f"--beam-options={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_beam_options(sys.argv[1:] if argv is None else argv))
    return _run(args.func, args)


def collect_main(argv: Sequence[str] | None = None) -> int:
    """The ``collect`` entry point: the same as ``telecorder collect``."""
    parser = argparse.ArgumentParser(
        prog="collect",
        description="Record episodes (same as 'telecorder collect').",
        epilog=COLLECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_collect_arguments(parser)
    return _run(run_collect, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
