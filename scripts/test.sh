#!/usr/bin/env bash
# The whole test suite, from a fresh machine: bootstrap, build (stable cargo builds the eBPF
# object too), then every test: unit, BPF_PROG_TEST_RUN fixtures on the real programs,
# namespace integration with the real server, dpctl, grpcurl and a Python client.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh

# Build and test the same package set (the default members) so the eBPF object is built once.
cargo build --locked
cargo test --locked "$@"
