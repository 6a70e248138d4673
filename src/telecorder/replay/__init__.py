"""Play a recorded episode back on a robot (sim or Dynamixel) through the recorder's loop."""
