"""What a client proves and trusts: TLS roots, a client certificate, a bearer token, and the
checks that name a bad file before gRPC fails its handshake without a word."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from swingup.tokens import read_tokens, token_problem


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
