"""The serving section of docs/benchmarks.md (filled by the serving benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import machine_lines


def render(result: dict[str, Any], out_dir: Path) -> list[str]:
    lines = ["## Serving", ""]
    lines += machine_lines(result["machine"])
    lines += result.get("markdown", [])
    return lines
