#!/usr/bin/env bash
# Run the Python end-to-end suite against a built meshgate binary.
#
#   tests/python/run.sh [pytest args...]
#
# Environment:
#   MESHGATE_BIN    server binary (default: <repo>/target/debug/meshgate)
#   MESHGATE_VENV   virtualenv to create/use (default: <repo>/.venv)
#   PYTHON          interpreter used to create the venv (default: python3)
#
# Without arguments, the client suites run a second time through HAProxy over three
# replicas (MESHGATE_TEST_BALANCED=1; see conftest.py), and a third time with the clinical
# domain served by a domain node (MESHGATE_TEST_DOMAIN_NODE=clinical).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$here/venv.sh"

export MESHGATE_BIN="${MESHGATE_BIN:-$repo/target/debug/meshgate}"
export PYTHONDONTWRITEBYTECODE=1

cd "$repo"
set +e
"$MESHGATE_VENV/bin/python" -m pytest -q tests/python "$@"
rc=$?
# The client suites once more, through a real load balancer: the
# demo and two replicas behind HAProxy, every Flight connection round robin.
if [ "$#" -eq 0 ] && [ "$rc" -eq 0 ]; then
  echo "== the client suites again, through HAProxy over three replicas"
  MESHGATE_TEST_BALANCED=1 "$MESHGATE_VENV/bin/python" -m pytest -q \
    tests/python/test_queries.py tests/python/test_prepared.py tests/python/test_sessions.py \
    tests/python/test_streaming.py tests/python/test_column_metadata.py \
    tests/python/test_handshake.py tests/python/test_zero_trust.py \
    tests/python/test_discovery.py tests/python/test_data_products.py \
    tests/python/test_jdbc.py tests/python/test_errors.py
  rc=$?
fi
# And with the clinical domain served by its own node: the gateway federates to it,
# acting as each caller (the suites that do not read data snapshots, which a node's
# tables have none of at the gateway).
if [ "$#" -eq 0 ] && [ "$rc" -eq 0 ]; then
  echo "== the client suites again, with clinical served by a domain node"
  MESHGATE_TEST_DOMAIN_NODE=clinical "$MESHGATE_VENV/bin/python" -m pytest -q \
    tests/python/test_queries.py tests/python/test_prepared.py \
    tests/python/test_streaming.py tests/python/test_zero_trust.py \
    tests/python/test_column_metadata.py tests/python/test_handshake.py \
    tests/python/test_errors.py tests/python/test_keys.py tests/python/test_discovery.py
  rc=$?
fi
set -e
exit "$rc"
