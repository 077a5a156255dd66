"""What the two clients share: channel options with the retry policy, and message conversions."""

from __future__ import annotations

import json
import math
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np

from client.errors import PolicyError
from swingup import contract
from swingup.tokens import read_tokens, token_problem
from swingup.v1 import policy_pb2 as pb

Mode = Literal["mean", "sample"]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name

_ITERATE_BELOW = 96  # values: past this, np.array reads a repeated field faster than iterating
_MODES: dict[str, pb.Mode.ValueType] = {"mean": pb.MODE_MEAN, "sample": pb.MODE_SAMPLE}

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

# How a server in its lame duck begins the message that ends a stream (server.streams.Leaving).
SERVER_STOPPING = "this server is stopping"


# While calls are open, ping each connection this often and drop it when a ping goes unanswered
# as long: a replica that hangs without closing (frozen, its host gone quiet) keeps its TCP
# connection up for hours, and round robin would send it every other call until then. Dropped,
# its calls fail UNAVAILABLE (retried on another replica) and it is skipped until it answers a
# new handshake. Our server accepts pings down to MIN_KEEPALIVE_S apart
# (server.security.MIN_PING_INTERVAL_MS); more often, gRPC servers answer GOAWAY.
# The drop comes within twice the interval: at 2 s, before the default 5 s deadline of the calls
# and stream steps waiting on the hung replica, so they are retried or moved instead of failing
# (at 10 s each caller lost one or two 5 s deadlines to it; tests/test_replica_faults.py).
KEEPALIVE_S = 2.0
MIN_KEEPALIVE_S = 1.0

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


@dataclass(frozen=True)
class Credentials:
    """How a client checks the server and proves itself: TLS (with `ca` as the roots, or the
    system's), a client certificate for mutual TLS, and a bearer token sent with every call."""

    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None:
            problem = token_problem(self.token)
            if problem:
                raise ValueError(f"token: {problem}")

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return None if self.token is None else (("authorization", f"Bearer {self.token}"),)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC's TLS credentials, the files checked first: gRPC takes any bytes and only
        fails at the handshake, logging from its core and reporting UNAVAILABLE."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both its certificate and its key")
        self._check_files()
        return grpc.ssl_channel_credentials(
            root_certificates=None if self.ca is None else self.ca.read_bytes(),
            private_key=None if self.key is None else self.key.read_bytes(),
            certificate_chain=None if self.cert is None else self.cert.read_bytes(),
        )

    def _check_files(self) -> None:
        """CredentialsError unless `ca` holds certificates and `cert` matches `key`."""
        if self.ca is not None:
            problem = ca_problem(self.ca)
            if problem:
                raise CredentialsError(("ca",), (self.ca,), problem)
        if self.cert is not None and self.key is not None:
            problem = key_pair_problem(self.cert, self.key)
            if problem:
                raise CredentialsError(("cert", "key"), (self.cert, self.key), problem)


class CredentialsError(ValueError):
    """A TLS file that is not what it should be. The message names the files; `fields` names
    the Credentials fields they came in, so that a program can name its own flags instead."""

    def __init__(self, fields: tuple[str, ...], files: tuple[Path, ...], problem: str) -> None:
        super().__init__(f"{' and '.join(map(str, files))}: {problem}")
        self.fields = fields
        self.problem = problem


def ca_problem(ca: Path) -> str | None:
    """Why the file `ca` holds no CA certificates to trust (nothing when it does)."""
    try:
        ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        return f"not a PEM CA certificate ({_reason(exc)})"
    return None


def key_pair_problem(cert: Path, key: Path) -> str | None:
    """Why `cert` and `key` are no client certificate and its private key (nothing when they
    are)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # An encrypted key gets an empty password instead of a prompt on the terminal: gRPC
        # cannot use one either.
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        return f"not a matching PEM certificate and private key ({_reason(exc)})"
    return None


def _reason(exc: ssl.SSLError | OSError) -> str:
    """The short reason of an ssl error ("KEY_VALUES_MISMATCH"), or the OS error's."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or str(exc)


def read_token(path: Path) -> str:
    """The bearer token in a token file: its first token (swingup.tokens, as the server reads
    its --auth-token-file). ValueError naming the file."""
    tokens = read_tokens(path)
    if not tokens:
        raise ValueError(f"{path}: holds no token")
    return tokens[0]


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


# How gRPC's details say why no connection came up: nothing listening, or no address for the
# name (c-ares and the native resolver word it differently). Anything else may be TLS.
_REFUSED = "Connection refused"
_UNRESOLVED = ("errors resolving", "DNS resolution failed", "Domain name not found")
# A server that died with the connection open (a plaintext client at a TLS server sees "Socket
# closed" instead).
_RESET = "Connection reset by peer"
# A connection dropped by keepalive (the server did not answer a ping in time).
_PING_TIMEOUT = "ping timeout"


