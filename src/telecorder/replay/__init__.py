"""Play a recorded episode back on a robot (sim or Dynamixel) through the recorder's loop.

- :mod:`.config`: :class:`ReplayConfig`, what a replay is asked to do;
- :mod:`.source`: the recorded episode (native or LeRobot) and the checks on its action space;
- :mod:`.setup`: the robot it drives, the scene it restores, the cameras it records with;
- :mod:`.player`: :func:`replay`, the loop (start check, ramp, recorded rate) and ``--out``;
- :mod:`.drift`: how far the replayed state ran from the recorded one.
"""
