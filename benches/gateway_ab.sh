#!/usr/bin/env bash
# Gateway A/B (benches/python/gateway_ab.py): one release build started once per engine
# setting over a mesh benches/tpch.sh laid out, TPC-H read from each gateway in turn
# through ADBC; answers checked first.
#
#   bash benches/gateway_ab.sh --mesh ~/.cache/meshgate/tpch/sf1-tpchgen/mesh \
#       --variant "never=parquet_string_views: never" \
#       --variant "hinted=parquet_string_views: hinted" --runs 5
#
# Results: benches/results/gateway-ab-<time>.md and benches/results/gateway-ab-latest.md.
# Environment: MESHGATE_BIN (default: a release build of this checkout), MESHGATE_VENV
# (the test suite's virtual environment: pyarrow, ADBC, DuckDB).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=../tests/python/venv.sh
source "$repo/tests/python/venv.sh"
if [ -z "${MESHGATE_BIN:-}" ]; then
    cargo build --release --locked --bin meshgate
    MESHGATE_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/meshgate"
fi
exec "$MESHGATE_VENV/bin/python" "$repo/benches/python/gateway_ab.py" --bin "$MESHGATE_BIN" "$@"
