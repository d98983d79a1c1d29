#!/usr/bin/env bash
# Creates (or reuses) the test virtual environment and installs tests/requirements.txt
# into it, every transitive version pinned by tests/constraints.txt, when either file
# or the interpreter changed. Sourced by tests/run.sh and
# tests/python/run.sh; exports MESHGATE_VENV, MESHGATE_MOTO_SERVER (the S3-protocol
# server the storage tests start) and MESHGATE_SPEC_SCHEMAS (the OpenLineage and ODCS JSON
# Schemas, fetched by spec_schemas.py).
#
# Environment:
#   MESHGATE_VENV   virtualenv to create/use (default: <repo>/.venv)
#   PYTHON          interpreter used to create the venv (default: python3)

_venv_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MESHGATE_VENV="${MESHGATE_VENV:-$_venv_repo/.venv}"
_venv_req="$_venv_repo/tests/requirements.txt"
_venv_constraints="$_venv_repo/tests/constraints.txt"
_venv_stamp="$MESHGATE_VENV/.meshgate-requirements.sha256"

if [ ! -x "$MESHGATE_VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$MESHGATE_VENV"
fi

_venv_want="$( (sha256sum "$_venv_req" "$_venv_constraints"; "$MESHGATE_VENV/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
_venv_have="$(cat "$_venv_stamp" 2>/dev/null || true)"
if [ "$_venv_want" != "$_venv_have" ]; then
    "$MESHGATE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$MESHGATE_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$_venv_req" -c "$_venv_constraints"
    printf '%s\n' "$_venv_want" > "$_venv_stamp"
fi

# The JSON Schemas the suite validates against (OpenLineage events, ODCS contracts), from
# crates.io and PyPI, each archive checked against its SHA-256 (spec_schemas.py).
MESHGATE_SPEC_SCHEMAS="$MESHGATE_VENV/spec-schemas-1"
"$MESHGATE_VENV/bin/python" "$_venv_repo/tests/python/spec_schemas.py" "$MESHGATE_SPEC_SCHEMAS"

export MESHGATE_VENV
export MESHGATE_SPEC_SCHEMAS
export MESHGATE_MOTO_SERVER="$MESHGATE_VENV/bin/moto_server"
