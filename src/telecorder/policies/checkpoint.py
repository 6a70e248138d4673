"""Policy checkpoints: a folder with ``policy.json`` and ``model.safetensors``.

``policy.json`` holds everything but the weights, as plain JSON: the format
(``telecorder-policy/1``), the policy kind (``"bc"``, or ``"vla"``: :mod:`.vla.checkpoint`), the :class:`PolicySpec` (with the
state normalizer the loader used), the model config, the action normalizer, a SHA-256 of
the weights file and a training summary. ``model.safetensors`` holds the weights: a flat
table of named tensors, loaded without executing anything (never ``torch.load``).

Both files are replaced atomically, the weights first, so a reader sees a complete pair;
a weights file from another run is caught by the digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..actions.normalize import Normalizer
from ..atomic import write_json_atomic
from ..errors import TelecorderError
from . import limits as spec_limits
from .base import POLICY_FORMAT, Policy, PolicyError, PolicySpec
from .bc import BCConfig, BCModel, BCPolicy
from .embodiments import mixture_meta
from .weights import MODEL_FILE, POLICY_FILE, load_weights, save_weights

__all__ = ["MODEL_FILE", "POLICY_FILE", "load_policy_dir", "save_bc_policy"]

KINDS = ("bc", "vla")


def save_bc_policy(out_dir: str | Path, policy: BCPolicy, training: Mapping[str, Any] | None = None, *,
                   embodiments: Any = None) -> Path:
    """Write ``policy`` (and a training summary) to ``out_dir``; returns the folder. ``embodiments``: the
    :class:`~.embodiments.MixturePolicy` whose inner model ``policy`` is (a policy of several robots)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": POLICY_FORMAT,
        "kind": "bc",
        "spec": policy.spec.to_dict(),
        "model": policy.model.cfg.to_dict(),
        "action_normalizer": policy.action_normalizer.to_dict(),
        **mixture_meta(embodiments),
        "weights": save_weights(out, policy.model),
        "training": dict(training or {}),
    }
    write_json_atomic(out / POLICY_FILE, meta)
    return out


def _with_embodiments(inner: Policy, meta: Mapping[str, Any], meta_path: Path) -> Policy:
    """``inner``, or the policy of several robots around it when ``policy.json`` lists embodiments."""
    if meta.get("embodiments") is None:
        return inner
    from .embodiments import EmbodimentEntry, MixturePolicy

    try:
        entries = [EmbodimentEntry.from_dict(e) for e in meta["embodiments"]]
        return MixturePolicy(inner, entries, int(meta["state_width"]), info=dict(meta.get("training") or {}))
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
    except (KeyError, TypeError, ValueError, TelecorderError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise PolicyError(f"{meta_path}: malformed embodiments ({detail}); retrain the policy") from e


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
        cfg = BCConfig.from_dict(meta["model"]) if meta["kind"] == "bc" else None
        action_normalizer = Normalizer.from_dict(meta["action_normalizer"])
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
    except (KeyError, TypeError, ValueError, TelecorderError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise PolicyError(f"{meta_path}: malformed ({detail}); retrain the policy") from e

    if meta.get("kind") == "vla":
        from .vla.checkpoint import load_vla

        return _with_embodiments(load_vla(root, meta, spec, action_normalizer, num_threads=num_threads), meta,
                                 meta_path)
    assert cfg is not None
    model = load_weights(root, meta, lambda: BCModel(cfg))
    try:
        inner = BCPolicy(model, spec, action_normalizer, num_threads=num_threads, info=dict(meta.get("training") or {}))
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
    return _with_embodiments(inner, meta, meta_path)
