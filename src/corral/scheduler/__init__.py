"""Scheduling: the pure placement policy and the control loop that applies it."""
