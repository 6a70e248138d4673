"""What a ``policy.json`` may declare: types and documented upper bounds, checked before
anything is built from it.

A checkpoint's numbers size memory: ``hidden`` sizes weight matrices, ``head_layers`` and
``channels`` the number of modules, ``history`` and ``image_size`` every observation the
runner assembles. So each is checked here for its type and against a limit far above any
model this package trains, and the model is then built on torch's ``meta`` device (shapes,
no storage) and compared with the tensors the weights file actually holds before any
real allocation: a file of a few kilobytes cannot make the loader allocate gigabytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .base import PolicyError

__all__ = ["MAX_OBSERVATION_BYTES", "MODEL_LIMITS", "SPEC_LIMITS", "check_meta"]

# Upper bounds of the integer fields (all must be >= 1; groups also divides every channel count).
MODEL_LIMITS: dict[str, int] = {
    "state_dim": 65_536, "action_dim": 65_536, "horizon": 1_024, "keypoints": 4_096,
    "image_features": 65_536, "state_hidden": 65_536, "hidden": 65_536, "head_layers": 64, "groups": 4_096,
    # the VLA's (policies/vla/config.py)
    "text_vocab": 1 << 20, "max_text_tokens": 4_096, "width": 65_536, "layers": 256, "attention_heads": 1_024,
    "mlp_ratio": 64, "decoder_layers": 256, "flow_steps": 10_000,
}
# The VLA's token-decoder sizes: 0 for the heads that have no token decoder (flow, l1).
MODEL_LIMITS_OR_ZERO: dict[str, int] = {"action_vocab": 1 << 20, "max_action_tokens": 65_536}
SPEC_LIMITS: dict[str, int] = {"action_dim": 65_536, "horizon": 1_024, "history": 1_024}
MAX_CONV_LAYERS = 16  # entries of "channels"
MAX_CHANNELS = 65_536  # each entry of "channels"
MAX_CAMERAS = 64
MAX_EMBODIMENTS = 256  # robots of one mixture policy
MAX_IMAGE_SIDE = 8_192
# One observation as the runner assembles it (history x (state + every camera frame)).
MAX_OBSERVATION_BYTES = 1 << 30


def _int(where: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{where} must be a whole number, not {json_type(value)} {value!r:.40}")
    if not 1 <= value <= limit:
        raise PolicyError(f"{where} is {value}; it must be between 1 and {limit}")
    return value


def _names(where: str, value: Any, limit: int | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of names, not {json_type(value)} {value!r:.40}")
    if limit is not None and len(value) > limit:
        raise PolicyError(f"{where} lists {len(value)} names; at most {limit}")
    return value


def _image_size(where: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise PolicyError(f"{where} must be [height, width] or null, not {value!r:.40}")
    return _int(f"{where}[0]", value[0], MAX_IMAGE_SIDE), _int(f"{where}[1]", value[1], MAX_IMAGE_SIDE)


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _object(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be a JSON object, not {json_type(value)} {value!r:.40}")
    return value


def check_model(d: Any) -> None:
    """The ``model`` section (a :class:`~.bc.BCConfig`): types and limits."""
    d = _object("'model'", d)
    for key, limit in MODEL_LIMITS.items():
        if key in d or key in ("state_dim", "action_dim", "horizon"):
            _int(f"model.{key}", d.get(key), limit)
    for key, limit in MODEL_LIMITS_OR_ZERO.items():
        if key in d and d[key] != 0:
            _int(f"model.{key}", d[key], limit)
    if "cameras" in d:
        _names("model.cameras", d["cameras"], MAX_CAMERAS)
    if "image_size" in d:
        _image_size("model.image_size", d["image_size"])
    if "channels" in d:
        ch = d["channels"]
        if not isinstance(ch, list) or not 1 <= len(ch) <= MAX_CONV_LAYERS:
            raise PolicyError(f"model.channels must be a list of 1 to {MAX_CONV_LAYERS} channel counts, not {ch!r:.40}")
        for k, c in enumerate(ch):
            _int(f"model.channels[{k}]", c, MAX_CHANNELS)
        groups = d.get("groups", 8)
        if any(c % groups for c in ch):
            raise PolicyError(f"model.channels {ch} must be multiples of model.groups = {groups}")


def check_spec(d: Any) -> None:
    """The ``spec`` section (a :class:`~.base.PolicySpec`): types, limits and the size of one
    observation."""
    d = _object("'spec'", d)
    values = {k: _int(f"spec.{k}", d.get(k, 1), limit) for k, limit in SPEC_LIMITS.items()
              if k in d or k == "action_dim"}
    if "state_keys" in d:
        _names("spec.state_keys", d["state_keys"])
    cameras = _names("spec.cameras", d["cameras"], MAX_CAMERAS) if "cameras" in d else []
    size = _image_size("spec.image_size", d.get("image_size"))
    fps = d.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                            or not math.isfinite(fps) or fps <= 0):
        raise PolicyError(f"spec.fps must be a positive number or null, not {fps!r:.40}")
    if d.get("action_names") is not None:
        _names("spec.action_names", d["action_names"], SPEC_LIMITS["action_dim"])
    history = values.get("history", 1)
    frame = 3 * size[0] * size[1] if size else 0
    if history * frame * len(cameras) > MAX_OBSERVATION_BYTES:
        raise PolicyError(f"spec: {history} step(s) of {len(cameras)} camera(s) at {size} make an observation over "
                          f"{MAX_OBSERVATION_BYTES >> 20} MiB")


def check_meta(meta: Mapping[str, Any]) -> None:
    """Every section of ``policy.json`` that the loader reads, before it builds anything."""
    check_spec(meta.get("spec"))
    check_model(meta.get("model"))
    _object("'action_normalizer'", meta.get("action_normalizer"))
    for key in ("weights", "training"):
        if meta.get(key) is not None:
            _object(f"'{key}'", meta[key])
    embodiments = meta.get("embodiments")
    if embodiments is not None:
        # A mixture policy (policies/embodiments.py): each robot's spec and normalizer, a bounded list.
        if not isinstance(embodiments, list) or not 1 <= len(embodiments) <= MAX_EMBODIMENTS:
            raise PolicyError(f"'embodiments' must be a list of 1 to {MAX_EMBODIMENTS} objects")
        for k, e in enumerate(embodiments):
            _object(f"embodiments[{k}]", e)
            check_spec(e.get("spec"))
            _object(f"embodiments[{k}].action_normalizer", e.get("action_normalizer"))
            for key in ("id", "state_dim"):
                if isinstance(e.get(key), bool) or not isinstance(e.get(key), int) or not 0 <= e[key] <= 65_536:
                    raise PolicyError(f"embodiments[{k}].{key} must be an integer from 0 to 65536")
            slots = e.get("state_slots")
            if slots is not None and (not isinstance(slots, list) or len(slots) != e["state_dim"] or any(
                    isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 65_536 for s in slots)):
                raise PolicyError(f"embodiments[{k}].state_slots must be {e['state_dim']} integers from 0 to 65535")
        width = meta.get("state_width")
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 65_536:
            raise PolicyError("'state_width' must be an integer from 1 to 65536")
    digest = (meta.get("weights") or {}).get("sha256")
    if digest is not None and not isinstance(digest, str):
        raise PolicyError(f"weights.sha256 must be text, not {json_type(digest)}")
