"""What ``telecorder info``, ``stats`` and ``doctor`` print: tables for people, JSON for scripts.

``info`` and ``stats`` read any format telecorder reads; another format than native is described
from its own metadata (:mod:`telecorder.viewers.overview`), with the same tables and JSON keys
where they apply, plus ``format``/``format_version`` and ``notes`` on how numbers were obtained.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..datasets.dataset import Dataset
from ..datasets.doctor import DoctorReport, check_dataset, repair_dataset
from ..datasets.features import DatasetInfo, FeatureSpec

if TYPE_CHECKING:
    from ..viewers.overview import Overview
    from ..viewers.sources import AnySource


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


def open_foreign(path: Path, fmt: str | None) -> AnySource | None:
    """The dataset at ``path`` opened read-only when it is not native (None: native, read by Dataset)."""
    from ..viewers.sources import detect, open_any

    if fmt is None:
        if not Path(path).exists():
            return None  # Dataset.open says so
        fmt = detect(Path(path))
    return None if fmt == "native" else open_any(path, fmt)


FORMAT_TITLES = {"lerobot": "LeRobot dataset", "rlds": "RLDS dataset", "aloha": "ALOHA/ACT episode files",
                 "robomimic": "robomimic file"}


def foreign_summary(ov: Overview) -> dict[str, Any]:
    """:func:`dataset_summary`'s keys for a dataset of another format (None where it does not say)."""
    src, info = ov.source, ov.source.info
    outcomes = [r.get("success") for r in ov.records if r.get("success") is not None]
    storage = camera_storage(src)
    encodings = set(storage.values())
    return {
        "path": str(src.path),
        "format": src.format,
        "format_version": src.format_version or None,
        "robot_type": info.robot_type,
        "fps": ov.fps,
        "episodes": len(ov.records),
        "frames": ov.frames,
        "duration_s": round(ov.frames / ov.fps, 3) if ov.frames is not None and ov.fps else None,
        "success_rate": (sum(bool(s) for s in outcomes) / len(outcomes)) if outcomes else None,
        "tasks": dict(Counter(str(r.get("task") or "") for r in ov.records)),
        "per_task": per_task(ov.records),
        "task_suite": None,
        "size_bytes": ov.size_bytes,
        "image_encoding": encodings.pop() if len(encodings) == 1 else None,
        "camera_storage": storage,
        "features": {name: f.to_dict() for name, f in info.features.items()},
        **ov.extra,
        "notes": ov.notes,
    }


def camera_storage(src: AnySource) -> dict[str, str]:
    """How each camera's frames are stored, where the format says."""
    info = src.info
    if src.format == "lerobot":
        return {cam: src.reader.camera_storage(cam)[0] for cam in info.cameras}  # type: ignore[attr-defined]
    if src.format == "rlds":
        return dict.fromkeys(info.cameras, info.image_encoding)
    return {}


def print_foreign_info(console: Console, src: AnySource, *, per_episode: bool, as_json: bool) -> None:
    from ..viewers.overview import overview

    ov = overview(src)
    s = foreign_summary(ov)
    if as_json:
        if per_episode:
            s["episode_list"] = ov.records
        console.print_json(json.dumps(s))
        return
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.0f}%"
    version = f" {s.get('rlds_dataset', '')} {s['format_version']}" if src.format == "rlds" else (
        f" {s['format_version']}" if s["format_version"] else "")
    console.print(f"[bold]{escape(s['path'])}[/]  {FORMAT_TITLES.get(src.format, src.format)}{escape(version)}")
    fps = "control rate not stored" if s["fps"] is None else f"{s['fps']:g} Hz"
    frames = "frames not counted" if s["frames"] is None else f"{s['frames']} frames"
    duration = "" if s["duration_s"] is None else f", {_duration(s['duration_s'])}"
    splits = s.get("splits")
    split_text = f" ({', '.join(f'{k} {v}' for k, v in splits.items())})" if splits and len(splits) > 1 else ""
    console.print(f"robot {escape(str(s['robot_type']))}, {fps}; {s['episodes']} episodes{split_text}, {frames}"
                  f"{duration}; success {rate}; {_bytes(s['size_bytes'])} on disk", highlight=False)
    _print_features(console, src.info, "names / storage", lambda f: s["camera_storage"].get(f.camera, ""))
    _print_tasks(console, s)
    if per_episode:
        eps = Table(title="episodes", title_justify="left")
        for col in ("#", "steps", "duration", "success", "task"):
            eps.add_column(col)
        for r in ov.records:
            n = r.get("length")
            eps.add_row(str(r["episode_index"]), "-" if n is None else str(n),
                        "-" if n is None or not s["fps"] else f"{n / s['fps']:.1f} s",
                        {True: "yes", False: "no"}.get(r.get("success"), "-"), escape(str(r.get("task") or "")))
        console.print(eps)
    for key, note in s["notes"].items():
        console.print(f"[dim]{key}: {escape(note)}[/]")


