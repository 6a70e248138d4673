"""Teleoperation devices: one module per kind of leader (arm, VR, gamepad, keyboard, scripted, policy)."""
