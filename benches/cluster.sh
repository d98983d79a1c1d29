#!/usr/bin/env bash
# Scale-out (benches/benches/cluster.rs): TPC-H 1-22 through a gateway alone, and through
# gateways sending every query they can to a Ballista cluster of one and of two
# `meshgate executor` processes (each with its own `meshgate scheduler`), interleaved in
# one run on one machine, answers checked equal first.
#
#   bash benches/cluster.sh               # SF1, 3 runs (release build)
#   bash benches/cluster.sh --sf 10       # larger (generation is cached per scale factor)
#   bash benches/cluster.sh --smoke       # SF 0.01, one run: checks the harness works
#   MESHGATE_BENCH_PROFILE=dev bash benches/cluster.sh --sf 0.1   # without a release build
#
# Results: benches/results/cluster-<time>.md and benches/results/cluster-latest.md.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
profile="${MESHGATE_BENCH_PROFILE:-release}"
dir="$profile"
[ "$profile" = "dev" ] && dir=debug
# The whole workspace, as the tests build it: the same features, so a built tree is reused.
cargo build --profile "$profile" --locked --workspace --bins
MESHGATE_BIN="$target/$dir/meshgate" \
MESHGATE_BENCH_PROFILE="$profile" \
MESHGATE_BENCH_DATA="${MESHGATE_BENCH_DATA:-$HOME/.cache/meshgate/tpch}" \
    cargo bench --profile "$profile" --locked -p meshgate-benches --bench cluster -- "$@"
