"""`python -m server`: the same as `swingup-serve`."""

from server.cli import main

raise SystemExit(main())
