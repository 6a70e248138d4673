"""What ``telecorder info`` and ``telecorder doctor`` print: tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .datasets.dataset import Dataset
from .datasets.doctor import DoctorReport, check_dataset, repair_dataset


def dataset_summary(ds: Dataset) -> dict[str, Any]:
    durations = [float(r.get("duration_s") or 0.0) for r in ds.records]
    outcomes = [r.get("success") for r in ds.records if r.get("success") is not None]
    tasks = Counter(str(r.get("task") or "") for r in ds.records)
    return {
        "path": str(ds.root),
        "format_version": ds.info.format_version,
        "robot_type": ds.info.robot_type,
        "fps": ds.info.fps,
        "episodes": len(ds),
        "frames": ds.num_frames,
        "duration_s": round(sum(durations), 3),
        "success_rate": (sum(bool(s) for s in outcomes) / len(outcomes)) if outcomes else None,
        "tasks": dict(tasks),
        "size_bytes": ds.size_bytes(),
        "image_encoding": ds.info.image_encoding,
        "features": {name: f.to_dict() for name, f in ds.info.features.items()},
    }


def print_info(console: Console, path: Path, *, per_episode: bool = False, as_json: bool = False) -> None:
    ds = Dataset.open(path)
    s = dataset_summary(ds)
    if as_json:
        if per_episode:
            s["episode_list"] = ds.records
        console.print_json(json.dumps(s))
        return
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.0f}%"
    console.print(f"[bold]{s['path']}[/]  telecorder dataset v{s['format_version']}")
    console.print(
        f"robot {s['robot_type']}, {s['fps']:g} Hz; {s['episodes']} episodes, {s['frames']} frames, "
        f"{_duration(s['duration_s'])}; success {rate}; {_bytes(s['size_bytes'])} on disk"
    )
    table = Table(title="features", title_justify="left")
    for col in ("name", "dtype", "shape", "names / unit"):
        table.add_column(col)
    for name, f in ds.info.features.items():
        detail = " ".join(f.names) if f.names else ""
        if f.is_image:
            detail = f"{ds.info.image_encoding}" + (f" q{ds.info.jpeg_quality}" if ds.info.image_encoding == "jpeg" else "")
        if f.unit:
            detail = f"{detail}\n[dim]{f.unit}[/]" if detail else f"[dim]{f.unit}[/]"
        table.add_row(name, f.dtype, "x".join(map(str, f.shape)), detail)
    console.print(table)
    tasks = Table(title="tasks", title_justify="left")
    tasks.add_column("episodes", justify="right")
    tasks.add_column("task")
    for task, n in sorted(s["tasks"].items(), key=lambda kv: -kv[1]):
        tasks.add_row(str(n), task or "[dim](none)[/]")
    console.print(tasks)
    if per_episode:
        eps = Table(title="episodes", title_justify="left")
        for col in ("#", "steps", "duration", "success", "late", "start"):
            eps.add_column(col)
        for r in ds.records:
            eps.add_row(
                str(r["episode_index"]),
                str(r.get("length")),
                f"{float(r.get('duration_s') or 0):.1f} s",
                {True: "yes", False: "no"}.get(r.get("success"), "-"),
                str(r.get("late_ticks", "-")),
                str(r.get("start_time") or ""),
            )
        console.print(eps)


def print_doctor(
    console: Console, path: Path, *, repair: bool = False, frames: str = "ends", as_json: bool = False, strict: bool = False
) -> int:
    repairs: list[str] = []
    if repair:
        repairs = repair_dataset(path)
    report = check_dataset(path, decode_frames=frames)
    report.repairs = repairs
    failed = not report.ok or (strict and report.all_warnings)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return 1 if failed else 0
    for line in repairs:
        console.print(f"[cyan]repair:[/] {line}")
    _print_sync_table(console, report)
    for e in report.all_errors:
        console.print(f"[red]error:[/] {e}", highlight=False)
    for w in report.all_warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    verdict = "[green]OK[/]" if report.ok else f"[red]{len(report.all_errors)} error(s)[/]"
    console.print(
        f"{path}: {len(report.episodes)} episodes checked, {verdict}, {len(report.all_warnings)} warning(s)"
        + ("" if report.ok or repair else "; 'telecorder doctor --repair' mends what can be mended")
    )
    return 1 if failed else 0


def _print_sync_table(console: Console, report: DoctorReport) -> None:
    info = report.info
    if info is None or not report.episodes:
        return
    table = Table(title=f"sync report (target {info.fps:g} Hz; frame age = tick time - capture time)", title_justify="left")
    for col in ("ep", "steps", "rate Hz", "late", "missed"):
        table.add_column(col, justify="right")
    for cam in info.cameras:
        table.add_column(f"{cam} age p50/p99/max ms", justify="right")
        table.add_column(f"{cam} rep/drop", justify="right")
    table.add_column("status")
    for ep in report.episodes:
        row = [str(ep.index), str(ep.steps)]
        if ep.sync is None:
            row += ["-"] * (3 + 2 * len(info.cameras))
        else:
            s = ep.sync
            row += [f"{s.achieved_fps:.1f}", str(s.late_ticks), str(s.missed_ticks)]
            for cam in info.cameras:
                c = s.cameras.get(cam)
                if c is None:
                    row += ["-", "-"]
                else:
                    row += [f"{1000 * c.age_p50:.0f}/{1000 * c.age_p99:.0f}/{1000 * c.age_max:.0f}", f"{c.repeated}/{c.skipped}"]
        row.append("[red]error[/]" if ep.errors else "[yellow]warn[/]" if ep.warnings else "[green]ok[/]")
        table.add_row(*row)
    console.print(table)


def _duration(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)} min {s:.0f} s" if m else f"{s:.1f} s"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
