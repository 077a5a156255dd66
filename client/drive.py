"""Drive local Pendulum-v1 environments with a remote policy: one call per step for all of them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from client.policy_client import PolicyClient
from client.wire import Mode
from swingup.episodes import EVAL_SEED, EpisodeReport, Policy, run_episodes


@contextlib.contextmanager
def remote_policy(
    client: PolicyClient, mode: Mode, seed: int | None, stream: bool
) -> Iterator[Policy]:
    """The server as a policy function: a stream session's steps, or one Act call per step.

    Act calls with a seed draw each call's seed from a generator seeded once, so the noise is
    reproducible yet differs from step to step.
    """
    if stream:
        # The client's per-call deadline bounds each step: a frozen server fails the run.
        with client.stream(mode, seed, step_timeout=client.timeout) as session:
            yield session.act
        return
    seeds = np.random.default_rng(seed) if seed is not None and mode == "sample" else None

    def act(obs: np.ndarray) -> np.ndarray:
        step_seed = None if seeds is None else int(seeds.integers(2**63))
        return client.act(obs, mode, step_seed)

    yield act


def drive(
    client: PolicyClient,
    pendulums: int,
    episodes: int,
    *,
    mode: Mode = "mean",
    seed: int | None = None,
    stream: bool = False,
    gif: Path | None = None,
    on_returns: Callable[[list[float]], None] | None = None,
) -> EpisodeReport:
    """Run `episodes` episodes on each of `pendulums` environments stepped in lockstep.

    Episode i starts from seed + i (the evaluation seeds without a seed). `on_returns` hears
    the returns of each round of episodes as it ends; a GIF that could not be written is the
    report's `gif_error`.
    """
    with remote_policy(client, mode, seed, stream) as policy:
        return run_episodes(
            policy,
            pendulums * episodes,
            pendulums=pendulums,
            seed=EVAL_SEED if seed is None else seed,
            gif=gif,
            on_returns=on_returns,
        )


def summary(report: EpisodeReport) -> dict[str, Any]:
    """The figures of a run, as the last line of `swingup-client drive --json` prints them."""
    latencies_ms = np.asarray(report.policy_latencies_s) * 1e3
    return {
        "episodes": len(report.returns),
        "mean": report.mean,
        "std": report.std,
        "returns": report.returns,
        "steps_per_s": report.steps / report.wall_s if report.wall_s > 0 else 0.0,
        "latency_p50_ms": float(np.percentile(latencies_ms, 50)),
        "latency_p99_ms": float(np.percentile(latencies_ms, 99)),
    }
