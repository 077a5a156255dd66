"""Callers: threads that call `Act` or step a `StreamAct` session through the generated stub,
spread over separate processes so that one client's GIL is not what is measured.

Every row of the serving benchmark, ours and the echo alike, goes through `Pool.run(Job)`: the
same stub, the same channel options, the same request bytes. A caller is closed-loop (its next
call leaves when the last answer arrives) or paced at `rate_hz` like a real-time controller (a
call per tick, ticks a period apart, a tick skipped only when the previous answer came later than
it). All callers share one measuring window on the system-wide monotonic clock: calls before it
warm up connections and caches and are not counted. Everything stops by itself: a caller stops
at the window's end (or its last call's deadline), a worker process when the pool closes its pipe
or the parent dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import queue
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Literal

import grpc
import numpy as np

from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc

Method = Literal["unary", "stream"]
SETUP_S = 0.3  # time given to workers to open channels and start threads, before warm-up
_GOLDEN = 0.6180339887498949  # spreads the callers' tick phases evenly over a period


@dataclasses.dataclass(frozen=True)
class Job:
    """One load: `callers` independent callers, each sending `pendulums` observations per call."""

    target: str
    method: Method = "unary"
    callers: int = 1
    pendulums: int = 1
    rate_hz: float = 0.0  # 0: closed loop, as fast as answers come back
    warmup_s: float = 0.5
    duration_s: float = 2.0
    timeout_s: float = 2.0
    # "caller": a channel (and TCP connection) per caller, like independent controllers;
    # "process": the callers of one process share a channel.
    channel: Literal["caller", "process"] = "caller"
    # "stub": the generated stub, every row's client; "library": our PolicyClient, to show
    # what the client library adds on top of it.
    client: Literal["stub", "library"] = "stub"


@dataclasses.dataclass
class Outcome:
    """What the callers saw in the window: latencies in seconds of the calls that left in it."""

    latencies: np.ndarray
    completed: int  # calls answered inside the window
    answered: int  # calls answered in all, warm-up included (to share out CPU time per call)
    errors: int
    missed: int  # ticks skipped by paced callers because an answer came after the next tick
    duration_s: float
    error_samples: list[str]

    @property
    def calls_per_s(self) -> float:
        return self.completed / self.duration_s

    def percentile_ms(self, q: float) -> float:
        if len(self.latencies) == 0:
            return math.nan
        return float(np.percentile(self.latencies, q) * 1e3)

    def summary(self, pendulums: int = 1) -> dict[str, Any]:
        return {
            "calls": len(self.latencies),
            "calls_per_s": self.calls_per_s,
            "actions_per_s": self.calls_per_s * pendulums,
            "p50_ms": self.percentile_ms(50),
            "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99),
            "max_ms": float(self.latencies.max() * 1e3) if len(self.latencies) else math.nan,
            "errors": self.errors,
            "missed_ticks": self.missed,
            "error_samples": self.error_samples[:3],
        }

    @staticmethod
    def sequence(parts: list[Outcome]) -> Outcome:
        """Windows measured one after another (rounds) as one outcome over their total time."""
        merged = Outcome.merge(parts)
        merged.duration_s = sum(p.duration_s for p in parts)
        return merged

    @staticmethod
    def merge(parts: list[Outcome]) -> Outcome:
        return Outcome(
            latencies=np.concatenate([p.latencies for p in parts]) if parts else np.zeros(0),
            completed=sum(p.completed for p in parts),
            answered=sum(p.answered for p in parts),
            errors=sum(p.errors for p in parts),
            missed=sum(p.missed for p in parts),
            duration_s=parts[0].duration_s if parts else 0.0,
            error_samples=[s for p in parts for s in p.error_samples][:5],
        )


def observations(pendulums: int, seed: int) -> list[float]:
    """Packed observations spread over the pendulum's observation space."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, pendulums)
    theta_dot = rng.uniform(-8.0, 8.0, pendulums)
    obs = np.stack([np.cos(theta), np.sin(theta), theta_dot], axis=1).astype(np.float32)
    values: list[float] = obs.ravel().tolist()
    return values


def channel_options(private: bool) -> list[tuple[str, Any]]:
    # Channels of one process share TCP connections unless each has its own subchannel pool.
    return [("grpc.use_local_subchannel_pool", 1)] if private else []


