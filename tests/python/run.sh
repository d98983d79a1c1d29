#!/usr/bin/env bash
# Run the Python end-to-end suite against a built meshgate binary.
#
#   tests/python/run.sh [pytest args...]
#
# Environment:
#   MESHGATE_BIN    server binary (default: <repo>/target/debug/meshgate)
#   MESHGATE_VENV   virtualenv to create/use (default: <repo>/.venv)
#   PYTHON          interpreter used to create the venv (default: python3)
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
set -e
exit "$rc"
