#!/usr/bin/env bash
# The bigger-than-memory benchmark (benches/python/spill.py): queries that need more than
# their memory through the gateway under its default 1 GiB per query, against DuckDB
# under memory_limit='1GB', interleaved in one run; answers checked first. Then every
# operator once at the demo scales of --operators (default 16): it answers as DuckDB does
# or is refused naming a limit, and the gateway keeps serving.
#
#   bash benches/spill.sh                               # demo scale 16 and TPC-H SF10, 3 runs
#   bash benches/spill.sh --sf 0 --runs 1               # the demo queries only, once
#   bash benches/spill.sh --demo-scale 0 --only q18,q21 # a subset of TPC-H
#   bash benches/spill.sh --operators 16,64             # also check every operator at 16 and 64
#   bash benches/spill.sh --demo-scale 0 --sf 0 --operators 64   # the operator check alone
#
# Results: benches/results/spill-<time>.md and benches/results/spill-latest.md.
# Environment: MESHGATE_BIN (default: a release build of this checkout), MESHGATE_VENV
# (the test suite's virtual environment: pyarrow, ADBC, DuckDB, tpchgen-cli).
source "$(dirname "${BASH_SOURCE[0]}")/python_bench.sh" spill "$@"
