"""Episode numbers and ranges as the user types them (``0-9,15``), kept as ranges.

A range is never expanded before it is checked: ``0-99999999999`` is two numbers here, and
turns into a list only after every number in it is found among the dataset's episodes
(:meth:`EpisodeRanges.select`). Numbers above :data:`MAX_EPISODE_NUMBER` are refused as
typos, and a caller that must hold the numbers without a dataset to check against (a
statistics file) bounds their count with ``max_count``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from ..errors import TelecorderError

__all__ = ["MAX_EPISODE_NUMBER", "EpisodeRanges", "RangeError", "RangeLimitError", "compact", "parse_episode_ranges", "select_episodes"]

# Episode numbers are file-name counters (episode_000123.h5): nothing real comes near a
# billion, and a larger number is a typo, not a selection.
MAX_EPISODE_NUMBER = 999_999_999


class RangeError(TelecorderError, ValueError):
    """Text that is not episode numbers and ranges, or numbers a dataset does not hold."""


class RangeLimitError(RangeError):
    """Well-formed numbers beyond a documented limit."""


class EpisodeRanges(Sequence[int]):
    """Inclusive ranges ``[(lo, hi), ...]`` in the order given, read as the numbers they
    hold without expanding them."""

    def __init__(self, parts: Iterable[tuple[int, int]] = ()) -> None:
        self.parts: tuple[tuple[int, int], ...] = tuple((int(lo), int(hi)) for lo, hi in parts)
        self._ends: list[int] = []  # cumulative counts, for indexing without expanding
        total = 0
        for lo, hi in self.parts:
            total += hi - lo + 1
            self._ends.append(total)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...
    def __getitem__(self, i: int | slice) -> int | list[int]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = bisect.bisect_right(self._ends, i)
        before = self._ends[part - 1] if part else 0
        return self.parts[part][0] + i - before

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.parts:
            yield from range(lo, hi + 1)

    def __contains__(self, n: object) -> bool:
        return isinstance(n, int) and any(lo <= n <= hi for lo, hi in self.parts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EpisodeRanges):
            return list(self.parts) == list(other.parts) or (len(self) == len(other) and list(self) == list(other))
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EpisodeRanges({self.text()!r})"

    def text(self) -> str:
        return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.parts)

    def absent(self, available: Iterable[int], limit: int = 10) -> list[int]:
        """Up to ``limit`` requested numbers that ``available`` lacks, smallest first, found
        without expanding the ranges (a gap search over the sorted available numbers)."""
        have = sorted(set(int(a) for a in available))
        out: set[int] = set()
        for lo, hi in self.parts:
            n = lo
            k = bisect.bisect_left(have, lo)
            while n <= hi and len(out) < limit:
                if k < len(have) and have[k] == n:
                    n, k = n + 1, k + 1
                    continue
                out.add(n)
                n += 1
        return sorted(out)[:limit]

    def select(self, available: Iterable[int], *, where: str = "the dataset") -> list[int]:
        """The requested numbers in the order given (each once), after checking that
        ``available`` holds every one of them; else a :class:`RangeError` naming the first few
        missing."""
        have = list(available)
        missing = self.absent(have)
        if missing:
            raise RangeError(f"{where}: no episode(s) {compact(missing, more=len(missing) >= 10)} "
                             f"(it has {compact(sorted(have)) or 'none'})")
        seen: set[int] = set()
        out: list[int] = []
        for n in self:  # every number is in ``have`` now, so this is bounded by the dataset
            if n not in seen:
                seen.add(n)
                out.append(n)
        return out


def compact(numbers: Sequence[int], *, more: bool = False) -> str:
    """Sorted numbers as ``0-9,15`` (``...`` appended when ``more`` were left out)."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in spans)
    return text + (" ..." if more else "")


def parse_episode_ranges(text: Any, *, what: str = "episodes", max_count: int | None = None) -> EpisodeRanges:
    """``0-9,15`` -> the ranges (0, 9) and (15, 15), unexpanded. Numbers are 0 to
    :data:`MAX_EPISODE_NUMBER`; ``max_count`` bounds how many they may cover in all."""
    if not isinstance(text, str):
        raise RangeError(f"{what} must be text like '0-9,15', not {type(text).__name__}")
    parts: list[tuple[int, int]] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, dash, b = part.partition("-")
            lo = int(a)
            hi = int(b) if dash else lo
            if lo < 0 or hi < lo:
                raise ValueError(part)
            parts.append((lo, hi))
    except ValueError as e:
        raise RangeError(f"{what} must be numbers and ranges like '0-9,15', not {text!r}") from e
    big = next((hi for _, hi in parts if hi > MAX_EPISODE_NUMBER), None)
    if big is not None:
        raise RangeLimitError(f"{what}: episode {big} in {_short(text)} is beyond the largest episode number "
                         f"telecorder accepts ({MAX_EPISODE_NUMBER})")
    out = EpisodeRanges(parts)
    if max_count is not None and len(out) > max_count:
        raise RangeLimitError(f"{what}: {_short(text)} names {len(out)} episodes, more than the {max_count} allowed here")
    return out


def select_episodes(wanted: Iterable[int] | None, available: Sequence[int], *, where: str) -> list[int]:
    """``wanted`` (ranges or plain numbers; ``None`` = all) checked against ``available``."""
    if wanted is None:
        return list(available)
    ranges = wanted if isinstance(wanted, EpisodeRanges) else EpisodeRanges((int(n), int(n)) for n in wanted)
    return ranges.select(available, where=where)


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")
