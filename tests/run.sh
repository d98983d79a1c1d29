#!/usr/bin/env bash
# meshgate's test command (the README's, and CI's):
#   1. builds the workspace and the `meshgate` binary (one dev profile for everything);
#   2. runs the Rust tests (catalog cases, arrow-flight client end-to-end suite);
#   3. runs the Python end-to-end suite (pyarrow, ADBC, flightsql-dbapi/SQLAlchemy,
#      DuckDB as the independent oracle) in a virtual environment it creates.
# Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"

cargo build --workspace --bins --locked
cargo test --workspace --exclude meshgate-benches --locked
MESHGATE_BIN="$target/debug/meshgate" bash tests/python/run.sh "$@"
