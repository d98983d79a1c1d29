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
source "$(dirname "${BASH_SOURCE[0]}")/python_bench.sh" result_cache "$@"
