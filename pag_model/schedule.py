"""Temperature schedule for the Gumbel gates: tau annealed from 1 to 0.1 (PAG paper, Sec. 3.2).

The paper starts at tau = 1 and lowers it gradually to 0.1 during training; the shape of the
decay is a hyper-parameter here. The schedule is a function of the iteration and checkpoints
its settings, so a resumed stage continues on the same curve.
"""
from __future__ import annotations

import math
from typing import Any

TAU_SHAPES = ("linear", "exponential", "cosine", "constant")


class TauSchedule:
    """tau(it) for it in [0, total_iters]; held at `end` after total_iters."""

    def __init__(
        self,
        start: float = 1.0,
        end: float = 0.1,
        total_iters: int = 1000,
        shape: str = "exponential",
    ) -> None:
        """
        Args:
            start: tau at iteration 0 (> 0).
            end: tau at and after `total_iters` (> 0).
            total_iters: length of the annealing in iterations (>= 1).
            shape: "linear", "exponential" (geometric interpolation), "cosine" or "constant".
        """
        if start <= 0 or end <= 0:
            raise ValueError(f"tau start and end must be > 0, got start={start}, end={end}")
        if total_iters < 1:
            raise ValueError(f"tau total_iters must be >= 1, got {total_iters}")
        if shape not in TAU_SHAPES:
            raise ValueError(f"unknown tau schedule shape {shape!r}; allowed: {', '.join(TAU_SHAPES)}")
        self.start = float(start)
        self.end = float(end)
        self.total_iters = int(total_iters)
        self.shape = shape

    def value(self, it: int) -> float:
        """Temperature at iteration `it` (0-based)."""
        t = min(max(it, 0), self.total_iters) / self.total_iters
        if self.shape == "constant":
            return self.start
        if self.shape == "linear":
            return self.start + (self.end - self.start) * t
        if self.shape == "exponential":
            return self.start * (self.end / self.start) ** t
        return self.end + 0.5 * (self.start - self.end) * (1.0 + math.cos(math.pi * t))

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "total_iters": self.total_iters, "shape": self.shape}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restored = TauSchedule(**state)
        self.__dict__.update(restored.__dict__)

    def __repr__(self) -> str:
        return f"TauSchedule(start={self.start}, end={self.end}, total_iters={self.total_iters}, shape={self.shape!r})"
