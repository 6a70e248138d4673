"""Load a policy from ``--policy``: a checkpoint folder of ours, or ``module:factory`` user code."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .base import Policy, PolicyError


def load_policy(ref: str | Path) -> Policy:
    """The policy ``ref`` names.

    A folder holding ``policy.json`` is a telecorder checkpoint (safetensors + JSON).
    ``package.module:factory`` imports the module (the current folder is on the path) and
    calls ``factory()``, which must return a :class:`Policy`: that is how a LeRobot or
    OpenVLA model is wrapped.
    """
    text = str(ref)
    path = Path(text)
    if path.is_dir():
        from .checkpoint import load_policy_dir

        return load_policy_dir(path)
    if ":" in text and not path.exists():
        module_name, _, factory_name = text.partition(":")
        if "" not in sys.path and "." not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise PolicyError(f"--policy {text}: cannot import module {module_name!r} ({e})") from e
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise PolicyError(f"--policy {text}: module {module_name!r} has no callable {factory_name!r}")
        policy = factory()
        if not isinstance(policy, Policy):
            raise PolicyError(f"--policy {text}: {factory_name}() returned {type(policy).__name__}, not a "
                              "telecorder.policies.Policy (subclass it and set .spec)")
        if not hasattr(policy, "spec"):
            raise PolicyError(f"--policy {text}: the policy has no .spec (a PolicySpec saying what it observes)")
        return policy
    if path.exists():
        raise PolicyError(f"--policy {text}: not a policy checkpoint folder (give the folder 'telecorder train' wrote)")
    raise PolicyError(f"--policy {text}: no such checkpoint folder, and not a 'module:factory' reference")
