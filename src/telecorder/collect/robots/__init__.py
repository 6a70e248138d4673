"""Follower robots: :mod:`.sim` (the MuJoCo arm) and :mod:`.dynamixel` (a Dynamixel arm, or the emulated one)."""
