"""Recording commands: ``collect`` (also the ``collect`` entry point), ``calibrate``, ``emulate`` and
``vr-record``. Device modules are imported inside the handlers: a parser must not load them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from ..errors import TelecorderError
from .arg_types import _positive_float, _positive_int, _randomize, _size, _usb_latency_ms, parse_ids

# The key paragraph at the end is telecorder.collect.key_bindings.help_text(), pasted (importing
# it here would load every device module for any command); tests/test_live_view_x11.py fails when
# the two disagree.
COLLECT_EXAMPLES = """\
examples:
  # 5 scripted pick-and-lift demos on the built-in MuJoCo arm, 2 rendered cameras
  collect --device scripted --robot sim --episodes 5 --episode-time 10 --out demos/

  # a multi-task, language-conditioned dataset: three cubes and a bin, 18 tasks with paraphrases,
  # the least-recorded task next, as fast as the simulation runs, every object's pose recorded
  collect --device scripted --robot sim --scene cubes --tasks cubes --task-order balanced \\
      --episodes 180 --no-realtime --env-state --camera-size 96x96 --out multitask/

  # a person records your own instructions (one per line) in the cubes scene; k skips one
  collect --device keyboard --robot sim --scene cubes --tasks my_tasks.txt --episodes 20 --out kb_tasks/

  # a real arm: instructions separated by ';', the operator saves (success) or re-records each one
  collect --device leader_arm --robot dynamixel --leader-port /dev/ttyUSB0 --follower-port /dev/ttyUSB1 \\
      --tasks "put the red cube in the bin; put the blue cube on the green cube" --out real_tasks/

  # two leader arms (ALOHA style) drive two followers; each arm calibrated with 'calibrate --arm left_leader' ...
  collect --device leader_arm --robot dynamixel --leader-port left=/dev/ttyUSB0,right=/dev/ttyUSB1 \\
      --follower-port left=/dev/ttyUSB2,right=/dev/ttyUSB3 --out bimanual/

  # no hardware: two emulated leaders, a scripted two-handed operator, the sim's two-arm handover scene
  collect --device leader_arm --emulate --robot sim --scene bimanual --episodes 5 --episode-time 12 --out handover/

  # add a USB camera and a looping video file as extra cameras, record at 50 Hz
  collect --robot sim --device scripted --fps 50 --out demos/ \\
      --camera side=/dev/video0,size=640x480,fps=30 --camera top=clip.mp4,loop

  # a busy robot PC: the loop on core 3 (kept free with isolcpus=3) at real-time priority (the default)
  collect --device leader_arm --robot dynamixel --leader-port /dev/ttyUSB0 --follower-port /dev/ttyUSB1 \\
      --cpu 3 --out demos/

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
  every device: n or Right save, r or Left re-record, q or Esc save & quit, i take over / hand back, k skip instruction
  except --device keyboard, whose keys are held in the live window (it needs one):
    move     w/s forward/back, a/d left/right, r/f up/down
    turn     Up/Down pitch down/up, Right/Left roll right/left, q/e yaw left/right
    gripper  Space/c open/close
    session  Enter save, Backspace re-record, Esc save & quit, i take over / hand back, k skip instruction
    arms     Tab switches the arm it drives (two-arm robots: --scene bimanual)
  --device gamepad (and the keys of every device):
    move     left stick forward/back, left/right; right stick up/down; LB/RB down/up
    turn     Y toggles rotation mode: left stick pitch/roll, right stick yaw
    gripper  LT/RT open/close
    session  A save, B re-record, Start save & quit, X take over / hand back, Back skip instruction
    arms     RS (right-stick click) switches the arm it drives (two-arm robots)
Ctrl-C discards the episode in progress; every episode saved before stays intact.
"""


EMULATE_EXAMPLES = """\
examples:
  telecorder emulate --ids 1-7 --model xl330-m288 --link leader.tty   # serve until Ctrl-C
  telecorder emulate --ids 1-6 --hand demo --drop-rate 0.05            # the sim-arm demonstration, lossy bus
  telecorder emulate --ids 1-6 --hand my_motion.csv                    # columns: t,1,2,... (radians)
  telecorder emulate --ids 1-7 --baudrate 57600 --usb-latency-ms 16    # a factory-fresh bus and U2D2
"""


# 'calibrate --arm': one arm, or either arm of a pair (the file 'collect' reads for left=/right= ports).
CALIBRATION_ARMS = ("leader", "follower", "left_leader", "right_leader", "left_follower", "right_follower")

CALIBRATE_EXAMPLES = """\
examples:
  telecorder calibrate --arm leader --port /dev/ttyUSB0 --ids 1-6        # guided, in the terminal
  telecorder calibrate --arm follower --port /dev/ttyUSB1 --ids 1-6 --signs 1,-1,1,1,1
  telecorder calibrate --arm leader --port /dev/ttyUSB0 --ids 1-6 --pose-file pose.json   # scripted
  telecorder calibrate --arm left_leader --port /dev/ttyUSB0 --ids 1-6   # one file per arm of a pair:
  telecorder calibrate --arm right_leader --port /dev/ttyUSB1 --ids 1-6  #   left_leader.json, right_leader.json
