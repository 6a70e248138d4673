"""Teleoperation devices, one module per kind: what a person (or a policy) moves, read each tick.

- :mod:`.leader_arm`: a Dynamixel leader arm, and kinesthetic teaching (moving the follower itself);
- :mod:`.vr` (headset controllers over OpenXR), :mod:`.gamepad`, :mod:`.keyboard`: end-effector
  targets that :mod:`.eef` turns into joint commands by IK (:mod:`.eef_dynamixel` on a Dynamixel arm);
- :mod:`.scripted`: the sim's scripted expert as a device;
- :mod:`.policy`, :mod:`.policy_runner`, :mod:`.intervention`: a policy as the device, with a
  person or the expert taking over.
"""
