"""Words for gRPC's terse failures: what an UNAVAILABLE, a deadline or a shed call probably
means, added to the PolicyError a caller sees."""

from __future__ import annotations

import grpc

from client.credentials import Credentials
from client.errors import PolicyError

# How a server in its lame duck begins the message that ends a stream (server.streams.Leaving).
SERVER_STOPPING = "this server is stopping"


# How gRPC's details say why no connection came up: nothing listening, or no address for the
# name (c-ares and the native resolver word it differently). Anything else may be TLS.
_REFUSED = "Connection refused"
_UNRESOLVED = ("errors resolving", "DNS resolution failed", "Domain name not found")
# A server that died with the connection open: reset, or a stream already running removed (a
# plaintext client at a TLS server sees "Socket closed" too, but before any stream exists).
_RESET = ("Connection reset by peer", "Stream removed")
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
    if _PING_TIMEOUT in details:  # "Stream removed (ping timeout)": before the markers below
        return " (the server stopped answering keepalive pings: does it hang, or its network?)"
    if any(marker in details for marker in _RESET):
        return " (the server dropped the connection: did it stop or crash?)"
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