"""


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
    p.add_argument("--episodes", type=_positive_int, default=None,
                   help="episodes to save (default 10, or the sum of a task file's counts)")
    p.add_argument("--episode-time", type=_positive_float, default=20.0, help="time limit per episode in s (default 20)")
    p.add_argument("--reset-time", type=float, default=2.0, help="pause between episodes in s (default 2)")
    p.add_argument("--task", default=None, help="task / language instruction stored with each episode")
    t = p.add_argument_group("task lists (several instructions in one session)")
    t.add_argument("--tasks", default=None, metavar="SPEC",
                   help="the instructions to record: a task suite (cubes), a file (.txt one instruction per line; "
                        ".json/.yaml a list of {task_id, paraphrases, count}), or instructions separated by ';'. "
                        "The scripted expert (and --intervene expert) takes only the suite's tasks")
    t.add_argument("--task-order", choices=["cycle", "random", "balanced"], default="cycle",
                   help="which instruction comes next: in list order (default), drawn at random (seeded), or "
                        "balanced: the task with the fewest successful episodes")
    t.add_argument("--scene", choices=["pick", "cubes", "bimanual"], default=None,
                   help="sim only: the built-in scene: pick (one cube, the default), cubes (red, green, blue "
                        "cubes and a bin, the 'cubes' task suite) or bimanual (two arms facing each other and a "
                        "cube to hand from the left gripper to the right, the 'bimanual' suite); default: the "
                        "scene of the --tasks suite")
    t.add_argument("--randomize", type=_randomize, default=frozenset(), metavar="WHAT[,WHAT]",
                   help="sim only: vary at every reset (seeded): lighting, colors (table, distractors), camera "
                        "(small pose jitter); the cube colours that instructions name stay recognizable")
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
    p.add_argument("--no-rt", action="store_true",
                   help="record at normal priority: no real-time scheduling, memory locking or warning about them "
                        "(by default the recorder's threads run at real-time priority while an episode records, "
                        "where the OS permits it; see docs/collect.md)")
    p.add_argument("--cpu", type=int, default=None, metavar="N",
                   help="run the control loop on CPU N (a core kept free of other work, e.g. with isolcpus=N)")
    p.add_argument("--env-state", action="store_true",
                   help="sim only: also record the task cube's world pose as observation.environment_state "
                        "(privileged simulator state)")
    v = p.add_argument_group("End-effector devices (--device vr|gamepad|keyboard, with --robot sim, or --robot "
                             "dynamixel and --robot-model ARM.xml for IK)")
    v.add_argument("--pose-stream", type=Path, help="vr: replay a controller pose stream (JSON lines) instead of a headset")
    v.add_argument("--vr-hand", choices=["left", "right"], default="right",
                   help="vr: the controller that drives a one-arm robot (default right); on two arms "
                        "(--scene bimanual) each hand drives its own arm")
    v.add_argument("--vr-scale", type=_positive_float, default=1.0, help="vr: controller-to-robot motion scale")
    v.add_argument("--vr-axes", default="openxr_to_robot", help="vr: axis preset (openxr_to_robot, identity)")
    g = p.add_argument_group("Dynamixel arms (--device leader_arm|kinesthetic, --robot dynamixel)")
    g.add_argument("--leader-port", metavar="PORT|left=PORT,right=PORT",
                   help="serial port of the leader arm, e.g. /dev/ttyUSB0; two leader arms: one per arm, "
                        "left=/dev/ttyUSB0,right=/dev/ttyUSB1")
    g.add_argument("--follower-port", metavar="PORT|left=PORT,right=PORT",
                   help="serial port of the follower arm (--robot dynamixel, or the limp arm of kinesthetic); "
                        "two arms: left=PORT,right=PORT")
    g.add_argument("--leader-calibration", type=Path, metavar="FILE|left=FILE,right=FILE",
                   help="leader calibration JSON (default: config dir, leader.json; two arms: left_leader.json "
                        "and right_leader.json, as 'telecorder calibrate --arm left_leader' saves them)")
    g.add_argument("--follower-calibration", type=Path, metavar="FILE|left=FILE,right=FILE",
                   help="follower calibration JSON (default: config dir, follower.json; two arms: "
                        "left_follower.json and right_follower.json)")
    g.add_argument("--bimanual", action="store_true",
                   help="two arms, left and right (ALOHA style), each on its own bus: two leaders driving two "
                        "followers, or two limp arms for kinesthetic; implied by --scene bimanual and by ports "
                        "given per arm. The action is both arms' joints, left then right")
    g.add_argument("--baudrate", type=int, default=1_000_000, help="bus baud rate (default 1000000)")
    g.add_argument("--emulate", action="store_true",
                   help="use the built-in emulated arm (Protocol 2.0 bus emulator) for any port not given; with "
                        "--scene bimanual two emulated leaders, moved by a scripted two-handed operator")
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
    from ..collect.realtime import RealtimeRequest
    from ..collect.session import RecordingSession, SessionConfig

    if args.cpu is not None:
        RealtimeRequest(cpu=args.cpu)  # a core this process may not use fails before any device opens
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
    scene, tasks = _task_list(args, console)
    task = args.task
    if task is None:
        task = ("pick up the cube" if args.device in ("scripted", "policy") and args.robot_model is None
                and scene in (None, "pick") and tasks is None else "")
    episodes = args.episodes or (tasks.target if tasks is not None and tasks.target else 10)
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
            scene=scene,
            randomize=args.randomize,
            tasks=tasks,
            bimanual=args.bimanual,
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
            episodes=episodes,
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
            tasks=tasks,
            realtime_priority=not args.no_rt,
            cpu=args.cpu,
        ),
        console=console,
    )
    session.run()
    return 0


def _task_list(args: argparse.Namespace, console: Console) -> tuple[str | None, object]:
    """The scene and the task list a collect command names: --tasks SPEC, or a scene's own suite."""
    from ..collect.task_list import TaskList, parse_task_spec, suite_for_scene

    sim = args.robot == "sim"
    scene = args.scene if sim else None
    if args.scene is not None and not sim:
        raise TelecorderError(f"--scene {args.scene} sets up the simulated scene: it needs --robot sim (a real "
                              "scene is whatever is on the table)")
    if args.tasks is None:
        own = suite_for_scene(scene) if scene not in (None, "pick") else None
        if own is None or args.task is not None:
            return scene, None
        # A scene with a task suite and no instruction given: the whole suite.
        console.print(f"recording the {own.name!r} task suite (--tasks {own.name}); --task or --tasks choose "
                      "other instructions", highlight=False)
        return scene, TaskList.from_suite(own, args.task_order, args.seed)
    if args.task is not None:
        raise TelecorderError("--task and --tasks both name the instructions; give --task TEXT for one, or "
                              "--tasks SPEC for a list")
    tasks = parse_task_spec(args.tasks, scene=scene if sim else None, order=args.task_order, seed=args.seed)
    if sim and scene is None and args.robot_model is None and tasks.suite is not None:
        scene = tasks.suite.scene  # the instructions name a suite's tasks: record in its scene
    return scene, tasks


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


