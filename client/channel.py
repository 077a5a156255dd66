"""How a client's channel behaves: gRPC's service config (retries, round robin, health-checked
replicas), keepalive and reconnect backoff, and the checks of a target and a deadline."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from swingup import contract
from swingup.v1 import policy_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name

# gRPC retries UNAVAILABLE itself, with exponential backoff, when the service config says so;
# a server that is restarting or not yet up is then invisible to a caller within its deadline.
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_CONFIG = {
    "methodConfig": [{"name": [{"service": SERVICE_NAME}], "retryPolicy": RETRY_POLICY}],
    # With a name that resolves to many servers (a headless Kubernetes Service), spread calls
    # over all of them instead of pinning every call to the first; one address is unaffected.
    "loadBalancingConfig": [{"round_robin": {}}],
    # Watch each server's health (grpc.health.v1 Watch) and pick only those SERVING: a replica
    # in its lame duck period (`--lame-duck-s`) gets no new calls, so stopping it loses none.
    # A server without the health service counts as healthy.
    "healthCheckConfig": {"serviceName": SERVICE_NAME},
}


# The longest deadline a caller may ask for: gRPC turns a deadline past ~1e10 s (or inf) into
# one already passed, so every call would fail DEADLINE_EXCEEDED; 11 days is beyond any control
# loop's need.
MAX_TIMEOUT_S = 1e6

# While calls are open, ping each connection this often and drop it when a ping goes unanswered
# as long: a replica that hangs without closing (frozen, its host gone quiet) keeps its TCP
# connection up for hours, and round robin would send it every other call until then. Dropped,
# its calls fail UNAVAILABLE (retried on another replica) and it is skipped until it answers a
# new handshake. Our server accepts pings this often (contract.MIN_PING_INTERVAL_S); more often,
# gRPC servers answer GOAWAY.
# The drop comes within twice the interval: at 2 s, before the default 5 s deadline of the calls
# and stream steps waiting on the hung replica, so they are retried or moved instead of failing
# (at 10 s each caller lost one or two 5 s deadlines to it; tests/test_replica_faults.py).
KEEPALIVE_S = 2.0
MIN_KEEPALIVE_S = contract.MIN_PING_INTERVAL_S

# A replica that went away is dialled again with exponential backoff, by default up to 120 s
# apart: one down for 40 s got calls again only 6-25 s after it was back up (measured), and with
# the whole fleet down every call failed until then. Redialling at most this far apart costs a
# refused connection; a restarted replica is back in the rotation within about this long.
MAX_RECONNECT_BACKOFF_S = 2.0


def keepalive_problem(keepalive_s: float) -> str | None:
    """Why `keepalive_s` is no ping interval a server takes (nothing when it is one)."""
    if not (math.isfinite(keepalive_s) and MIN_KEEPALIVE_S <= keepalive_s <= MAX_TIMEOUT_S):
        return f"must be a number of seconds >= {MIN_KEEPALIVE_S:g} and <= {MAX_TIMEOUT_S:.0f}"
    return None


def channel_options(keepalive_s: float | None = KEEPALIVE_S) -> list[tuple[str, Any]]:
    """The service config (retries, round robin, health), the reconnect backoff's bound and
    keepalive (None: no pings)."""
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_reconnect_backoff_ms", round(MAX_RECONNECT_BACKOFF_S * 1000)),
    ]
    if keepalive_s is not None:
        problem = keepalive_problem(keepalive_s)
        if problem:
            raise ValueError(f"keepalive_s {keepalive_s!r}: {problem}")
        ms = round(keepalive_s * 1000)
        options += [
            ("grpc.keepalive_time_ms", ms),
            ("grpc.keepalive_timeout_ms", ms),
            # gRPC core waits for any ping's ack this long, by default a minute past the
            # keepalive timeout: without it a hung server is found after 60 s more.
            ("grpc.http2.ping_timeout_ms", ms),
        ]
    return options


def timeout_problem(timeout: float) -> str | None:
    """Why `timeout` is no deadline gRPC keeps (nothing when it is one)."""
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_S):
        return f"must be a number of seconds > 0 and <= {MAX_TIMEOUT_S:.0f}"
    return None


def check_timeout(name: str, timeout: float | None) -> None:
    """ValueError naming the parameter unless `timeout` is None (no deadline) or one gRPC keeps."""
    problem = None if timeout is None else timeout_problem(timeout)
    if problem:
        raise ValueError(f"{name} {timeout!r}: {problem}")


_PORT = re.compile(r":(\d+)$")


def target_problem(target: str) -> str | None:
    """Why `target` is no address gRPC can reach (nothing when it may be one): gRPC takes an
    empty one, and wraps a port past 65535 around (99999 dials 34463)."""
    if not target.strip():
        return "is empty"
    if target.startswith(("unix:", "unix-abstract:", "vsock:")):
        return None
    addresses = target.split(":", 1)[1] if target.startswith(("ipv4:", "ipv6:")) else target
    for address in addresses.split(","):
        port = _PORT.search(address)
        if port and int(port.group(1)) > 65535:
            return f"port {port.group(1)} is not between 0 and 65535"
    return None


def check_target(target: str) -> None:
    problem = target_problem(target)
    if problem:
        raise ValueError(f"target {target!r}: {problem}")
