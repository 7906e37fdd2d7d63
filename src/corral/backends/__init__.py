"""Backends execute launch plans and report what happened; they decide nothing."""
