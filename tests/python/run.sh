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
venv="${MESHGATE_VENV:-$repo/.venv}"
req="$repo/tests/requirements.txt"
stamp="$venv/.meshgate-requirements.sha256"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi

want_hash="$( (sha256sum "$req"; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
have_hash="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want_hash" != "$have_hash" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    printf '%s\n' "$want_hash" > "$stamp"
fi

export MESHGATE_BIN="${MESHGATE_BIN:-$repo/target/debug/meshgate}"
export PYTHONDONTWRITEBYTECODE=1

cd "$repo"
set +e
"$venv/bin/python" -m pytest -q tests/python "$@"
rc=$?
set -e
exit "$rc"
