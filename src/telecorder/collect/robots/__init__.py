"""Follower robots: the MuJoCo sim arm and the Dynamixel follower."""
