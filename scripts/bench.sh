#!/usr/bin/env bash
# The benchmark command: builds the bench (release), runs every case next to its baseline in the
# same run, and writes docs/benchmarks.md. Runs in a network namespace of its own (plus three
# named ones, dpbench-<pid>-gen/rtr/sink, for the veth forwarding case); leaves nothing.
#
#   scripts/bench.sh            default sizes (10, 10,000, 100,000 and 1,000,000 routes per family)
#   scripts/bench.sh --quick    tiny sizes, seconds (the test suite runs this)
#   scripts/bench.sh --help     every option
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
cargo build --locked --release -p dataplane-bench -p dataplane-server
out=()
case " $* " in
    *" --quick "*|*" --help "*|*" --output "*) ;;
    *) out=(--output docs/benchmarks.md) ;;
esac
DATAPLANE_BENCH_COMMAND="scripts/bench.sh${*:+ $*}" exec target/release/dataplane-bench "${out[@]}" "$@"
