"""Policies in the loop: the interface, loading, a reference behavioral-cloning policy, training and evaluation.

A policy takes an observation in the layout the PyTorch loader produces (same names, image
size and normalization as in training) and returns a chunk of actions in robot units. The
recorder sees a policy only as a teleop device (``collect --device policy``).
"""

from .base import POLICY_FORMAT, Policy, PolicyError, PolicySpec

__all__ = ["POLICY_FORMAT", "Policy", "PolicyError", "PolicySpec"]
