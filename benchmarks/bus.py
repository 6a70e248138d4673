"""Dynamixel bus benchmark: the control-loop cycle rate against the physical limit of the bus.

A cycle is what a teleop loop does on a 7-servo arm: a sync read of present current,
velocity and position of every servo, then a sync write of goal positions, through our
driver (the real ``dynamixel_sdk``) on the emulator, which runs in a separate process
(``telecorder emulate``) as hardware would be outside ours, and keeps time like the wire
(see ``telecorder.collect.dynamixel.wire``). Return Delay Time is 0, as the driver sets it.

The physical limit is the cycle a host with no overhead at all would get from the same
bus, computed here from packet sizes and settings alone: the sync write and the sync read
go out back to back as the previous reply reaches the host; every byte takes 10 bits at
the baud rate; the replies follow each other; and the adapter passes bytes on when its
USB packet is full (510 bytes on a U2D2's high-speed FTDI chip, 62 on a full-speed one)
or when its latency timer, counting from the last packet it sent, expires. The limit is
1 / (time until the last byte reaches the host).

Settings: 57600, 1 M and 4 M baud, the latency timer at 16 ms (factory) and 1 ms (tuned),
on a U2D2 (512-byte USB packets) and, at the rates a full-speed chip reaches, on an
FT232R-style adapter (64-byte packets). Then, at the defaults (1 Mbps, 1 ms): the cycle
with the emulator in our process (what ``collect --emulate`` does), leader->follower latency
at 100 Hz, the SDK's own GroupSyncRead/Write on the stock ``PortHandler`` and on our
:class:`BusPort`, and the CPU a client burns while it waits for a reply that never comes.

    python benchmarks/bus.py               # 3 s per measurement, medians of 3 runs
    python benchmarks/bus.py --busy 2      # beside two CPU-bound processes, as on a shared CI host
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from telecorder.collect.dynamixel import protocol as p
from telecorder.collect.dynamixel.bus import STATE_ADDR, STATE_LEN, BusPort, DynamixelBus
from telecorder.collect.dynamixel.control_table import ADDR, MODE_EXTENDED_POSITION
from telecorder.collect.dynamixel.emulator import BusEmulator

IDS = list(range(1, 8))
BAUDRATES = (57_600, 1_000_000, 4_000_000)
LATENCIES_MS = (16.0, 1.0)
U2D2, FULL_SPEED = 512, 64  # USB packet sizes of the adapters
FULL_SPEED_MAX_BAUD = 3_000_000  # FT232R
TARGET = 0.9


# -- the physical limit ------------------------------------------------------------------

def cycle_packets(n_servos: int = len(IDS)) -> tuple[int, int, list[int]]:
    """Bytes of the sync write, of the sync read and of each status packet of one cycle."""
    ids = list(range(1, n_servos + 1))
    write = p.build_packet(p.BROADCAST_ID, p.SYNC_WRITE, ADDR.GOAL_POSITION.to_bytes(2, "little")
                           + (4).to_bytes(2, "little") + b"".join(bytes([i]) + (2048).to_bytes(4, "little")
                                                                 for i in ids))
    read = p.build_packet(p.BROADCAST_ID, p.SYNC_READ, STATE_ADDR.to_bytes(2, "little")
                          + STATE_LEN.to_bytes(2, "little") + bytes(ids))
    status = p.build_status(1, 0, bytes(STATE_LEN))
    return len(write), len(read), [len(status)] * n_servos


def physical_cycle_s(baudrate: int, latency_ms: float, packet_bytes: int, *, return_delay_s: float = 0.0,
                     n_servos: int = len(IDS)) -> float:
    """The shortest cycle this bus allows (see the module docstring); t = 0 is the previous reply's arrival."""
    write, read, replies = cycle_packets(n_servos)
    bit = 10.0 / baudrate  # seconds per byte
    t = (write + read) * bit
    arrivals = []  # when each reply byte reaches the adapter
    for n in replies:
        t += return_delay_s
        for _ in range(n):
            t += bit
            arrivals.append(t)
    if latency_ms == 0:
        return arrivals[-1]
    period, payload = latency_ms / 1000.0, packet_bytes - 2
    sent_at, i = 0.0, 0  # the adapter's last USB packet (its timer counts from there), next byte to send
    while i < len(arrivals):
        tick = sent_at + max(1, math.ceil((arrivals[i] - sent_at) / period - 1e-9)) * period
        full = i + payload - 1
        if full < len(arrivals) and arrivals[full] <= tick:
            sent_at, i = arrivals[full], full + 1
        else:
            sent_at, i = tick, bisect.bisect_right(arrivals, tick + 1e-12)
    return sent_at


# -- measurements --------------------------------------------------------------------------