def add_collect_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("collect", help="record episodes from a teleop device", description="Record episodes: "
                       "follower state, commanded actions and every camera, each sample with its capture time.",
                       epilog=COLLECT_EXAMPLES, formatter_class=fmt)
    add_collect_arguments(p)
    p.set_defaults(func=run_collect)


def add_emulate_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
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


def add_vr_record_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("vr-record", help="record raw VR controller poses and buttons from an OpenXR runtime",
                       description="Save timestamped controller poses, squeeze, trigger and buttons as JSON lines "
                       "(the --pose-stream format of 'collect --device vr').",
                       epilog="examples:\n  telecorder vr-record session.jsonl --seconds 60\n"
                       "  collect --device vr --pose-stream session.jsonl --robot sim --out demos/\n",
                       formatter_class=fmt)
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    p.set_defaults(func=run_vr_record)


def add_calibrate_parser(sub: argparse._SubParsersAction, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("calibrate", help="calibrate a leader or follower Dynamixel arm",
                       description="Torque off, then guided steps (known pose, range sweep, gripper open/closed); "
                       "the result is saved as JSON. --pose-file makes it non-interactive.",
                       epilog=CALIBRATE_EXAMPLES, formatter_class=fmt)
    p.add_argument("--arm", choices=list(CALIBRATION_ARMS), required=True,
                   help="which arm: leader or follower; of a pair (ALOHA style): left_leader, right_leader, "
                        "left_follower, right_follower, each saved to its own file")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--ids", type=parse_ids, default=parse_ids("1-6"), help="servo ids, gripper last (default 1-6)")
    p.add_argument("--baudrate", type=int, default=1_000_000)
    p.add_argument("--signs", help="comma-separated +1/-1 per arm joint (default all +1)")
    p.add_argument("--no-gripper", action="store_true", help="the last id is an arm joint, not a gripper")
    p.add_argument("--pose-file", type=Path, help="JSON: known_pose, names, signs, gripper open/closed, range")
    p.add_argument("--out", type=Path, help="where to save (default: ~/.config/telecorder/calibration/ARM.json, "
                   "where 'collect' looks for it)")
    p.set_defaults(func=run_calibrate)
