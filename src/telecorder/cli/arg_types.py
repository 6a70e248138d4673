"""Argument types the commands share: argparse calls these on option values and turns their
ArgumentTypeError into a usage error (exit 2)."""

# The names keep their leading underscore: argparse names a type function in its message when it
# raises a plain ValueError ("invalid _positive_float value: 'abc'"), so renaming would change the output.

from __future__ import annotations

import argparse
import math


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


# What --randomize may vary in the simulated scene (sim.env applies them at each reset).
RANDOMIZE = ("lighting", "colors", "camera")


def _randomize(text: str) -> frozenset[str]:
    """``lighting,colors``: what the sim varies at each reset; ``none`` or empty for nothing."""
    parts = {p.strip().lower() for p in text.split(",") if p.strip()} - {"none"}
    unknown = sorted(parts - set(RANDOMIZE))
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: choose from {', '.join(RANDOMIZE)} "
                                         "(comma-separated)")
    return frozenset(parts)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x480, not {text!r}") from e


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