@contextmanager
def emulator_process(ids: list[int], hand: str, baudrate: int = 1_000_000, latency_ms: float = 1.0,
                     packet_bytes: int = U2D2):
    proc = subprocess.Popen(
        [sys.executable, "-m", "telecorder.cli", "emulate", "--ids", f"{ids[0]}-{ids[-1]}", "--hand", hand,
         "--baudrate", str(baudrate), "--usb-latency-ms", f"{latency_ms:g}", "--usb-packet-bytes", str(packet_bytes)],
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
def emulator_in_process(ids: list[int], hand: str, baudrate: int = 1_000_000, latency_ms: float = 1.0,
                        packet_bytes: int = U2D2):
    from telecorder.collect.dynamixel.hand import HandMotion

    emu = BusEmulator(ids, hand=HandMotion.builtin(ids) if hand == "builtin" else None, baudrate=baudrate,
                      usb_latency_ms=latency_ms, usb_packet_bytes=packet_bytes)
    with emu as path:
        yield path


def cycle_rate(path: str, seconds: float, baudrate: int = 1_000_000, latency_ms: float = 1.0) -> dict:
    """Back-to-back cycles of: sync read of current/velocity/position of all servos, sync write of goals."""
    bus = DynamixelBus(path, IDS, baudrate=baudrate, latency_timer_ms=max(latency_ms, 1.0))
    bus.open()
    try:
        bus.minimize_return_delay()
        bus.set_operating_mode(MODE_EXTENDED_POSITION)
        bus.set_torque(True)
        goals = np.zeros(len(IDS))

        def cycle() -> None:
            goals[:] = bus.read_state(velocity=True, current=True).position + 0.01
            bus.write_goal_positions(goals)

        for _ in range(3):  # settle into step with the adapter's timer, as a running loop is
            cycle()
        durations = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            cycle()
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


def median_run(runs: list[dict], key: str) -> dict:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def settings() -> list[tuple[str, int, int, float]]:
    out = []
    for adapter, packet in (("U2D2", U2D2), ("full-speed FTDI", FULL_SPEED)):
        for baud in BAUDRATES:
            if packet == FULL_SPEED and baud > FULL_SPEED_MAX_BAUD:
                continue
            for latency in LATENCIES_MS:
                out.append((adapter, packet, baud, latency))
    return out


def measure_limits(args: argparse.Namespace) -> list[dict]:
    rows = []
    for adapter, packet, baud, latency in settings():
        runs = []
        for _ in range(args.repeats):
            with emulator_process(IDS, "none", baud, latency, packet) as path:
                runs.append(cycle_rate(path, args.seconds, baud, latency))
        run = median_run(runs, "rate_hz")
        limit = 1.0 / physical_cycle_s(baud, latency, packet)
        rows.append({"adapter": adapter, "usb_packet_bytes": packet, "baudrate": baud, "latency_timer_ms": latency,
                     "rate_hz": run["rate_hz"], "limit_hz": round(limit, 1),
                     "ratio": round(run["rate_hz"] / limit, 3), "cycle_p50_ms": run["cycle_p50_ms"],
                     "cycle_p99_ms": run["cycle_p99_ms"], "timeouts": run["timeouts"]})
    return rows


def measure_extras(args: argparse.Namespace) -> dict[str, dict]:
    import dynamixel_sdk as sdk

    results: dict[str, dict] = {}
    runs = []
    for _ in range(args.repeats):
        with emulator_in_process(IDS, "none") as path:
            runs.append(cycle_rate(path, args.seconds))
    results["cycle, emulator in process (1 Mbps, 1 ms)"] = median_run(runs, "rate_hz")
    for label, factory in (("separate process", emulator_process), ("in process", emulator_in_process)):
        lat = []
        for _ in range(args.repeats):
            with factory(IDS, "builtin") as lp, factory(IDS, "none") as fp:
                lat.append(leader_follower_latency(lp, fp, args.seconds))
        results[f"leader->follower @100 Hz ({label})"] = median_run(lat, "latency_p50_ms")
    for name, port_class in (("stock PortHandler", sdk.PortHandler), ("BusPort", BusPort)):
        runs = []
        for _ in range(args.repeats):
            with emulator_in_process(IDS, "none") as path:
                runs.append(sdk_group_cycle_rate(path, args.seconds, port_class))
        results[f"SDK group sync read+write, {name} (in process)"] = median_run(runs, "rate_hz")
        with emulator_in_process(IDS, "none") as path:
            results[f"CPU while waiting for a reply, {name}"] = wait_cpu(path, port_class)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    ap.add_argument("--repeats", type=int, default=3, help="medians over this many runs")
    ap.add_argument("--json", type=Path, default=None,
                    help="default: benchmarks/results/bus.json (bus-busyN.json with --busy N)")
    ap.add_argument("--busy", type=int, default=0, help="run beside this many CPU-bound processes")
    ap.add_argument("--limits-only", action="store_true", help="only the cycle rates against the physical limit")
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = Path("benchmarks/results") / (f"bus-busy{args.busy}.json" if args.busy else "bus.json")
    console = Console()
    with busy_processes(args.busy):
        rows = measure_limits(args)
        extras = {} if args.limits_only else measure_extras(args)
    beside = f", beside {args.busy} CPU-bound processes" if args.busy else ""
    table = Table(title=f"7 x XL330, sync read (pos/vel/cur) + sync write, dynamixel_sdk on the emulator{beside}")
    for col in ("adapter", "baud", "latency timer", "rate Hz", "limit Hz", "ratio", "p50 / p99 ms", "timeouts"):
        table.add_column(col, justify="right")
    for r in rows:
        ok = r["ratio"] >= TARGET
        table.add_row(r["adapter"], str(r["baudrate"]), f"{r['latency_timer_ms']:g} ms", f"{r['rate_hz']:.1f}",
                      f"{r['limit_hz']:.1f}", f"[{'green' if ok else 'red'}]{r['ratio']:.0%}[/]",
                      f"{r['cycle_p50_ms']:.2f} / {r['cycle_p99_ms']:.2f}", str(r["timeouts"]))
    console.print(table)
    if extras:
        other = Table(title=f"At the defaults (1 Mbps, 1 ms latency timer){beside}")
        other.add_column("measurement")
        other.add_column("result")
        for k, v in extras.items():
            other.add_row(k, ", ".join(f"{a}={b}" for a, b in v.items()))
        console.print(other)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cycle_vs_physical_limit": rows, **extras}, indent=2) + "\n")
    console.print(f"wrote {args.json} (each row: the median run of {args.repeats}); target: >= {TARGET:.0%} "
                  "of the physical limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
