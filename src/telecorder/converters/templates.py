"""Path templates read from foreign metadata (LeRobot's ``data_path`` / ``video_path``),
filled without letting the template size the result.

``str.format`` takes a field width from the template: ``{episode_index:099999999d}`` builds
a 100-million-character string, and a nested ``{x:{y}}`` or ``{x.attr}`` reaches further.
A template here may name only plain fields, with format specs whose numbers stay within
:data:`MAX_SPEC_NUMBER`, and the filled path is at most :data:`MAX_PATH_CHARS` long.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_PATH_CHARS", "MAX_SPEC_NUMBER", "TemplateError", "check_template", "fill_template"]

MAX_SPEC_NUMBER = 64  # widths and precisions: LeRobot uses 3 and 6 (chunk-000/episode_000000)
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateError(ValueError):
    """A template that names something other than plain fields, or sizes its own output."""


def check_template(template: str, fields: Mapping[str, Any] | None = None) -> None:
    """Refuse a template whose fields are not plain names (or not among ``fields``, when given)
    or whose format specs ask for more than :data:`MAX_SPEC_NUMBER` characters."""
    if len(template) > MAX_PATH_CHARS:
        raise TemplateError(f"it is {len(template)} characters long (at most {MAX_PATH_CHARS})")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(str(e)) from e
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not _FIELD.fullmatch(name):
            raise TemplateError(f"field {{{name}}} is not a plain name (no indexing, attributes or positions)")
        if fields is not None and name not in fields:
            raise TemplateError(f"unknown field {{{name}}}; it may use {', '.join(sorted(fields))}")
        if spec and ("{" in spec or "}" in spec):
            raise TemplateError(f"the format of {{{name}}} holds another field")
        big = next((int(n) for n in re.findall(r"\d+", spec or "") if int(n) > MAX_SPEC_NUMBER), None)
        if big is not None:
            raise TemplateError(f"the format of {{{name}}} asks for width or precision {big} "
                                f"(at most {MAX_SPEC_NUMBER})")


def fill_template(template: str, fields: Mapping[str, Any]) -> str:
    """``template.format(**fields)`` after :func:`check_template`, with the result's length bounded."""
    check_template(template, fields)
    try:
        out = template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise TemplateError(str(e)) from e
    if len(out) > MAX_PATH_CHARS:
        raise TemplateError(f"the filled path is {len(out)} characters long (at most {MAX_PATH_CHARS})")
    return out
