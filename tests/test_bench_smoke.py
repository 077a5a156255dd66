"""The serving benchmark's harness at a tiny size: it runs end to end and writes its report.

Timings on a shared test machine mean nothing, so nothing here asserts one.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import report, serving


def test_the_serving_harness_writes_its_report(model_path: Path, tmp_path: Path) -> None:
    result = serving.run(smoke=True, model=model_path)
    report.save(tmp_path, report.SERVING_JSON, result)
    page = report.write(tmp_path).read_text()

    assert "## Serving" in page and "### Targets" in page and "Real-time capacity" in page
    saved = json.loads((tmp_path / "bench" / report.SERVING_JSON).read_text())
    servers = {row["server"] for row in saved["rows"]}
    assert {"echo", "ours"} <= servers
    assert all(row["errors"] == 0 for row in saved["rows"]), saved["rows"]
    # The echo and ours are taken in turn, and each row pools its server's windows.
    latency = [row for row in saved["rows"] if row["group"] == "latency"]
    assert latency and all(row["rounds"] == 2 and row["calls"] > 0 for row in latency)
    assert {"ours unary", "ours stream", "echo unary", "echo stream"} <= set(saved["capacity"])
    assert saved["memory"]["samples"]
    for png in ("serving-latency.png", "serving-throughput.png", "serving-memory.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"({png})" in page
