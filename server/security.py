"""TLS credentials, connection limits and the interceptors a config asks for.

See the README's security model: TLS or mutual TLS on the port (`--tls-cert`, `--tls-key`,
`--tls-client-ca`), bearer tokens on every call but health (`server.auth`), message size limits,
and timeouts so that a silent or slow peer cannot hold a connection or a stream forever.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from server.config import ServeConfig
from swingup import contract
from swingup.cli import UsageError

# Ping an idle client's connection this often, and drop it if the ping is not answered within
# KEEPALIVE_TIMEOUT_MS: a peer that vanished without closing frees its connection.
KEEPALIVE_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
# Clients may ping this often (PolicyClient's keepalive, to find a hung replica): gRPC's default
# of 5 minutes answers any faster pinger with GOAWAY "too_many_pings" after two pings. Half the
# clients' floor: a ping a little early is no strike.
MIN_PING_INTERVAL_MS = round(contract.MIN_PING_INTERVAL_S * 1000 / 2)


def channel_options(config: ServeConfig, reuse_port: bool) -> list[tuple[str, Any]]:
    idle_ms = max(1, round(config.idle_timeout_s * 1000))
    options: list[tuple[str, Any]] = [
        # Without SO_REUSEPORT (gRPC sets it by default on Linux) a second server on a busy
        # port fails to bind instead of silently sharing it.
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.server_handshake_timeout_ms", idle_ms),
        ("grpc.max_connection_idle_ms", idle_ms),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),  # else a minute, whatever the above
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ]
    if config.max_connection_age_s:
        options.append(("grpc.max_connection_age_ms", round(config.max_connection_age_s * 1000)))
    return options


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """The port's TLS credentials (None: plaintext); a bad file is a one-line usage error."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert = _read("--tls-cert", config.tls_cert)
    key = _read("--tls-key", config.tls_key)
    # gRPC would accept unusable PEM here and fail every handshake later; ssl says why now.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key, password=_no_password)
    except _PasswordWanted:
        raise _encrypted(config.tls_key) from None
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(
            f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: not a matching PEM "
            f"certificate and key ({exc})"
        ) from None
    client_ca = None
    if config.tls_client_ca is not None:
        client_ca = _read("--tls-client-ca", config.tls_client_ca)
        try:
            context.load_verify_locations(config.tls_client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(
                f"--tls-client-ca {config.tls_client_ca}: not a PEM CA bundle ({exc})"
            ) from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class _PasswordWanted(Exception):
    """OpenSSL asked for a pass phrase: the key is encrypted."""


def _no_password() -> str:
    # Without a callback OpenSSL would ask on the terminal (a server has no one there) or, with
    # no terminal, fail saying "Invalid argument".
    raise _PasswordWanted


def _encrypted(key: Path) -> UsageError:
    return UsageError(
        f"--tls-key {key}: encrypted private keys are not supported: decrypt it, e.g. "
        f"openssl pkey -in {key} -out {key}.plain"
    )


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read ({exc.strerror})") from None
