"""Where the server's time goes under load: py-spy samples of the running process, summarised.

`record` runs `py-spy record --native --format raw` against a server pid (py-spy is in the
`bench` extra; it needs ptrace rights over the process, which its parent has as root or with
ptrace_scope 0). Each sample is a stack of frames, innermost last; idle threads are not sampled.
A sample is charged to the category of its innermost frame that has one (so a libc call made by
gRPC's C core is gRPC's), and our functions are also counted inclusively: the share of busy
samples with that function anywhere on the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")

# Innermost frame first match wins; the order puts the specific before the general.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "onnxruntime (the model)"),
    ("server/", "our server code (Python)"),
    ("swingup/", "our server code (Python)"),
    ("grpc/", "gRPC (cygrpc, C core, grpc.aio)"),
    ("_message", "protobuf (upb)"),
    ("google/protobuf", "protobuf (upb)"),
    ("numpy/", "numpy"),
    ("asyncio/", "asyncio event loop"),
    ("_asynciomodule", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("selectmodule", "asyncio event loop"),
    ("socketmodule", "asyncio event loop"),
)


# Innermost frames that mean a thread is waiting, not working (py-spy's --native shows them).
WAITING = frozenset(
    {"epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "syscall", "nanosleep"}
    | {"clock_nanosleep", "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait"}
)


def available() -> str | None:
    """The py-spy executable beside this interpreter or on PATH, if any."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, duration_s: float, out: Path, rate: int = 200) -> str | None:
    """Sample `pid` for `duration_s`; the raw (collapsed) stacks, or None if py-spy failed."""
    exe = available()
    if exe is None:
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s)))]
    argv += ["--rate", str(rate), "--format", "raw", "--native", "--output", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 or not out.exists():
        return None
    return out.read_text()


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for part in stack.split(";"):
        match = _FRAME.match(part.strip())
        frames.append((match["func"], match["file"]) if match else (part, ""))
    return frames


def category(file: str) -> str | None:
    return next((name for key, name in CATEGORIES if key in file), None)


def summarize(raw: str, duration_s: float, rate: int, top: int = 12) -> dict[str, Any]:
    """Shares of busy samples by category (self) and by our function (inclusive); `busy_cores`
    is how many cores' worth of time the process worked, waiting excluded."""
    by_category: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = waiting = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if frames[-1][0] in WAITING:
            waiting += count
            continue
        total += count
        charged = next(
            (c for _, file in reversed(frames) if (c := category(file)) is not None), "other"
        )
        by_category[charged] += count
        seen = {
            f"{file.rsplit('/', 1)[-1]}:{func}"
            for func, file in frames
            if file.startswith(("server/", "swingup/"))
            and not file.endswith(("__main__.py", "cli.py", "app.py"))
        }
        for name in seen:
            ours[name] += count
    share = (lambda n: n / total) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "waiting_samples": waiting,
        "busy_cores": total / (duration_s * rate) if duration_s > 0 else 0.0,
        "categories": [(name, share(n)) for name, n in by_category.most_common()],
        "ours_inclusive": [(name, share(n)) for name, n in ours.most_common(top)],
    }
