"""A small registry of loss functions per family (hidden states, attention maps, attention relations)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# What a loss's `reduction="sum"` value is summed over, so the trainer can divide by the same count taken
# over a whole gradient-accumulation window (and all processes) instead of one micro-batch.
NORMALIZERS = ("examples", "tokens", "squared_lengths")


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable
    normalizer: str


class LossRegistry:
    """Name -> loss function for one family; duplicate names fail loudly, typos list the valid names."""

    def __init__(self, family: str):
        self.family = family
        self._specs: dict[str, LossSpec] = {}

    def register(self, name: str, normalizer: str) -> Callable[[Callable], Callable]:
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")

        def decorator(fn: Callable) -> Callable:
            if name in self._specs:
                raise ValueError(f"A {self.family} loss named {name!r} is already registered.")
            self._specs[name] = LossSpec(name, fn, normalizer)
            return fn

        return decorator

    def get(self, name: str) -> LossSpec:
        if name not in self._specs:
            raise ValueError(f"Unknown {self.family} loss {name!r}; choose one of {self.names()}.")
        return self._specs[name]

    def names(self) -> list[str]:
        return sorted(self._specs)


HIDDEN_LOSSES = LossRegistry("hidden-state")
ATTENTION_LOSSES = LossRegistry("attention")
RELATION_LOSSES = LossRegistry("relation")