@dataclasses.dataclass
class _Tally:
    latencies: list[float] = dataclasses.field(default_factory=list)
    completed: int = 0
    answered: int = 0
    errors: int = 0
    missed: int = 0
    error_samples: list[str] = dataclasses.field(default_factory=list)

    def failed(self, exc: grpc.RpcError, counted: bool) -> None:
        if counted:
            self.errors += 1
            if len(self.error_samples) < 3:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                self.error_samples.append(f"{code}: {details}")


class _Clock:
    """A caller's schedule: closed loop, or ticks `period` apart from a phase of its own."""

    def __init__(self, job: Job, index: int, t1: float) -> None:
        self.period = 1.0 / job.rate_hz if job.rate_hz > 0 else 0.0
        self.t1 = t1
        self.tick = time.monotonic() + ((index * _GOLDEN) % 1.0) * self.period

    def next_start(self, tally: _Tally, counted: bool) -> bool:
        """Wait for this caller's next call; False once the window is over."""
        if self.period:
            now = time.monotonic()
            if now > self.tick:  # the last answer came after this tick: skip to the next one
                late = math.ceil((now - self.tick) / self.period)
                self.tick += late * self.period
                if counted:
                    tally.missed += late
            if self.tick >= self.t1:
                return False
            time.sleep(max(self.tick - time.monotonic(), 0.0))
            self.tick += self.period
            return True
        return time.monotonic() < self.t1


def _unary_caller(
    stub: policy_pb2_grpc.PolicyServiceStub,
    job: Job,
    index: int,
    t0: float,
    t1: float,
    tally: _Tally,
) -> None:
    request = pb.ActRequest(obs=observations(job.pendulums, index))
    clock = _Clock(job, index, t1)
    while clock.next_start(tally, time.monotonic() >= t0):
        start = time.monotonic()
        counted = start >= t0
        try:
            stub.Act(request, timeout=job.timeout_s)
        except grpc.RpcError as exc:
            tally.failed(exc, counted)
            continue
        end = time.monotonic()
        tally.answered += 1
        if counted:
            tally.latencies.append(end - start)
            tally.completed += end < t1


class _Session:
    """A sync StreamAct session: requests through a queue, replies from the call's iterator."""

    def __init__(self, stub: policy_pb2_grpc.PolicyServiceStub, timeout_s: float) -> None:
        self.requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
        self.call = stub.StreamAct(iter(self.requests.get, None), timeout=timeout_s)
        self.replies: Iterator[pb.StreamActResponse] = iter(self.call)

    def step(self, request: pb.StreamActRequest) -> None:
        self.requests.put(request)
        next(self.replies)

    def close(self) -> None:
        self.requests.put(None)
        try:
            for _ in self.replies:
                pass
        except grpc.RpcError:
            pass


def _stream_caller(
    stub: policy_pb2_grpc.PolicyServiceStub,
    job: Job,
    index: int,
    t0: float,
    t1: float,
    tally: _Tally,
) -> None:
    request = pb.StreamActRequest(obs=observations(job.pendulums, index))
    # The session's own deadline covers the whole run; a step that hangs ends it.
    session_timeout = (t1 - time.monotonic()) + job.timeout_s + 5.0
    clock = _Clock(job, index, t1)
    session: _Session | None = None
    while clock.next_start(tally, time.monotonic() >= t0):
        start = time.monotonic()
        counted = start >= t0
        try:
            if session is None:
                session = _Session(stub, session_timeout)
            session.step(request)
        except grpc.RpcError as exc:
            tally.failed(exc, counted)
            session = None
            continue
        except StopIteration:
            tally.errors += counted
            session = None
            continue
        end = time.monotonic()
        tally.answered += 1
        if counted:
            tally.latencies.append(end - start)
            tally.completed += end < t1
    if session is not None:
        session.close()


