"""RLDS / Open X-Embodiment (TFDS folders)."""