def print_info(console: Console, path: Path, *, per_episode: bool = False, as_json: bool = False,
               fmt: str | None = None) -> None:
    src = open_foreign(path, fmt)
    if src is not None:
        try:
            print_foreign_info(console, src, per_episode=per_episode, as_json=as_json)
        finally:
            src.close()
        return
    ds = Dataset.open(path)
    s = dataset_summary(ds)
    if as_json:
        if per_episode:
            s["episode_list"] = ds.records
        console.print_json(json.dumps(s))
        return
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.0f}%"
    console.print(f"[bold]{escape(s['path'])}[/]  telecorder dataset v{s['format_version']}")
    console.print(
        f"robot {s['robot_type']}, {s['fps']:g} Hz; {s['episodes']} episodes, {s['frames']} frames, "
        f"{_duration(s['duration_s'])}; success {rate}; {_bytes(s['size_bytes'])} on disk"
    )
    encoding = ds.info.image_encoding + (f" q{ds.info.jpeg_quality}" if ds.info.image_encoding == "jpeg" else "")
    _print_features(console, ds.info, "names / unit", lambda f: encoding)
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


def _print_features(console: Console, info: DatasetInfo, detail_title: str,
                    image_detail: Callable[[FeatureSpec], str]) -> None:
    """The features table: name, dtype, shape, and the names (numeric) or storage (images) and unit."""
    table = Table(title="features", title_justify="left")
    for col in ("name", "dtype", "shape"):
        table.add_column(col, no_wrap=True)
    table.add_column(detail_title, overflow="fold")
    for name, f in info.features.items():
        detail = image_detail(f) if f.is_image else (" ".join(f.names) if f.names else "")
        if f.unit:
            detail = f"{detail}\n[dim]{f.unit}[/]" if detail else f"[dim]{f.unit}[/]"
        table.add_row(name, f.dtype, "x".join(map(str, f.shape)), detail)
    console.print(table)


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
    strict: bool = False, runner: str = "local", beam_options: list[str] | None = None, fmt: str | None = None,
) -> int:
    from ..converters.foreign_doctor import check_foreign, doctor_format, repair_refusal
    from ..errors import TelecorderError

    kind = doctor_format(path, fmt)
    if kind != "native":
        if repair:
            raise TelecorderError(repair_refusal(path, kind))
        checker = None
        if runner == "beam":
            from ..beam.doctor import beam_checker

            checker = beam_checker(beam_options or [], foreign=True)
        report = check_foreign(path, kind, decode_frames=frames, check_episodes=checker)
    else:
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
        # A native report keeps exactly its keys (scripts compare them); a foreign one says its format.
        console.print_json(json.dumps(report.to_dict() | ({} if kind == "native" else {"format": kind})))
        return 1 if failed else 0
    for line in report.repairs:
        console.print(f"[cyan]repair:[/] {escape(line)}")
    if repair and not report.repairs:
        console.print("[cyan]repair:[/] nothing to mend")
    _print_sync_table(console, _timed_cameras_only(report))
    for e in report.all_errors:  # escaped: foreign files name features and paths with brackets in them
        console.print(f"[red]error:[/] {escape(e)}", highlight=False)
    for w in report.all_warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    verdict = "[green]OK[/]" if report.ok else f"[red]{len(report.all_errors)} error(s)[/]"
    hint = "; 'telecorder doctor --repair' mends what can be mended" if kind == "native" else ""
    console.print(
        f"{path}: {len(report.episodes)} episodes checked, {verdict}, {len(report.all_warnings)} warning(s)"
        + ("" if report.ok or repair else hint)
    )
    return 1 if failed else 0


