"""How much one serving benchmark run measures: the full size, and the smoke size of `make test`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much one run measures; every load is bounded by these counts and seconds."""

    latency_s: float = 3.0  # each one-caller latency row
    throughput_s: float = 2.0  # each many-caller row
    warmup_s: float = 0.5
    # Servers compared in a row (the echo and ours) are taken in turn this many times, a window
    # each, and their windows pooled: see Bench.compare.
    rounds: int = 3
    # The one-caller p50s again over this many short windows, each server in turn (see
    # bench.serving.window_rows): how often a target holds, not only whether it held once.
    window_rounds: int = 12
    window_s: float = 1.0
    callers: tuple[int, ...] = (1, 16, 64, 256)
    processes: int = 2  # caller processes: one per core did best here (see the report)
    big_batch: int = 1024
    ort_calls: int = 3000
    capacity_probe_s: float = 4.0
    capacity_warmup_s: float = 1.0
    capacity_budget_s: float = 35.0  # per server and method
    capacity_start: int = 64
    capacity_limit: int = 4096
    memory_s: float = 60.0
    memory_callers: int = 64
    profile_s: float = 8.0  # 0: no py-spy profile
    # Servers beside the echo and ours: names understood by `server_args` and `_start`.
    variants: tuple[str, ...] = (
        "echo-sync",
        "echo-model",
        "ours-nobatch",
        "ours-2workers",
        "ours-window500",
    )
    variant_callers: tuple[int, ...] = (64, 256)
    stream_callers: int = 64
    # Overload (bench/overload.py): an actor whose model call dominates (bench.model.heavy),
    # offered twice its closed-loop capacity, open loop, with the queue bounded and not.
    overload_hidden: int = 1024  # units in each of its two hidden layers
    overload_pendulums: int = 1024  # per `Act` call: ~22 ms of model here
    overload_queue: int = 16384  # --max-queue: the server's default, 4 x --max-batch 4096
    overload_capacity_s: float = 3.0  # the closed-loop capacity's window
    overload_s: float = 5.0  # how long twice that rate is offered
    overload_ort_calls: int = 400  # ort_floor times a batch a tenth as many times
    # One-pendulum calls sent at once (bench.overload.burst): past gRPC core's 3 000 waiting.
    burst_calls: int = 4000


SMOKE = Scale(
    rounds=2,  # two, so that the smoke run takes the servers in turn as a full run does
    window_rounds=2,
    window_s=0.2,
    latency_s=0.3,
    throughput_s=0.3,
    warmup_s=0.1,
    callers=(1, 4),
    big_batch=64,
    ort_calls=50,
    capacity_probe_s=0.3,
    capacity_warmup_s=0.1,
    capacity_budget_s=1.0,
    capacity_start=2,
    capacity_limit=4,
    memory_s=1.0,
    memory_callers=2,
    profile_s=0.0,
    variants=("echo-model", "ours-nobatch"),
    variant_callers=(4,),
    stream_callers=4,
    overload_hidden=16,
    overload_pendulums=64,
    overload_queue=4096,  # the least --max-batch 4096 allows
    overload_capacity_s=0.3,
    overload_s=0.3,
    overload_ort_calls=100,
    burst_calls=200,
)
