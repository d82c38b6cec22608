"""Argument checks shared by the built-in encoders and fusions, and their shared search-space entries.

A bad hyper-parameter fails at construction with a ``ValueError`` that names it and its value.
"""

from __future__ import annotations

# The AMF-MedIT grid for weight decay (appendix A), used by every fusion that searches it.
WEIGHT_DECAY_SEARCH: dict[str, object] = {"type": "categorical", "choices": [1e-1, 1e-2, 1e-3, 1e-4]}


def check_positive(**values: int | float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} must be positive, however: {name}={value!r}")


def check_positive_int(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, however: {name}={value!r}")


def check_dropout(**values: float) -> None:
    """A dropout probability: in [0, 1)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), however: {name}={value!r}")