def _timed_cameras_only(report: DoctorReport) -> DoctorReport:
    """The report with only the cameras some episode has frame times of (a foreign camera whose
    videos are all missing has none), for the cameras table."""
    import dataclasses

    info = report.info
    if info is None or not info.cameras:
        return report
    timed = {c for e in report.episodes if e.sync is not None for c in e.frame_age if len(e.frame_age[c])}
    if all(c in timed for c in info.cameras):
        return report
    features = {k: f for k, f in info.features.items() if not f.is_image or f.camera in timed}
    return dataclasses.replace(report, info=dataclasses.replace(info, features=features))


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


def print_stats(console: Console, path: Path, *, as_json: bool = False, fmt: str | None = None) -> None:
    """Per-feature statistics from ``meta/stats.json`` (what normalizers use); for another format,
    its own statistics when it has them, else computed (with a progress bar on stderr)."""
    src = open_foreign(path, fmt)
    if src is not None:
        try:
            _print_foreign_stats(console, src, as_json=as_json)
        finally:
            src.close()
        return
    ds = Dataset.open(path)
    stats = ds.stats()
    summary = stats.summary() if stats is not None else {}
    if as_json:
        console.print_json(json.dumps(summary))
        return
    if not summary:
        console.print(f"{path}: no statistics yet (no episodes, or run 'telecorder doctor --repair')")
        return
    _print_stat_tables(console, summary, ds.info.features)


def _print_stat_tables(console: Console, summary: dict[str, dict[str, Any]], specs: Any) -> None:
    """One table per feature: a row per dimension (named where the feature names them); a statistic
    the source does not hold is shown as '-'."""
    keys = ("mean", "std", "min", "q01", "q99", "max")
    for name, s in summary.items():
        spec = specs.get(name)
        names = list(spec.names) if spec is not None and spec.names else None
        count = "?" if s.get("count") is None else s["count"]
        table = Table(title=f"{name}  ({count} values)", title_justify="left")
        for col in ("dim", *keys):
            table.add_column(col, justify="right" if col != "dim" else "left")
        columns = {key: np.ravel(s[key]) for key in keys if s.get(key) is not None}
        dims = max((len(v) for v in columns.values()), default=0)
        for k in range(dims):
            row = [f"{columns[key][k]:.4g}" if key in columns and k < len(columns[key]) else "-" for key in keys]
            table.add_row(names[k] if names and k < len(names) else str(k), *row)
        console.print(table)


def _print_foreign_stats(console: Console, src: AnySource, *, as_json: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..viewers.overview import dataset_statistics

    columns = (TextColumn("statistics"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
               TimeElapsedColumn())
    err = Console(stderr=True)
    if not err.is_terminal:  # a log or a pipe: no bar (it would leave an empty line behind)
        report = dataset_statistics(src)
    else:
        # On stderr, so that --json output stays clean; shown only while episodes are being read.
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("", total=len(src.indices))
            report = dataset_statistics(src, lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        console.print_json(json.dumps({"path": str(src.path), "format": src.format, "source": report.source,
                                       "computed": report.computed, "features": report.features}))
        return
    console.print(f"{escape(str(src.path))} ({src.format}): statistics {escape(report.source)}", highlight=False)
    if not report.features:
        console.print("no numeric features")
        return
    _print_stat_tables(console, report.features, src.info.features)
