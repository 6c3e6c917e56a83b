#!/usr/bin/env bash
# The whole test suite, from a fresh machine: bootstrap, build (stable cargo builds the eBPF
# object too), then every test: unit, BPF_PROG_TEST_RUN fixtures on the real programs,
# namespace integration with the real server, dpctl, grpcurl and a Python client.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh

# The gate: formatting (rustfmt.toml) and clippy with warnings as errors, on the default members
# and on the eBPF crate for its own target (nightly, build-std; its own target dir, so the
# workspace's build is not disturbed).
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
CARGO_TARGET_DIR=target/ebpf-clippy cargo +nightly clippy --locked -p dataplane-ebpf \
    --target bpfel-unknown-none -Z build-std=core --release -- -D warnings

# The API: buf lint (proto/proto/buf.yaml says which rules and why the exceptions), and buf
# breaking against the previous commit's protos, so an incompatible change fails here.
buf=../../tools/buf/node_modules/.bin/buf
(cd proto/proto && "$buf" lint)
if git rev-parse -q --verify HEAD~1 >/dev/null; then
    (cd proto/proto && "$buf" breaking --against "../../.git#ref=HEAD~1,subdir=proto/proto")
else
    echo "buf breaking: no previous commit here (a shallow clone?); not compared"
fi

# Build and test the same package set (the default members) so the eBPF object is built once.
cargo build --locked
cargo test --locked "$@"
