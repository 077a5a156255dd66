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


SMOKE = Scale(
    rounds=2,  # two, so that the smoke run takes the servers in turn as a full run does
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
)
