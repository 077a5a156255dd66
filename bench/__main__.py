"""`make bench`: run the benchmarks and write docs/benchmarks.md.

python -m bench [training|serving|all] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["training", "serving", "all"],
        help="which benchmark to run (default: all)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness only")
    parser.add_argument(
        "--out", default="docs", metavar="DIR", help="where results and plots go (default: docs)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.what in ("training", "all"):
        from bench import training

        scale = training.SMOKE if args.smoke else training.Scale()
        print("training benchmark ...", file=sys.stderr, flush=True)
        report.save(out, report.TRAINING_JSON, training.run(scale))
    if args.what in ("serving", "all"):
        from bench import serving

        print("serving benchmark ...", file=sys.stderr, flush=True)
        report.save(out, report.SERVING_JSON, serving.run(smoke=args.smoke))
    path = report.write(out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
