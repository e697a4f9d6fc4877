"""Schedules that move a loss setting (temperature, alpha, a loss weight) from a start to an end value.

`progress` is `global_step / max_steps` in [0, 1]; the value is `start + (end - start) * shape(progress)` with

- `constant`: shape 0 (the start value throughout; `end` must be unset),
- `linear`:   shape `progress`,
- `cosine`:   shape `(1 - cos(pi * progress)) / 2` (flat at both ends, steepest half-way).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def schedule_value(kind: str, start: float, end: float | None, progress: float) -> float:
    """The scheduled value at `progress` (clamped to [0, 1]); `end=None` means `start` (constant)."""
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")
    if kind == "constant" or end is None:
        return start
    progress = min(max(progress, 0.0), 1.0)
    shape = progress if kind == "linear" else (1.0 - math.cos(math.pi * progress)) / 2.0
    return start + (end - start) * shape
