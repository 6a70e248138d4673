"""Policies: the interface, loading, a reference behavioral-cloning policy, and training.

A policy takes an observation in the layout the PyTorch loader produces (same names, image
size and normalization as in training) and returns a chunk of actions in robot units. This
package knows nothing of the recorder: the layer above drives a policy as a teleop device
(:mod:`telecorder.collect.devices.policy_runner`, ``collect --device policy``) and evaluates it
in closed loop (:mod:`telecorder.evaluation`, ``telecorder eval``).
"""

from .base import POLICY_FORMAT, Policy, PolicyError, PolicySpec

__all__ = ["POLICY_FORMAT", "Policy", "PolicyError", "PolicySpec"]
