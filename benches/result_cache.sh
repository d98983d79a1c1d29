#!/usr/bin/env bash
# The result cache benchmark (benches/python/result_cache.py): TPC-H queries asked again
# of the gateway (answered from its result cache) against DuckDB running them cold and
# against the gateway's own first run, interleaved in one run; answers checked first.
#
#   bash benches/result_cache.sh                    # SF1, 5 runs
#   bash benches/result_cache.sh --sf 0.1 --runs 3  # quicker
#   bash benches/result_cache.sh --only q01,q06     # a subset
#
# Results: benches/results/result-cache-<time>.md and benches/results/result-cache-latest.md.
# Environment: MESHGATE_BIN (default: a release build of this checkout), MESHGATE_VENV
# (the test suite's virtual environment: pyarrow, ADBC, DuckDB, tpchgen-cli).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=../tests/python/venv.sh
source "$repo/tests/python/venv.sh"
if [ -z "${MESHGATE_BIN:-}" ]; then
    cargo build --release --locked --bin meshgate
    MESHGATE_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/meshgate"
fi
exec "$MESHGATE_VENV/bin/python" "$repo/benches/python/result_cache.py" --bin "$MESHGATE_BIN" "$@"
