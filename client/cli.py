"""`swingup-client`: drive local pendulums with a remote policy, or ask a server about itself.

Every flag may also be set by a SWINGUP_CLIENT_* environment variable; the bearer token comes
from --token-file or, without it, from the SWINGUP_TOKEN variable.
"""

from __future__ import annotations

import os

# Before gRPC loads: its core logs INFO lines of its own ("Handshake failed ..." before our
# one-line error for a server we do not trust). Errors still print; the user's own setting wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from swingup.interrupts import exit_on_interrupt

# Ctrl-C while the program still imports (gRPC, numpy, protobuf: a few hundred ms) is an
# interrupt like any other, not a traceback.
with exit_on_interrupt("swingup-client"):
    import json
    from collections.abc import Callable, Sequence
    from dataclasses import dataclass
    from pathlib import Path
    from typing import Any, TypeVar

    from google.protobuf import json_format

    from client import channel, wire
    from client.credentials import Credentials, CredentialsError, read_token
    from client.drive import drive, summary
    from client.errors import PolicyError
    from client.policy_client import PolicyClient
    from client.wire import Mode
    from swingup import atomic
    from swingup.cli import EXIT_FAILED, Failed, UsageError, at_least_one, option, run
    from swingup.tokens import token_problem

ENV_PREFIX = "SWINGUP_CLIENT_"
TOKEN_VARIABLE = "SWINGUP_TOKEN"
PROG = "swingup-client"
# A server takes at most 65536 observations a call (its --max-batch bound); more pendulums
# could never be served, and building their environments alone takes minutes.
MAX_PENDULUMS = 65_536

C = TypeVar("C")


@dataclass
class Connection:
    """How to reach the server: its address, TLS and the bearer token."""

    target: str = option("127.0.0.1:50051", "the policy server, host:port")
    tls: bool = option(False, "use TLS, trusting the system's CAs (implied by --tls-ca)")
    tls_ca: Path | None = option(None, "use TLS, trusting the CAs in this PEM file")
    tls_cert: Path | None = option(None, "mutual TLS: this client's PEM certificate")
    tls_key: Path | None = option(None, "mutual TLS: the PEM private key of --tls-cert")
    token_file: Path | None = option(
        None,
        f"send the bearer token in this file: its first line that is not blank or a # comment "
        f"(none: ${TOKEN_VARIABLE})",
    )
    keepalive_s: float = option(
        channel.KEEPALIVE_S,
        "ping each server connection this often while calls are open, and drop one that does "
        f"not answer within as long: a hung replica leaves the rotation (>= "
        f"{channel.MIN_KEEPALIVE_S:g}; 0: off, for a proxy that refuses pings)",
    )

    def credentials(self) -> Credentials:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        for flag, path in (
            ("--tls-ca", self.tls_ca),
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--token-file", self.token_file),
        ):
            if path is not None:
                _check_file(flag, path)
        try:
            token = self._token()
            return Credentials(
                tls=self.tls, ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, token=token
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def _token(self) -> str | None:
        if self.token_file is not None:
            try:
                return read_token(self.token_file)
            except ValueError as exc:
                raise UsageError(f"--token-file {exc}") from None
        token = os.environ.get(TOKEN_VARIABLE) or None
        problem = None if token is None else token_problem(token)
        if problem:
            raise UsageError(f"${TOKEN_VARIABLE}: the token {problem}")
        return token

    def client(self, timeout: float) -> PolicyClient:
        problem = channel.target_problem(self.target)
        if problem:
            raise UsageError(f"--target {self.target!r}: {problem}")
        keepalive = self.keepalive_s or None
        problem = None if keepalive is None else channel.keepalive_problem(keepalive)
        if problem:
            raise UsageError(f"--keepalive-s {self.keepalive_s:g}: {problem} (0: off)")
        credentials = self.credentials()
        try:
            return PolicyClient(
                self.target, timeout=timeout, credentials=credentials, keepalive_s=keepalive
            )
        except CredentialsError as exc:  # named by our flags, as every file mistake is
            flags = {"ca": ("--tls-ca", self.tls_ca)}
            flags |= {"cert": ("--tls-cert", self.tls_cert), "key": ("--tls-key", self.tls_key)}
            named = " / ".join(f"{flags[f][0]} {flags[f][1]}" for f in exc.fields)
            raise UsageError(f"{named}: {exc.problem}") from None


def _check_file(flag: str, path: Path) -> None:
    problem = atomic.unreadable(path)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}")


@dataclass
class DriveConfig(Connection):
    pendulums: int = option(1, "environments stepped in lockstep, all served by one call per step")
    episodes: int = option(1, "episodes per pendulum")
    mode: Mode = option("mean", "mean: the policy's mean action; sample: a clipped Gaussian draw")
    seed: int | None = option(
        None, "episode i starts from seed+i, and sampling is seeded (none: evaluation seeds)"
    )
    stream: bool = option(False, "one StreamAct session instead of an Act call per step")
    gif: Path | None = option(None, "render pendulum 0's first episode to this GIF")
    json: bool = option(False, "print a JSON summary as the last line")
    timeout: float = option(5.0, "deadline of each call (with --stream: of each step), in seconds")


