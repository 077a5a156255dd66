"""Binding the serving address before gRPC does: gRPC reports a failure to bind with a log line
of its core (`E... add_port.cc] Failed to add port`) and an exception that does not say why, so
the server tries the address itself first and says why in one line."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from server.config import address
from swingup.cli import UsageError


def check_bindable(host: str, port: int) -> None:
    """Refuse what gRPC would fail to bind: an unknown host, an address not on this machine, a
    port in use. Like gRPC, bind every address the host resolves to; one that binds will do."""
    where = address(host, port)
    try:
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {where}: {exc.strerror}") from None
    errors: list[str] = []
    for family, kind, proto, _, sockaddr in resolved:
        with socket.socket(family, kind, proto) as sock:
            # As gRPC does: a port whose old connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
                return
            except OSError as exc:
                errors.append(exc.strerror or str(exc))
    raise UsageError(f"cannot listen on {where}: {errors[0] if errors else 'no address'}")


@contextlib.contextmanager
def reserved(host: str, port: int) -> Iterator[int]:
    """Hold host:port (choosing one for port 0) with SO_REUSEPORT while `--workers` bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {address(host, port)}: {exc.strerror}") from None
        yield int(sock.getsockname()[1])
