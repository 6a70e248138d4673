"""LeRobot v2.0/v2.1/v3.0 datasets: read any of them, write v3.0 (what lerobot 0.4 loads).

:mod:`.schema` holds the layout and feature naming, :mod:`.reader` and :mod:`.writer` the two
directions, :mod:`.merge` joins the parts of a sharded conversion; the registry in
:mod:`telecorder.converters` finds all three names below on this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .merge import merge_parts
    from .reader import LeRobotReader
    from .writer import LeRobotWriter


def __getattr__(name: str) -> object:
    # Loaded when asked for: the conversion pipeline imports .timing on every run, and the reader
    # and writer bring pyarrow and PyAV with them.
    if name == "LeRobotReader":
        from .reader import LeRobotReader

        return LeRobotReader
    if name == "LeRobotWriter":
        from .writer import LeRobotWriter

        return LeRobotWriter
    if name == "merge_parts":
        from .merge import merge_parts

        return merge_parts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LeRobotReader", "LeRobotWriter", "merge_parts"]
