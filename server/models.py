"""Where the served model comes from, and how a new version replaces it while serving.

`--model` names an ONNX file, or a directory of numbered versions (`1/model.onnx`,
`2/model.onnx`, ...: one model of a Triton model repository). The server serves the highest
version that passes every check, and a version is named by its number (a file: by the first 12
hex digits of its SHA-256). A version directory is immutable once it appears: publish a change
as the next number (`swingup-train export --triton-repo` does, atomically).

The reload protocol. A reload happens when the watcher sees the directory (or the file) change,
on SIGHUP, or on AdminService.ReloadModel. It walks the versions from the highest down: the one
serving ends the walk; any other is loaded on a thread (the loop keeps serving) and checked
(the ONNX checker, the contract's graph and metadata, a smoke inference within the contract's
bounds). The first that passes is swapped in with one assignment: requests that entered before
keep the model they entered with and finish on it; new requests and new streams get the new one;
an open stream keeps its model for its whole life. A version that fails is refused with a log
line and a metric, is not tried again until its file changes, and the walk goes on to older
versions: so the old one keeps serving, and deleting the serving version rolls back to the
highest valid one below it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.config import Device
from server.errors import ModelError
from server.runtime import Runtime

log = logging.getLogger("swingup.serve")

MODEL_FILE = "model.onnx"
SERVED_FROM_MEMORY = "its file has changed or gone since it was loaded: served from memory"

Stamp = tuple[int, int, int]  # st_mtime_ns, st_size, st_ino: changes when the file does


@dataclass(frozen=True)
class Candidate:
    """One version on disk. `version` is None for a single file (named by its hash once read)."""

    version: str | None
    path: Path
    stamp: Stamp | None  # None: the file is missing

    @property
    def label(self) -> str:
        return self.path.name if self.version is None else f"version {self.version}"


@dataclass(frozen=True)
class Refusal:
    candidate: Candidate
    reason: str


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def candidates(path: Path) -> list[Candidate]:
    """The versions `path` offers, highest first: the file itself, or the numbered directories
    of a model directory (a directory without model.onnx is a version that fails its check)."""
    if not path.is_dir():
        return [Candidate(None, path, _stamp(path))]
    try:
        names = [name for name in os.listdir(path) if _is_version(name) and (path / name).is_dir()]
    except OSError:
        return []
    found: dict[int, Candidate] = {}
    # Highest first; of two names of one number ("7" and "007") the plain one is the version.
    for name in sorted(names, key=lambda n: (int(n), n == str(int(n))), reverse=True):
        number = int(name)
        if number not in found:
            file = path / name / MODEL_FILE
            found[number] = Candidate(str(number), file, _stamp(file))
    return list(found.values())


def _repository_hint(path: Path) -> str:
    """For a Triton model repository given whole, where one model of it was meant: which."""
    try:
        models = sorted(p.name for p in path.iterdir() if p.is_dir() and candidates(p))
    except OSError:
        return ""
    if not models:
        return ""
    return f"; it holds models: pass one, as --model {path / models[0]}" + (
        f" ({', '.join(models)})" if len(models) > 1 else ""
    )


def _naming(path: Path, reason: str) -> str:
    """`reason`, saying which file it is about."""
    return reason if str(path) in reason else f"{path}: {reason}"


def _is_version(name: str) -> bool:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    return name.isascii() and name.isdigit()


@dataclass(frozen=True)
class ReloadResult:
    version: str  # serving after the reload
    previous: str
    refused: list[Refusal]  # versions refused by this reload
    still_refused: list[Refusal]  # versions above the serving one refused before, unchanged

    @property
    def changed(self) -> bool:
        return self.version != self.previous


class Reloader:
    """Loads the first model, then swaps in new versions (see the module's docstring).

    `on_swap` hears every runtime that starts serving, the first included; `on_refused` every
    version refused (not the ones refused before and unchanged since).
    """

    def __init__(
        self,
        path: Path,
        device: Device,
        on_swap: Callable[[Runtime], None],
        on_refused: Callable[[Refusal], None] = lambda refusal: None,
        threads: int = 1,
    ) -> None:
        self.path = path
        self.device = device
        self.threads = threads  # onnxruntime's intra-op threads, for every version loaded
        self.on_swap = on_swap
        self.on_refused = on_refused
        self.current: Runtime | None = None
        self._serving: Candidate | None = None
        self._refused: dict[Candidate, Refusal] = {}
        self._fingerprint: list[Candidate] = []
        self._lock = asyncio.Lock()
        self._directory = path.is_dir()

    @property
    def runtime(self) -> Runtime:
        assert self.current is not None, "load_first() comes first"
        return self.current

    def load_first(self) -> Runtime:
        """The highest valid version, at start; ModelError if there is none."""
        self._fingerprint = candidates(self.path)
        for candidate in self._fingerprint:
            try:
                runtime = self._load(candidate)
            except ModelError as exc:
                if not self.path.is_dir():  # the one file there is: its error is the server's
                    raise ModelError(_naming(candidate.path, str(exc))) from None
                self._refuse(candidate, str(exc))
                continue
            self._serve(candidate, runtime)
            return runtime
        if self.path.is_dir():
            reasons = "; ".join(f"{r.candidate.label}: {r.reason}" for r in self._refused.values())
            raise ModelError(
                f"no valid model version in {self.path} (expected N/{MODEL_FILE})"
                + (f": {reasons}" if reasons else _repository_hint(self.path))
            )
        raise ModelError(f"model file not found: {self.path}")

    def changed(self) -> bool:
        """Whether the versions on disk differ from those the last walk saw (a listing and one
        stat per version: cheap enough to poll every second)."""
        return self._on_disk() != self._fingerprint

    async def reload(self) -> ReloadResult:
        """Walk the versions now and serve the highest valid one (see the module's docstring)."""
        async with self._lock:
            previous = self.runtime.version
            found = self._on_disk()
            self._fingerprint = found
            refused: list[Refusal] = []
            still_refused: list[Refusal] = []
            for candidate in found:
                if candidate == self._serving:
                    break
                if candidate in self._refused:  # refused before and unchanged since
                    still_refused.append(self._refused[candidate])
                    continue
                try:
                    runtime = await asyncio.to_thread(self._load, candidate)
                except ModelError as exc:
                    refused.append(self._refuse(candidate, str(exc)))
                    continue
                if runtime.version == previous:
                    self._serving = candidate  # a file touched, not changed: nothing to swap
                    break
                self._serve(candidate, runtime)
                log.info("now serving model %s (was %s)", runtime.version, previous)
                break
            else:
                # A refusal of the serving file itself (a single --model file) said it already.
                serving_path = self._serving.path if self._serving is not None else None
                told = any(refusal.candidate.path == serving_path for refusal in refused)
                if self._serving not in found and not told:
                    log.warning(
                        "no valid version left in %s: still serving %s", self.path, previous
                    )
            # The walk stops at the version it serves: every refusal met stands above it.
            return ReloadResult(self.runtime.version, previous, refused, still_refused)

    def versions(self) -> list[tuple[Candidate, str, str]]:
        """Each version on disk, highest first, with its state (serving, refused, available)
        and the reason of a refusal."""
        listed = []
        on_disk = self._on_disk()
        if self._serving is not None and self._serving not in on_disk:
            # Its file was replaced by one refused, or removed: it serves on from memory.
            listed.append((self._serving, "serving", SERVED_FROM_MEMORY))
        for candidate in on_disk:
            if candidate == self._serving:
                state, reason = "serving", ""
            elif candidate in self._refused:
                state, reason = "refused", self._refused[candidate].reason
            else:
                state, reason = "available", ""
            listed.append((candidate, state, reason))
        return listed

    async def watch(self, interval_s: float) -> None:
        """Poll for changes every `interval_s` and reload on one, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                if self.changed():
                    await self.reload()
            except Exception:  # a bug of ours: the watcher must outlive it
                log.exception("reload failed")

    def _on_disk(self) -> list[Candidate]:
        # A model directory gone (moved, unmounted) offers no version; as a path that is no
        # directory it would be a single model file, missing.
        if self._directory and not self.path.is_dir():
            return []
        return candidates(self.path)

    def _load(self, candidate: Candidate) -> Runtime:
        if candidate.stamp is None:
            raise ModelError(f"model file not found: {candidate.path}")
        try:
            return Runtime.load(candidate.path, self.device, candidate.version, self.threads)
        except ModelError:
            raise
        except Exception as exc:  # a file no check foresaw: refuse it, and keep serving
            log.debug("loading %s", candidate.path, exc_info=True)
            raise ModelError(f"cannot load it: {type(exc).__name__}: {exc}") from None

    def _serve(self, candidate: Candidate, runtime: Runtime) -> None:
        self.current = runtime
        self._serving = candidate
        self.on_swap(runtime)

    def _refuse(self, candidate: Candidate, reason: str) -> Refusal:
        refusal = Refusal(candidate, reason)
        self._refused[candidate] = refusal
        serving = f"; still serving {self.current.version}" if self.current is not None else ""
        where = "" if str(candidate.path) in reason else f" ({candidate.path})"  # named once
        log.warning("refused model %s%s: %s%s", candidate.label, where, reason, serving)
        self.on_refused(refusal)
        return refusal
