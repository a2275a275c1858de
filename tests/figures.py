"""Figures measured by the end-to-end tests, printed at the end of the run."""

from __future__ import annotations

FIGURES: dict[str, object] = {}


def record(name: str, value: object) -> None:
    FIGURES[name] = value
