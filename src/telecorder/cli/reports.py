"""What ``telecorder info`` and ``telecorder doctor`` print: tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..datasets.dataset import Dataset
from ..datasets.doctor import DoctorReport, check_dataset, repair_dataset


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
        "per_task": per_task(ds.records, list(ds.info.extra.get("tasks") or {})),
        "task_suite": ds.info.extra.get("task_suite"),
        "size_bytes": ds.size_bytes(),
        "image_encoding": ds.info.image_encoding,
        "features": {name: f.to_dict() for name, f in ds.info.features.items()},
    }


def per_task(records: list[dict[str, Any]], order: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Episodes and success per task: by ``task_id`` where the index has one (a task list's episodes,
    each instruction a paraphrase of it), else by the instruction text. Tasks come in ``order`` (the
    suite's, from info.json), then the most recorded first."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        text = str(r.get("task") or "")
        task_id = r.get("task_id") or ""
        key = str(task_id) if task_id else text
        row = out.setdefault(key, {"task_id": str(task_id), "family": r.get("task_family") or "", "episodes": 0,
                                   "judged": 0, "successes": 0, "instructions": {}})
        row["episodes"] += 1
        row["instructions"][text] = row["instructions"].get(text, 0) + 1
        if r.get("success") is not None:
            row["judged"] += 1
            row["successes"] += int(bool(r.get("success")))
    for row in out.values():
        # Success only where something judged it (a simulator); a real robot's episodes say nothing.
        row["success_rate"] = row["successes"] / row["judged"] if row["judged"] else None
    rank = {k: i for i, k in enumerate(order or [])}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(rank)), -kv[1]["episodes"], kv[0])))


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
    for col in ("name", "dtype", "shape"):
        table.add_column(col, no_wrap=True)
    table.add_column("names / unit", overflow="fold")
    for name, f in ds.info.features.items():
        detail = " ".join(f.names) if f.names else ""
        if f.is_image:
            detail = f"{ds.info.image_encoding}" + (f" q{ds.info.jpeg_quality}" if ds.info.image_encoding == "jpeg" else "")
        if f.unit:
            detail = f"{detail}\n[dim]{f.unit}[/]" if detail else f"[dim]{f.unit}[/]"
        table.add_row(name, f.dtype, "x".join(map(str, f.shape)), detail)
    console.print(table)
    _print_tasks(console, s)
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


def _print_tasks(console: Console, s: dict[str, Any]) -> None:
    """The tasks table: episodes and success per task (with its instructions)."""
    rows = s["per_task"]
    with_ids = any(r["task_id"] for r in rows.values())
    suite = f" (suite {s['task_suite']})" if s.get("task_suite") else ""
    table = Table(title=f"tasks{suite}", title_justify="left")
    table.add_column("episodes", justify="right")
    table.add_column("success", justify="right")
    if with_ids:
        table.add_column("task_id")
        table.add_column("family")
    table.add_column("instructions" if with_ids else "task", overflow="fold")
    for r in rows.values():
        rate = "-" if r["success_rate"] is None else f"{r['successes']}/{r['judged']} {100 * r['success_rate']:.0f}%"
        texts = "\n".join(f"{escape(t) or '[dim](none)[/]'}" + (f" [dim]x{n}[/]" if len(r["instructions"]) > 1 else "")
                          for t, n in sorted(r["instructions"].items(), key=lambda kv: -kv[1]))
        cells = [str(r["episodes"]), rate]
        if with_ids:
            cells += [r["task_id"] or "[dim](none)[/]", r["family"]]
        table.add_row(*cells, texts)
    console.print(table)


def print_doctor(
    console: Console, path: Path, *, repair: bool = False, frames: str = "ends", as_json: bool = False,
    strict: bool = False, runner: str = "local", beam_options: list[str] | None = None,
) -> int:
    repairs: list[str] = []
    if repair:
        repairs = repair_dataset(path)
    checker = None
    if runner == "beam":
        from ..beam.doctor import beam_checker

        checker = beam_checker(beam_options or [])
    report = check_dataset(path, decode_frames=frames, check_episodes=checker)
    report.repairs = repairs
    failed = not report.ok or (strict and report.all_warnings)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return 1 if failed else 0
    for line in repairs:
        console.print(f"[cyan]repair:[/] {line}")
    if repair and not repairs:
        console.print("[cyan]repair:[/] nothing to mend")
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


def _print_sync_table(console: Console, report: DoctorReport, max_rows: int = 40) -> None:
    info = report.info
    if info is None or not report.episodes:
        return
    checked = [e for e in report.episodes if e.sync is not None]
    if info.cameras and checked:
        cams = Table(title="cameras (frame age = step time - capture time)", title_justify="left")
        for col in ("camera", "fps", "age p50 ms", "p99 ms", "max ms", "repeated", "dropped"):
            cams.add_column(col, justify="right" if col != "camera" else "left")
        for cam in info.cameras:
            ages = np.concatenate([e.frame_age[cam] for e in checked if cam in e.frame_age])
            syncs = [e.sync.cameras[cam] for e in checked if cam in e.sync.cameras]
            fps = float(np.median([c.camera_fps for c in syncs])) if syncs else 0.0
            cams.add_row(
                cam,
                f"{fps:.1f}",
                f"{1000 * np.percentile(ages, 50):.1f}",
                f"{1000 * np.percentile(ages, 99):.1f}",
                f"{1000 * ages.max():.1f}",
                str(sum(c.repeated for c in syncs)),
                str(sum(c.skipped for c in syncs)),
            )
        console.print(cams)
    table = Table(title=f"episodes (control target {info.fps:g} Hz; late = over 2 ms behind schedule)", title_justify="left")
    for col in ("ep", "steps", "seconds", "rate Hz", "late", "missed", "rep", "drop", "status"):
        table.add_column(col, justify="right" if col != "status" else "left")
    shown = report.episodes
    if len(shown) > max_rows:
        shown = [e for e in report.episodes if e.errors or e.warnings][:max_rows]
    for ep in shown:
        status = "[red]error[/]" if ep.errors else "[yellow]warn[/]" if ep.warnings else "[green]ok[/]"
        s = ep.sync
        if s is None:
            table.add_row(str(ep.index), str(ep.steps), *["-"] * 6, status)
            continue
        rep = sum(c.repeated for c in s.cameras.values())
        drop = sum(c.skipped for c in s.cameras.values())
        table.add_row(str(ep.index), str(s.steps), f"{s.duration:.1f}", f"{s.achieved_fps:.1f}", str(s.late_ticks),
                      str(s.missed_ticks), str(rep), str(drop), status)
    console.print(table)
    if len(shown) < len(report.episodes):
        console.print(f"[dim]{len(report.episodes) - len(shown)} more episode(s) not listed (only those with findings are)[/]")


def _duration(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)} min {s:.0f} s" if m else f"{s:.1f} s"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def print_stats(console: Console, path: Path, *, as_json: bool = False) -> None:
    """Per-feature statistics from ``meta/stats.json`` (what normalizers use)."""
    ds = Dataset.open(path)
    stats = ds.stats()
    summary = stats.summary() if stats is not None else {}
    if as_json:
        console.print_json(json.dumps(summary))
        return
    if not summary:
        console.print(f"{path}: no statistics yet (no episodes, or run 'telecorder doctor --repair')")
        return
    for name, s in summary.items():
        spec = ds.info.features.get(name)
        names = list(spec.names) if spec is not None and spec.names else None
        table = Table(title=f"{name}  ({s['count']} values)", title_justify="left")
        for col in ("dim", "mean", "std", "min", "q01", "q99", "max"):
            table.add_column(col, justify="right" if col != "dim" else "left")
        for k in range(len(np.ravel(s["mean"]))):
            row = [np.ravel(s[key])[k] for key in ("mean", "std", "min", "q01", "q99", "max")]
            table.add_row(names[k] if names and k < len(names) else str(k), *(f"{v:.4g}" for v in row))
        console.print(table)