def _library_caller(job: Job, index: int, t0: float, t1: float, tally: _Tally) -> None:
    """`PolicyClient.act`, or `PolicyClient.stream().act`, in place of the bare stub."""
    from client import PolicyClient, PolicyError

    obs = np.array(observations(job.pendulums, index), dtype=np.float32).reshape(-1, 3)
    clock = _Clock(job, index, t1)
    with PolicyClient(job.target, timeout=job.timeout_s) as policy:
        policy.wait_ready(10.0)
        session = policy.stream() if job.method == "stream" else None
        act = policy.act if session is None else session.act
        while clock.next_start(tally, time.monotonic() >= t0):
            start = time.monotonic()
            counted = start >= t0
            try:
                act(obs)
            except PolicyError as exc:
                if counted:
                    tally.errors += 1
                    tally.error_samples.append(str(exc))
                if session is not None:
                    session = policy.stream()
                    act = session.act
                continue
            end = time.monotonic()
            tally.answered += 1
            if counted:
                tally.latencies.append(end - start)
                tally.completed += end < t1
        if session is not None:
            session.close()


def run_callers(job: Job, count: int, first_index: int, t0: float) -> Outcome:
    """Run `count` callers of `job` in threads of this process; measure from t0 on."""
    t1 = t0 + job.duration_s
    private = job.channel == "caller"
    library = job.client == "library"
    channels = [
        grpc.insecure_channel(job.target, options=channel_options(private))
        for _ in range(0 if library else count if private else 1)
    ]
    tallies = [_Tally() for _ in range(count)]
    target = _unary_caller if job.method == "unary" else _stream_caller
    threads = []
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=10.0)
        for i in range(count):
            args: tuple[Any, ...] = (job, first_index + i, t0, t1, tallies[i])
            if not library:
                args = (policy_pb2_grpc.PolicyServiceStub(channels[i if private else 0]), *args)
            thread = threading.Thread(
                target=_library_caller if library else target,
                args=args,
                daemon=True,
                name=f"caller-{first_index + i}",
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(t1 - time.monotonic() + job.timeout_s + 10.0)
    finally:
        for channel in channels:
            channel.close()
    return Outcome(
        latencies=np.array([x for t in tallies for x in t.latencies], dtype=np.float64),
        completed=sum(t.completed for t in tallies),
        answered=sum(t.answered for t in tallies),
        errors=sum(t.errors for t in tallies),
        missed=sum(t.missed for t in tallies),
        duration_s=job.duration_s,
        error_samples=[s for t in tallies for s in t.error_samples],
    )


def _worker(pipe: Connection) -> None:
    """A caller process: run each (job, count, first_index, t0) it is sent; stop at EOF."""
    while True:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, count, first_index, t0 = message
        try:
            outcome = run_callers(job, count, first_index, t0)
            pipe.send(("ok", outcome))
        except Exception as exc:  # report it to the parent rather than die silently
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def split(callers: int, processes: int) -> list[int]:
    """Callers per process, as even as possible, no process idle."""
    used = max(1, min(callers, processes))
    return [callers // used + (i < callers % used) for i in range(used)]


class Pool:
    """`processes` caller processes kept for the whole benchmark (spawned once: ~1 s each)."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=_worker, args=(child,), name=f"bench-callers-{i}")
            proc.daemon = True
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)

    @property
    def size(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc.pid is not None]

    def run(self, job: Job, processes: int | None = None) -> Outcome:
        """Spread `job.callers` over `processes` of the pool (all by default) and merge."""
        counts = split(job.callers, processes or self.size)
        if len(counts) > self.size:
            raise ValueError(f"{len(counts)} processes asked of a pool of {self.size}")
        setup = SETUP_S + 0.004 * job.callers
        t0 = time.monotonic() + setup + job.warmup_s
        first = 0
        for pipe, count in zip(self._pipes, counts, strict=False):
            pipe.send((job, count, first, t0))
            first += count
        parts: list[Outcome] = []
        failures: list[str] = []
        deadline = t0 + job.duration_s + job.timeout_s + 60.0
        for pipe in self._pipes[: len(counts)]:
            try:
                if not pipe.poll(max(deadline - time.monotonic(), 0.1)):
                    raise RuntimeError("a caller process did not answer in time")
                status, payload = pipe.recv()
            except (EOFError, OSError):
                raise RuntimeError("a caller process died") from None
            if status == "ok":
                parts.append(payload)
            else:
                failures.append(payload)
        if failures:
            raise RuntimeError(f"caller process failed: {failures[0]}")
        return Outcome.merge(parts)

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
            pipe.close()
        for proc in self._procs:
            proc.join(5.0)
            if proc.exitcode is None:
                proc.terminate()
                proc.join(5.0)

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