@dataclass
class InfoConfig(Connection):
    timeout: float = option(5.0, "deadline of the call, in seconds")


@dataclass
class HealthConfig(Connection):
    service: str = option("", "service to check ('' is the whole server)")
    timeout: float = option(5.0, "deadline of the call, in seconds")


def _check_timeout(timeout: float) -> None:
    problem = channel.timeout_problem(timeout)
    if problem:
        raise UsageError(f"--timeout {timeout:g}: {problem}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_output(flag: str, path: Path) -> None:
    """Refuse an output path that cannot be written before the work that fills it, not after."""
    problem = atomic.unwritable(path)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}")


def _check_batch(client: PolicyClient, pendulums: int) -> None:
    """Refuse more pendulums than the server takes in a call before building their
    environments (which takes long and much memory for many), not at the first step."""
    if pendulums == 1:  # every server takes one
        return
    max_batch = client.info().batching.max_batch
    if max_batch and pendulums > max_batch:
        raise UsageError(
            f"--pendulums {pendulums}: the server takes at most {max_batch} observations a "
            "call (its --max-batch)"
        )


def drive_command(config: DriveConfig) -> int:
    _check_timeout(config.timeout)
    at_least_one(("--pendulums", config.pendulums), ("--episodes", config.episodes))
    if config.pendulums > MAX_PENDULUMS:
        raise UsageError(f"--pendulums {config.pendulums}: at most {MAX_PENDULUMS}")
    problem = None if config.seed is None else wire.seed_problem(config.seed)
    if problem:
        raise UsageError(f"--seed {config.seed}: {problem}")
    if config.gif is not None:
        _check_output("--gif", config.gif)
    done = 0

    def print_returns(returns: list[float]) -> None:
        # As each round ends: a failure in a later round does not hide these.
        nonlocal done
        for value in returns:
            done += 1
            print(f"episode {done}: return {value:.2f}", flush=True)

    with config.client(config.timeout) as client:
        _check_batch(client, config.pendulums)
        report = drive(
            client,
            config.pendulums,
            config.episodes,
            mode=config.mode,
            seed=config.seed,
            stream=config.stream,
            gif=config.gif,
            on_returns=print_returns,
        )
    figures = summary(report)
    print(
        f"{_count(figures['episodes'], 'episode')} on {_count(config.pendulums, 'pendulum')}, "
        f"{config.mode} actions"
        f"{' over a stream' if config.stream else ''}: mean return {figures['mean']:.2f} "
        f"± {figures['std']:.2f}; {figures['steps_per_s']:.0f} steps/s; policy latency "
        f"p50 {figures['latency_p50_ms']:.3f} ms, p99 {figures['latency_p99_ms']:.3f} ms"
    )
    if config.gif is not None and report.gif_error is None:
        print(f"GIF of pendulum 0's first episode: {config.gif}")
    if config.json:
        print(json.dumps(figures))
    if report.gif_error is not None:  # the figures above stand; the GIF alone is lost
        raise Failed(f"--gif {config.gif}: {report.gif_error}")
    return 0


def info_command(config: InfoConfig) -> int:
    _check_timeout(config.timeout)
    with config.client(config.timeout) as client:
        info = client.info()
    print(json_format.MessageToJson(info, preserving_proto_field_name=True, indent=2))
    return 0


def reload_command(config: InfoConfig) -> int:
    _check_timeout(config.timeout)
    with config.client(config.timeout) as client:
        reply = client.reload_model()
    print(json_format.MessageToJson(reply, preserving_proto_field_name=True, indent=2))
    return EXIT_FAILED if reply.refused or reply.still_refused else 0


def versions_command(config: InfoConfig) -> int:
    _check_timeout(config.timeout)
    with config.client(config.timeout) as client:
        reply = client.list_versions()
    print(json_format.MessageToJson(reply, preserving_proto_field_name=True, indent=2))
    return 0


def health_command(config: HealthConfig) -> int:
    _check_timeout(config.timeout)
    with config.client(config.timeout) as client:
        status = client.health(config.service)
    print(status)
    return 0 if status == "SERVING" else EXIT_FAILED


COMMANDS: dict[str, tuple[type, Callable[[Any], int], str]] = {
    "drive": (DriveConfig, (drive_command), "drive local pendulums with the server"),
    "info": (InfoConfig, (info_command), "print the served model's description"),
    "health": (HealthConfig, (health_command), "print the server's health status"),
    "reload": (
        InfoConfig,
        (reload_command),
        "reload the server's model now (AdminService.ReloadModel); exit 1 if a version above the "
        "one serving is refused (now or before)",
    ),
    "versions": (
        InfoConfig,
        (versions_command),
        "list the model versions the server sees (AdminService.ListVersions)",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    # A failed call, or a file the disk would not write: one line, exit 1.
    return run(PROG, __doc__ or "", COMMANDS, argv, ENV_PREFIX, failures=(PolicyError, OSError))