# What a call gets when gRPC core on the server cancels it unread: past ~1 000 calls waiting
# for the server to take them (grpc.server.max_pending_requests; always past 3 000), it drops
# new ones, with no more words than this. The client's own cancellations say otherwise.
SHED = "CANCELLED"


def hint(
    code: grpc.StatusCode, details: str, credentials: Credentials, timeout: float | None = None
) -> str:
    """What an UNAVAILABLE probably means, for the error message, from gRPC's details: nothing
    listening, a name that does not resolve, a server gone or hung, else a TLS mismatch.
    Nothing when a server said it is stopping (a stream's end in its lame duck,
    server.streams): one answered. gRPC's own DEADLINE_EXCEEDED ("Deadline Exceeded") gets the
    deadline that passed, and a call the server's gRPC shed unread (a bare CANCELLED) says the
    server is overloaded."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded" and timeout:
        return f" (no reply within {timeout:g} s: is the server busy, stopped or out of reach?)"
    if code == grpc.StatusCode.CANCELLED and details == SHED:
        return (
            " (the server shed the call before running it: more calls waited than it takes in, "
            "so it is overloaded; back off, send many pendulums per call or a stream, or add "
            "replicas)"
        )
    if code != grpc.StatusCode.UNAVAILABLE or details.startswith(SERVER_STOPPING):
        return ""
    if _REFUSED in details:
        return " (nothing listens at the target: is the server running, on this host and port?)"
    if any(marker in details for marker in _UNRESOLVED):
        return " (the target's host name does not resolve)"
    if _RESET in details:
        return " (the server dropped the connection: did it stop or crash?)"
    if _PING_TIMEOUT in details:
        return " (the server stopped answering keepalive pings: does it hang, or its network?)"
    if credentials.secure:
        return (
            " (no TLS handshake succeeded: is the server serving TLS with a certificate the "
            "given CA signed, for this host name, and does it want a client certificate?)"
        )
    return " (no plaintext server answered: if the server serves TLS, pass --tls-ca or --tls)"


def health_error(error: PolicyError, service: str) -> PolicyError:
    """A failed health check, with words where the health service gives none (NOT_FOUND)."""
    if error.code == grpc.StatusCode.NOT_FOUND and not error.details:
        return PolicyError(error.code, f"the server knows no service {service!r}")
    return error


def mode_value(mode: Mode) -> pb.Mode.ValueType:
    try:
        return _MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be 'mean' or 'sample', not {mode!r}") from None


def packed_obs(obs: np.ndarray) -> list[float]:
    """Observations [batch, obs_dim] as the flat list a repeated float field takes."""
    array = np.asarray(obs, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != contract.OBS_DIM:
        raise ValueError(f"obs must be [batch, {contract.OBS_DIM}], got shape {array.shape}")
    values: list[float] = array.ravel().tolist()
    return values


def actions_of(values: Any, batch: int) -> np.ndarray:
    """A reply's packed actions as float32 [batch, action_dim]."""
    count = batch * contract.ACTION_DIM
    if count <= _ITERATE_BELOW and len(values) == count:
        # np.array on a protobuf repeated field costs ~40 us of CPU right after a gRPC call
        # (measured; ~2 us on its own); iterating a small one costs a few.
        return np.fromiter(values, np.float32, count).reshape(batch, contract.ACTION_DIM)
    return np.array(values, dtype=np.float32).reshape(batch, contract.ACTION_DIM)


# The proto's seeds are uint64: the one bound of a seed, for the library and `--seed` alike.
MAX_SEED = 2**64 - 1


def seed_problem(seed: int) -> str | None:
    """Why `seed` is no seed (nothing when it is one): protobuf's own error for one outside
    uint64 says only 'Value out of range'."""
    if not 0 <= seed <= MAX_SEED:
        return "must be between 0 and 2**64 - 1"
    return None


def check_seed(seed: int | None) -> None:
    """ValueError naming the seed unless it is None or one (`seed_problem`)."""
    problem = None if seed is None else seed_problem(seed)
    if problem:
        raise ValueError(f"seed {seed}: {problem}")


def act_request(obs: np.ndarray, mode: Mode, seed: int | None) -> pb.ActRequest:
    check_seed(seed)
    return pb.ActRequest(obs=packed_obs(obs), mode=mode_value(mode), seed=seed)


def first_stream_request(
    obs: np.ndarray, mode: Mode, seed: int | None, first_step: int = 0
) -> pb.StreamActRequest:
    """A stream's first request: the session's mode and seed, and (for a session moved from
    another stream) the steps it took there."""
    return pb.StreamActRequest(
        obs=packed_obs(obs), mode=mode_value(mode), seed=seed, first_step=first_step or None
    )


def next_stream_request(obs: np.ndarray) -> pb.StreamActRequest:
    return pb.StreamActRequest(obs=packed_obs(obs))
