"""A model's weights in a policy folder: ``model.safetensors``, written atomically, read safely.

Shared by every policy kind. Saving returns the digest that ``policy.json`` records; loading
builds the model on torch's ``meta`` device first (shapes only) and compares it with the
tensors the file holds, so a damaged or foreign weights file is one :class:`PolicyError`
naming it, never an allocation sized by the file or a pickle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import missing_extra
from .base import POLICY_FORMAT, PolicyError

try:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch and safetensors", "torch") from e

MODEL_FILE = "model.safetensors"
POLICY_FILE = "policy.json"


def save_weights(out: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Write ``model``'s weights to ``out/model.safetensors``; the ``weights`` entry of ``policy.json``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes a multi-key metadata map in a per-process random
    # order, and the same weights must give the same bytes (and digest) in every run.
    blob = st_save(tensors, metadata={"format": POLICY_FORMAT})
    with atomic_write(out / MODEL_FILE, binary=True) as fh:
        fh.write(blob)
    return {"file": MODEL_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}


def load_weights(root: Path, meta: Mapping[str, Any], build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The model ``build()`` makes, with the weights of ``root/model.safetensors``."""
    meta_path = root / POLICY_FILE
    weights_path = root / MODEL_FILE
    if not weights_path.is_file():
        raise PolicyError(f"{weights_path}: missing; restore it next to {POLICY_FILE} or retrain the policy")
    try:
        blob = weights_path.read_bytes()
    except OSError as e:
        raise PolicyError(f"{weights_path}: unreadable ({e})") from e
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise PolicyError(
            f"{weights_path}: corrupt or truncated safetensors file ({e}); retrain the policy or "
            "restore the file from a backup"
        ) from e
    try:
        # Shapes only (no storage): the weights file, not the JSON, decides what is allocated.
        with torch.device("meta"):
            shell = build()
    except (RuntimeError, ValueError, PolicyError) as e:
        raise PolicyError(f"{meta_path}: model config cannot be built ({e}); retrain the policy") from e
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected tensors {extra[:3]}{' ...' if len(extra) > 3 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k!r} is {got[k]}, config needs {expected[k]}")
        raise PolicyError(
            f"{weights_path}: does not match the model config in {POLICY_FILE} ({'; '.join(parts)}); "
            "the two files come from different trainings: retrain or restore the pair"
        )
    digest = (meta.get("weights") or {}).get("sha256")
    if digest is not None and digest != hashlib.sha256(blob).hexdigest():
        raise PolicyError(
            f"{weights_path}: is not the weights file {POLICY_FILE} was saved with (SHA-256 differs); "
            "the two files come from different trainings: retrain or restore the pair"
        )
    wrong_dtype = sorted(k for k, v in tensors.items() if v.dtype != shell.state_dict()[k].dtype)
    if wrong_dtype:
        raise PolicyError(f"{weights_path}: tensor {wrong_dtype[0]!r} has dtype {tensors[wrong_dtype[0]].dtype}")
    try:
        model = build()
    except (RuntimeError, ValueError) as e:
        raise PolicyError(f"{meta_path}: model config cannot be built ({e}); retrain the policy") from e
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    return model
