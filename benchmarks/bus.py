"""Dynamixel bus benchmark: sync-read + sync-write cycle rate and leader->follower latency.

7 XL330 servos at 1 Mbps on our Protocol 2.0 emulator, through the real dynamixel_sdk.
The emulator runs in a separate process (``telecorder emulate``), as hardware would be
outside ours, and also in-process (what ``collect --emulate`` does) for comparison.

Also, in process: the SDK's own GroupSyncRead/GroupSyncWrite cycle on the stock
``PortHandler`` and on our :class:`BusPort` (is the emulator ever the bottleneck? a real
1 Mbps U2D2 manages a few hundred cycles a second), and the CPU a client burns while it
waits for a reply that does not come (the stock port polls in a busy loop).

    python benchmarks/bus.py               # 5 s per measurement
    python benchmarks/bus.py --busy 2      # beside two CPU-bound processes, as on a shared CI host
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from telecorder.collect.dynamixel.bus import BusPort, DynamixelBus
from telecorder.collect.dynamixel.control_table import ADDR, MODE_EXTENDED_POSITION
from telecorder.collect.dynamixel.emulator import BusEmulator

IDS = list(range(1, 8))


@contextmanager
def emulator_process(ids: list[int], hand: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "telecorder.cli", "emulate", "--ids", f"{ids[0]}-{ids[-1]}", "--hand", hand],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        path = proc.stdout.readline().strip()
        if not path.startswith("/dev/"):
            raise RuntimeError(f"emulator did not start: {path!r}")
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def emulator_in_process(ids: list[int], hand: str):
    from telecorder.collect.dynamixel.hand import HandMotion

    with BusEmulator(ids, hand=HandMotion.builtin(ids) if hand == "builtin" else None) as path:
        yield path


def cycle_rate(path: str, seconds: float) -> dict:
    """Back-to-back cycles of: sync read present position of all servos, sync write goals."""
    bus = DynamixelBus(path, IDS)
    bus.open()
    try:
        bus.minimize_return_delay()
        bus.set_operating_mode(MODE_EXTENDED_POSITION)
        bus.set_torque(True)
        goals = np.zeros(len(IDS))
        durations = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            pos = bus.read_state().position
            goals[:] = pos + 0.01
            bus.write_goal_positions(goals)
            durations.append(time.perf_counter() - t0)
        d = np.array(durations)
        return {"cycles": len(d), "rate_hz": round(len(d) / d.sum(), 1),
                "cycle_p50_ms": round(1000 * float(np.percentile(d, 50)), 3),
                "cycle_p99_ms": round(1000 * float(np.percentile(d, 99)), 3),
                "timeouts": bus.errors.timeouts}
    finally:
        bus.close()


def leader_follower_latency(leader_path: str, follower_path: str, seconds: float, hz: float = 100.0) -> dict:
    """At ``hz``: read the leader, write the follower; latency = from read start to write sent."""
    leader, follower = DynamixelBus(leader_path, IDS), DynamixelBus(follower_path, IDS)
    leader.open()
    follower.open()
    try:
        leader.minimize_return_delay()
        follower.minimize_return_delay()
        follower.set_operating_mode(MODE_EXTENDED_POSITION)
        follower.set_torque(True)
        lat = []
        period = 1.0 / hz
        next_t = time.perf_counter()
        end = next_t + seconds
        while next_t < end:
            while time.perf_counter() < next_t:
                time.sleep(max(0.0, next_t - time.perf_counter() - 0.0005))
            t0 = time.perf_counter()
            follower.write_goal_positions(leader.read_state().position)
            lat.append(time.perf_counter() - t0)
            next_t += period
        a = np.array(lat)
        return {"rate_hz": hz, "samples": len(a), "latency_p50_ms": round(1000 * float(np.percentile(a, 50)), 3),
                "latency_p99_ms": round(1000 * float(np.percentile(a, 99)), 3),
                "overruns": int(np.sum(a > period))}
    finally:
        leader.close()
        follower.close()


def sdk_group_cycle_rate(path: str, seconds: float, port_class) -> dict:
    """The SDK's GroupSyncRead of present positions + GroupSyncWrite of goals, back to back."""
    import dynamixel_sdk as sdk

    port, ph = port_class(path), sdk.PacketHandler(2.0)
    port.openPort()
    try:
        for i in IDS:  # as drivers do (the factory's 500 us per reply would be most of each cycle)
            ph.write1ByteTxRx(port, i, ADDR.RETURN_DELAY_TIME, 0)
        reader = sdk.GroupSyncRead(port, ph, ADDR.PRESENT_POSITION, 4)
        writer = sdk.GroupSyncWrite(port, ph, ADDR.GOAL_POSITION, 4)
        for i in IDS:
            reader.addParam(i)
            writer.addParam(i, list((2048).to_bytes(4, "little")))
        cycles = failures = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            failures += reader.txRxPacket() != sdk.COMM_SUCCESS
            writer.txPacket()
            cycles += 1
        elapsed = time.perf_counter() - start
        return {"cycles": cycles, "rate_hz": round(cycles / elapsed, 1), "failed_reads": failures}
    finally:
        port.closePort()


