"""Bearer tokens as both sides read them. A token file holds one token per line, blank lines and
lines starting with # skipped: the server's --auth-token-file (all of them are valid) and the
client's --token-file (it sends the first). A token travels as gRPC metadata, so it is visible
ASCII without spaces."""

from __future__ import annotations

from pathlib import Path


class TokenFileError(ValueError):
    """A token file that cannot be read, or is not text; the message names it."""


def parse_tokens(text: str) -> list[tuple[int, str]]:
    """The tokens of a token file's text, each with its line number."""
    lines = ((number, line.strip()) for number, line in enumerate(text.splitlines(), 1))
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def read_tokens(path: Path) -> list[str]:
    """The tokens of the file at `path`, in order; TokenFileError if it cannot be read, or if a
    line is no token a client could send (the server would count it and no call would match)."""
    if path.is_dir():
        raise TokenFileError(f"{path}: is a directory")
    if path.exists() and not path.is_file():
        # A pipe put in its place would block the reader (a server's event loop: every call
        # and signal) until something writes to it.
        raise TokenFileError(f"{path}: not a regular file")
    try:
        # utf-8-sig: a byte order mark (Notepad writes one) would otherwise be part of the
        # first token, which then matches nothing while the server counts it as loaded.
        numbered = parse_tokens(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise TokenFileError(f"{path}: not a text file, not UTF-8 text") from None
    except OSError as exc:
        raise TokenFileError(f"{path}: {exc.strerror}") from None
    for number, token in numbered:
        problem = token_problem(token)
        if problem:  # the line number, never the token: it may be a secret with a typo
            raise TokenFileError(f"{path}: line {number}: a token {problem}")
    return [token for _, token in numbered]


def token_problem(token: str) -> str | None:
    """Why `token` cannot be a bearer token in gRPC metadata (nothing when it can)."""
    if not token:
        return "is empty"
    if not all("!" <= char <= "~" for char in token):
        return "must be visible ASCII characters without spaces"
    return None
