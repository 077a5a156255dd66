"""The serving benchmark's harness at a tiny size: it runs end to end and writes its report.

Timings on a shared test machine mean nothing, so nothing here asserts one.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
from pytest import approx
from support import Reference, observations

from bench import overload, report, report_windows, servers, serving, under_load
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc


def test_the_serving_harness_writes_its_report(model_path: Path, tmp_path: Path) -> None:
    result = serving.run(smoke=True, model=model_path)
    report.save(tmp_path, report.SERVING_JSON, result)
    page = report.write(tmp_path).read_text()

    assert "## Serving" in page and "### Targets" in page and "Real-time capacity" in page
    saved = json.loads((tmp_path / "bench" / report.SERVING_JSON).read_text())
    servers = {row["server"] for row in saved["rows"]}
    assert {"echo", "echo-model", "ours"} <= servers
    assert all(row["errors"] == 0 for row in saved["rows"]), saved["rows"]
    # The echo and ours are taken in turn, and each row pools its server's windows.
    latency = [row for row in saved["rows"] if row["group"] == "latency"]
    assert latency and all(row["rounds"] == 2 and row["calls"] > 0 for row in latency)
    assert {"ours unary", "ours stream", "echo unary", "echo stream"} <= set(saved["capacity"])
    assert saved["memory"]["samples"]
    # The overload section: both servers, each call counted once, the calls after it answered.
    # Not "no other status": at thousands of calls a second gRPC can end some CANCELLED before
    # they reach the server's handler (tests/test_server_faults.py checks the statuses).
    assert "### Overload" in page
    runs = saved["overload"]["runs"]
    assert set(runs) == {"bounded", "unbounded"}
    for run in runs.values():
        assert run["sent"] == len(run["calls"]) > 0
        assert run["answered"] + run["refused"] + sum(run["other"].values()) == run["sent"]
        assert run["recovered"] and len(run["recovery"]) == overload.RECOVERY_CALLS
    assert runs["unbounded"]["refused"] == 0  # the queue no load here reaches refuses nothing
    # The burst: both servers, every call answered or shed, the next one answered.
    assert "### A burst past gRPC's intake" in page
    bursts = saved["burst"]["servers"]
    assert set(bursts) == {"echo", "ours"}
    for row in bursts.values():
        assert row["sent"] == saved["burst"]["calls"] == row["answered"] + row["shed"]
        assert row["next_call"] == "OK"
    # Window by window: the three servers, a p50 for each round, and the section that reads them.
    windows = [row for row in saved["rows"] if row["group"] == "windows"]
    assert {(row["server"], row["method"]) for row in windows} == {
        (s, m) for s in ("echo", "echo-model", "ours") for m in ("unary", "stream")
    }
    assert all(len(row["window_p50_ms"]) == 2 for row in windows)
    assert "### Window by window" in page and "of 2 |" in page
    throughput = {row["server"] for row in saved["rows"] if row["group"] == "throughput"}
    assert throughput == {"echo", "echo-model", "ours"}
    act = next(t for t in saved["targets"] if t["target"].startswith("Act p50"))
    assert act["model_ratio"] > 0 and "short windows within the bound" in page
    pngs = ("serving-latency.png", "serving-throughput.png", "serving-memory.png")
    for png in (*pngs, "serving-overload.png", "serving-windows.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"({png})" in page


def test_window_ratios_pair_each_window_with_the_echos_of_its_round() -> None:
    def row(server: str, p50s: list[float]) -> dict[str, object]:
        return {"group": "windows", "method": "unary", "server": server, "window_p50_ms": p50s}

    rows = [row("echo", [0.5, 0.4]), row("echo-model", [0.55, 0.6]), row("ours", [0.6, 0.44])]
    ratios = report_windows.window_ratios(rows, "unary")
    assert ratios == {"echo-model": approx([1.1, 1.5]), "ours": approx([1.2, 1.1])}
    assert report_windows.window_ratios(rows, "stream") == {}  # no such rows: no section


def test_memory_growth_is_read_from_the_ends_not_from_two_samples() -> None:
    # Flat RSS moving by up to 1 MiB between samples, whose first sample fell on a low and
    # last on a high (run 9's did): 1.2 MiB last-minus-first.
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 120)
    flat = [(t / 2, 116.8 + noise[t]) for t in range(120)]
    flat[0], flat[-1] = (0.0, 116.2), (59.5, 117.4)
    assert abs(under_load.rss_growth(flat, 60.0)) < 0.3
    # A steady leak of 1 MiB a minute shows as most of that minute's MiB.
    leak = [(t / 2, 100.0 + t / 120) for t in range(120)]
    assert 0.7 < under_load.rss_growth(leak, 60.0) < 1.0


def test_the_echo_with_the_model_answers_the_models_mean_actions(
    model_path: Path, reference: Reference
) -> None:
    # The row between the echo and ours is only a floor if it really runs the model.
    obs = observations(5)
    echo = servers.echo("model", model=model_path)
    with echo, grpc.insecure_channel(echo.wait()) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        reply = stub.Act(pb.ActRequest(obs=obs.ravel().tolist()), timeout=10)
        steps = list(stub.StreamAct(iter([pb.StreamActRequest(obs=obs.ravel().tolist())])))
    mean = np.clip(reference(obs)[0].ravel(), -2.0, 2.0)
    np.testing.assert_allclose(reply.actions, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(steps[0].actions, mean, rtol=1e-5, atol=1e-6)
