"""How the benchmark pages write numbers: fixed decimals, whole counts, ratios to a floor."""

from __future__ import annotations

import math


def num(value: float, digits: int = 2) -> str:
    """`digits` decimals with thousands separators; "-" for a figure not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def figure(value: float) -> str:
    """Two decimals for a latency or a MiB, none for a count or a rate in thousands."""
    whole = isinstance(value, int) or abs(value) >= 1000 or float(value).is_integer()
    return num(value, 0 if whole else 2)


def ratio(value: float | None, floor: float | None) -> str:
    if not value or not floor or math.isnan(value) or math.isnan(floor):
        return "-"
    return f"{value / floor:.2f}x"
