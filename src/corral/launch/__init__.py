"""Launch planning: from a job spec and its placement to per-node process plans (pure)."""
