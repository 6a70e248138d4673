"""Policy checkpoints: a folder with ``policy.json`` and ``model.safetensors``.

``policy.json`` holds everything but the weights, as plain JSON: the format
(``telecorder-policy/1``), the policy kind (``"bc"``), the :class:`PolicySpec` (with the
state normalizer the loader used), the model config, the action normalizer, a SHA-256 of
the weights file and a training summary. ``model.safetensors`` holds the weights: a flat
table of named tensors, loaded without executing anything (never ``torch.load``).

Both files are replaced atomically, the weights first, so a reader sees a complete pair;
a weights file from another run is caught by the digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..actions.normalize import Normalizer
from ..atomic import atomic_write, write_json_atomic
from ..errors import TelecorderError, missing_extra
from . import limits as spec_limits
from .base import POLICY_FORMAT, Policy, PolicyError, PolicySpec
from .bc import BCConfig, BCModel, BCPolicy

try:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch and safetensors", "torch") from e

__all__ = ["MODEL_FILE", "POLICY_FILE", "load_policy_dir", "save_bc_policy"]

POLICY_FILE = "policy.json"
MODEL_FILE = "model.safetensors"
KINDS = ("bc",)


def save_bc_policy(out_dir: str | Path, policy: BCPolicy, training: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy`` (and a training summary) to ``out_dir``; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.model.state_dict().items()}
    # One metadata key: safetensors writes a multi-key metadata map in a per-process random
    # order, and the same weights must give the same bytes (and digest) in every run.
    blob = st_save(tensors, metadata={"format": POLICY_FORMAT})
    with atomic_write(out / MODEL_FILE, binary=True) as fh:
        fh.write(blob)
    meta = {
        "format": POLICY_FORMAT,
        "kind": "bc",
        "spec": policy.spec.to_dict(),
        "model": policy.model.cfg.to_dict(),
        "action_normalizer": policy.action_normalizer.to_dict(),
        "weights": {"file": MODEL_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)},
        "training": dict(training or {}),
    }
    write_json_atomic(out / POLICY_FILE, meta)
    return out


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.parent.is_dir():
        raise PolicyError(f"{path.parent}: no such policy folder (train one with 'telecorder train DATASET --out DIR')")
    if not path.is_file():
        raise PolicyError(
            f"{path}: missing; a policy folder needs {POLICY_FILE} and {MODEL_FILE} "
            "(train one with 'telecorder train DATASET --out DIR')"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"{path}: unreadable or not JSON ({e}); retrain or restore the policy folder") from e
    if not isinstance(meta, dict) or meta.get("format") != POLICY_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise PolicyError(
            f"{path}: format {fmt!r}, expected {POLICY_FORMAT!r}; this is not a telecorder policy "
            "(or one from an incompatible version): retrain it with 'telecorder train'"
        )
    if meta.get("kind") not in KINDS:
        raise PolicyError(
            f"{path}: policy kind {meta.get('kind')!r} is not one this version loads ({', '.join(KINDS)})"
        )
    return meta


def load_policy_dir(path: str | Path, *, num_threads: int | None = 1) -> Policy:
    """The policy saved in folder ``path`` (by :func:`save_bc_policy` / ``telecorder train``).

    Every problem (a missing file, a corrupt or truncated weights file, a JSON of another
    format or kind, weights that do not fit the config) raises one :class:`PolicyError`
    naming the file.
    """
    root = Path(path)
    meta_path = root / POLICY_FILE
    meta = _read_meta(meta_path)
    try:
        spec_limits.check_meta(meta)
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy or restore the file") from e
    try:
        spec = PolicySpec.from_dict(meta["spec"])
        cfg = BCConfig.from_dict(meta["model"])
        action_normalizer = Normalizer.from_dict(meta["action_normalizer"])
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
    except (KeyError, TypeError, ValueError, TelecorderError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise PolicyError(f"{meta_path}: malformed ({detail}); retrain the policy") from e

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
            shell = BCModel(cfg)
    except (RuntimeError, ValueError) as e:
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
        model = BCModel(cfg)
    except (RuntimeError, ValueError) as e:
        raise PolicyError(f"{meta_path}: model config cannot be built ({e}); retrain the policy") from e
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    try:
        return BCPolicy(model, spec, action_normalizer, num_threads=num_threads, info=dict(meta.get("training") or {}))
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
