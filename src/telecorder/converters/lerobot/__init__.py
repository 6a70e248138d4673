"""LeRobot v2.0/v2.1/v3.0 datasets."""
