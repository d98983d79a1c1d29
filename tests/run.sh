#!/usr/bin/env bash
# meshgate's test command (the README's, and CI's):
#   1. builds the workspace and the `meshgate` binary (one dev profile for everything);
#   2. creates the test virtual environment (Python clients, DuckDB, and moto, the
#      S3-protocol server of the storage tests);
#   3. runs the Rust tests (catalog cases, arrow-flight client end-to-end suite,
#      domain storage on S3);
#   4. runs the Python end-to-end suite (pyarrow, ADBC, flightsql-dbapi/SQLAlchemy,
#      psql, psycopg, DuckDB as the independent oracle), on local files and on S3.
# Debian's postgresql-client (psql), haproxy (the load balancer in front of the
# replica tests), and chromium with chromium-driver (the portal's browser tests) are
# installed with apt-get when missing.
# Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"

missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# The portal's browser tests: Debian's Chromium and its WebDriver (no browser download).
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --workspace --bins --locked
source tests/python/venv.sh
export MESHGATE_BIN="$target/debug/meshgate"
cargo test --workspace --exclude meshgate-benches --locked
bash tests/python/run.sh "$@"
