"""Bearer tokens: `--auth-token-file`, checked by an interceptor on every service but health.

The file holds one token per line (swingup.tokens: blank lines and # comments skipped). It is
read again when it changes (the server polls it, and SIGHUP rereads it at once), so a token is
added or revoked without a restart. Only SHA-256 digests of the tokens are kept; a presented
token is hashed and compared with every digest in constant time, and no token is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from server import interceptors
from server.errors import Unauthenticated
from swingup.tokens import TokenFileError, read_tokens

log = logging.getLogger("swingup.serve")

# Calls that need no token: health stays open for load balancers' and kubelet's probes.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
REFUSAL = "missing or invalid bearer token (metadata 'authorization: Bearer <token>')"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes secret swaps its ..data link
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TokenFile:
    """The tokens of one file, read again whenever its modification time, size or inode change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digests: list[bytes] = []
        self._stamp: tuple[int, int, int] | None = None
        self._reported: tuple[object, ...] | None = None

    def load(self) -> int:
        """Read the file now; the number of tokens. TokenFileError if it cannot be read or is
        not text."""
        stamp = _stamp(self.path)
        tokens = read_tokens(self.path)
        self._digests = [_digest(token) for token in tokens]
        self._stamp = stamp
        return len(tokens)

    def refresh(self, force: bool = False) -> None:
        """Reread the file if it changed (or if `force`). An unreadable file keeps the tokens
        that were read last: a half-replaced secret must not lock everyone out, nor in."""
        stamp = _stamp(self.path)
        if stamp == self._stamp and not force:
            return
        try:
            count = self.load()
        except TokenFileError as exc:
            self._stamp = stamp
            self.report(
                logging.WARNING,
                "auth: %s; keeping the %d token(s) read before",
                exc,
                len(self._digests),
            )
            return
        if count == 0:
            self.report(
                logging.WARNING,
                "auth: %s holds no token: every call but health is refused",
                self.path,
            )
        else:
            self.report(logging.INFO, "auth: %d token(s) loaded from %s", count, self.path)

    def report(self, level: int, message: str, *args: object) -> None:
        """Log what a read found, unless the same was said of this very version of the file:
        SIGHUP rereads the file at once, and if the poller had read that version first, the
        reread would say it again."""
        said = (self._stamp, tuple(self._digests), message % args)
        if said != self._reported:
            self._reported = said
            log.log(level, message, *args)

    def accepts(self, token: str) -> bool:
        """Whether `token` is one of the file's, in time independent of which or how similar."""
        digest = _digest(token)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, digest)
        return found


def bearer(metadata: Sequence[Any] | None) -> str | None:
    """The token of the call's `authorization: Bearer <token>` metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class TokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuse every call without a valid token with UNAUTHENTICATED, before its request is read;
    health calls pass (OPEN_PREFIXES)."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    async def intercept_service(  # type: ignore[override]  # gRPC takes None: no such method
        self, continuation: interceptors.Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> interceptors.Handler | None:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        token = bearer(handler_call_details.invocation_metadata)
        if token is not None and self.tokens.accepts(token):
            return await continuation(handler_call_details)
        # Unknown methods are refused the same way: no token, no map of the server.
        return interceptors.refusing(
            await continuation(handler_call_details), Unauthenticated(REFUSAL)
        )
