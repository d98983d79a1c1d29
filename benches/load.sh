#!/usr/bin/env bash
# Load and soak test of a release build of meshgate (see benches/benches/load.rs):
#
#   bash benches/load.sh                       # 32 clients of small queries for 60 s, then 64 of the mix for 10 min
#   bash benches/load.sh --phases 8x30s        # a quick look
#   bash benches/load.sh --http --postgres     # a fifth of the mix through each of the other doors
#
# Results: benches/results/load-<time>.{json,md} and benches/results/load-latest.md.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
cargo build --release --locked --bin meshgate
MESHGATE_BIN="$target/release/meshgate" cargo bench --locked -p meshgate-benches --bench load -- "$@"
