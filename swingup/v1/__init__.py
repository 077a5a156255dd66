"""Generated gRPC code for the `swingup.v1` package (see proto/; regenerate with `make proto`)."""