def wait_cpu(path: str, port_class, waits: int = 20) -> dict:
    """CPU time per second of waiting for replies that never come (pings to an absent ID)."""
    import dynamixel_sdk as sdk

    port, ph = port_class(path), sdk.PacketHandler(2.0)
    port.openPort()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(waits):
            ph.ping(port, 99)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"waited_s": round(wall, 3), "cpu_per_wait_s": round(cpu / wall, 2)}
    finally:
        port.closePort()


@contextmanager
def busy_processes(n: int):
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3, help="medians over this many runs")
    ap.add_argument("--json", type=Path, default=None,
                    help="default: benchmarks/results/bus.json (bus-busyN.json with --busy N)")
    ap.add_argument("--busy", type=int, default=0, help="run beside this many CPU-bound processes")
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = Path("benchmarks/results") / (f"bus-busy{args.busy}.json" if args.busy else "bus.json")
    console = Console()
    with busy_processes(args.busy):
        results = measure(args)
    title = "Dynamixel bus: 7 x XL330 at 1 Mbps, dynamixel_sdk on our emulator (medians)"
    table = Table(title=title + (f", beside {args.busy} CPU-bound processes" if args.busy else ""))
    table.add_column("measurement")
    table.add_column("result")
    for k, v in results.items():
        table.add_row(k, ", ".join(f"{a}={b}" for a, b in v.items()))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.json} (each row: the median run of {args.repeats})")
    return 0


def measure(args: argparse.Namespace) -> dict[str, dict]:
    import dynamixel_sdk as sdk

    results: dict[str, dict] = {}
    for label, factory in (("separate process", emulator_process), ("in process", emulator_in_process)):
        runs = []
        for _ in range(args.repeats):
            with factory(IDS, "none") as path:
                runs.append(cycle_rate(path, args.seconds))
        best = sorted(runs, key=lambda r: r["rate_hz"])[len(runs) // 2]
        results[f"cycle ({label})"] = best
        lat = []
        for _ in range(args.repeats):
            with factory(IDS, "builtin") as lp, factory(IDS, "none") as fp:
                lat.append(leader_follower_latency(lp, fp, args.seconds))
        results[f"leader->follower @100 Hz ({label})"] = sorted(lat, key=lambda r: r["latency_p50_ms"])[len(lat) // 2]
    for name, port_class in (("stock PortHandler", sdk.PortHandler), ("BusPort", BusPort)):
        runs = []
        for _ in range(args.repeats):
            with emulator_in_process(IDS, "none") as path:
                runs.append(sdk_group_cycle_rate(path, args.seconds, port_class))
        results[f"SDK group sync read+write, {name} (in process)"] = sorted(runs, key=lambda r: r["rate_hz"])[
            len(runs) // 2]
        with emulator_in_process(IDS, "none") as path:
            results[f"CPU while waiting for a reply, {name}"] = wait_cpu(path, port_class)
    return results


if __name__ == "__main__":
    sys.exit(main())
