"""`swingup-client`: drive local pendulums with a remote policy, or ask a server about itself.

Every flag may also be set by a SWINGUP_CLIENT_* environment variable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format

from client.drive import drive, summary
from client.errors import PolicyError
from client.policy_client import PolicyClient
from client.wire import Mode
from swingup.cli import UsageError, option, run

ENV_PREFIX = "SWINGUP_CLIENT_"
PROG = "swingup-client"
EXIT_FAILED = 1

C = TypeVar("C")


@dataclass
class DriveConfig:
    target: str = option("127.0.0.1:50051", "the policy server, host:port")
    pendulums: int = option(1, "environments stepped in lockstep, all served by one call per step")
    episodes: int = option(1, "episodes per pendulum")
    mode: Mode = option("mean", "mean: the policy's mean action; sample: a clipped Gaussian draw")
    seed: int | None = option(
        None, "episode i starts from seed+i, and sampling is seeded (none: evaluation seeds)"
    )
    stream: bool = option(False, "one StreamAct session instead of an Act call per step")
    gif: Path | None = option(None, "render pendulum 0's first episode to this GIF")
    json: bool = option(False, "print a JSON summary as the last line")
    timeout: float = option(5.0, "deadline of each call, in seconds")


@dataclass
class InfoConfig:
    target: str = option("127.0.0.1:50051", "the policy server, host:port")
    timeout: float = option(5.0, "deadline of the call, in seconds")


@dataclass
class HealthConfig:
    target: str = option("127.0.0.1:50051", "the policy server, host:port")
    service: str = option("", "service to check ('' is the whole server)")
    timeout: float = option(5.0, "deadline of the call, in seconds")


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise UsageError(f"--timeout {timeout}: must be > 0")


def drive_command(config: DriveConfig) -> int:
    _check_timeout(config.timeout)
    if config.pendulums < 1 or config.episodes < 1:
        raise UsageError("--pendulums and --episodes must be >= 1")
    if config.seed is not None and not 0 <= config.seed < 2**63:
        raise UsageError(f"--seed {config.seed}: must be between 0 and 2**63 - 1")
    with PolicyClient(config.target, timeout=config.timeout) as client:
        report = drive(
            client,
            config.pendulums,
            config.episodes,
            mode=config.mode,
            seed=config.seed,
            stream=config.stream,
            gif=config.gif,
        )
    figures = summary(report)
    for i, value in enumerate(report.returns):
        print(f"episode {i + 1}: return {value:.2f}")
    print(
        f"{figures['episodes']} episodes on {config.pendulums} pendulum(s), {config.mode} actions"
        f"{' over a stream' if config.stream else ''}: mean return {figures['mean']:.2f} "
        f"± {figures['std']:.2f}; {figures['steps_per_s']:.0f} steps/s; policy latency "
        f"p50 {figures['latency_p50_ms']:.3f} ms, p99 {figures['latency_p99_ms']:.3f} ms"
    )
    if config.gif is not None:
        print(f"GIF of pendulum 0's first episode: {config.gif}")
    if config.json:
        print(json.dumps(figures))
    return 0


def info_command(config: InfoConfig) -> int:
    _check_timeout(config.timeout)
    with PolicyClient(config.target, timeout=config.timeout) as client:
        info = client.info()
    print(json_format.MessageToJson(info, preserving_proto_field_name=True, indent=2))
    return 0


def health_command(config: HealthConfig) -> int:
    _check_timeout(config.timeout)
    with PolicyClient(config.target, timeout=config.timeout) as client:
        status = client.health(config.service)
    print(status)
    return 0 if status == "SERVING" else EXIT_FAILED


def _reporting(handler: Callable[[C], int]) -> Callable[[C], int]:
    """A failed call or file write is one line on stderr and exit 1, never a traceback."""

    def wrapped(config: C) -> int:
        try:
            return handler(config)
        except PolicyError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as exc:  # the GIF could not be written
            print(f"{PROG}: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
            return EXIT_FAILED

    return wrapped


COMMANDS: dict[str, tuple[type, Callable[[Any], int], str]] = {
    "drive": (DriveConfig, _reporting(drive_command), "drive local pendulums with the server"),
    "info": (InfoConfig, _reporting(info_command), "print the served model's description"),
    "health": (HealthConfig, _reporting(health_command), "print the server's health status"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, __doc__ or "", COMMANDS, argv, ENV_PREFIX)
