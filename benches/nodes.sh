#!/usr/bin/env bash
# The federation benchmark (benches/python/nodes.py): TPC-H with its product served by a
# domain node (whole parts of plans sent, or per-table scans only) against the same
# product read directly, interleaved in one run; answers checked first; bytes the node
# sent from its audit.
#
#   bash benches/nodes.sh                    # SF1, 3 runs
#   bash benches/nodes.sh --sf 0.1 --runs 1  # quicker
#   bash benches/nodes.sh --only q01,q06     # a subset
#
# Results: benches/results/nodes-<time>.md and benches/results/nodes-latest.md.
# Environment: MESHGATE_BIN (default: a release build of this checkout), MESHGATE_VENV
# (the test suite's virtual environment: pyarrow, ADBC, tpchgen-cli).
source "$(dirname "${BASH_SOURCE[0]}")/python_bench.sh" nodes "$@"
