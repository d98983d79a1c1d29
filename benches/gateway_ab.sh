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
source "$(dirname "${BASH_SOURCE[0]}")/python_bench.sh" gateway_ab "$@"
