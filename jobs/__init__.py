"""Entry points for `ray job submit` (training, tuning, batch reconstruction)."""
