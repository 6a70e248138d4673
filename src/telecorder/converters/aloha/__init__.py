"""ALOHA / ACT HDF5 episodes."""
