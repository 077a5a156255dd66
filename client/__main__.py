"""`python -m client`: the same as `swingup-client`."""

from client.cli import main

raise SystemExit(main())
