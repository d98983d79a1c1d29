#!/usr/bin/env bash
# Runs one Python benchmark of benches/python/ against a meshgate binary: sourced by its
# wrapper (nodes.sh, spill.sh, result_cache.sh, gateway_ab.sh), which documents it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/python_bench.sh" NAME "$@"
#
# runs benches/python/NAME.py --bin MESHGATE_BIN with the wrapper's arguments, in the test
# suite's virtual environment (MESHGATE_VENV; created or updated first). MESHGATE_BIN
# defaults to a release build of this checkout, built first.
set -euo pipefail
_bench_name="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=../tests/python/venv.sh
source "$repo/tests/python/venv.sh"
if [ -z "${MESHGATE_BIN:-}" ]; then
    cargo build --release --locked --bin meshgate
    MESHGATE_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/meshgate"
fi
exec "$MESHGATE_VENV/bin/python" "$repo/benches/python/$_bench_name.py" --bin "$MESHGATE_BIN" "$@"
