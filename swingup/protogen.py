"""Generate `swingup/v1/*_pb2*.py` from `proto/` (run by `make proto`; a test diffs the result).

protoc writes imports relative to its `-I` root, so with `-I proto` the file
`proto/swingup/v1/policy.proto` becomes the module `swingup.v1.policy_pb2` and imports cleanly.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write the generated modules for every file under proto/ into `out_dir`."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # a dev-only dependency

    include = Path(protoc.__file__).parent / "_proto"
    # mypy-protobuf's plugins sit beside this interpreter, which need not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(ROOT)
    sys.exit(0)
