#!/usr/bin/env bash
# The performance harness (benches/benches/tpch): TPC-H 1-22 and a micro set through
# in-process DataFusion, meshgate (Rust client, ADBC, pyarrow), DuckDB, and the transport
# alone, interleaved in one run, on a TPC-H mesh generated once per scale factor.
#
#   bash benches/tpch.sh                 # SF1, 5 runs, 1/8/32 concurrent clients (~15 min)
#   bash benches/tpch.sh --sf 10         # larger (generation is cached per scale factor)
#   bash benches/tpch.sh --smoke         # SF 0.01, one run: checks the harness works
#   bash benches/tpch.sh --only q01,q06  # a subset of the queries
#   bash benches/tpch.sh --layout tpchgen      # files as `tpchgen-cli parquet` writes them
#   bash benches/tpch.sh --layout small-files  # ... split into files of at most 64k rows
#   bash benches/tpch.sh --peers sail,roapi   # Sail and ROAPI beside the gateway, through ADBC
#   bash benches/tpch.sh --engine-ab datafusion.optimizer.prefer_hash_join=false
#                        # in-process DataFusion, the gateway's settings against changed ones
#   bash benches/tpch.sh --all --runs 3 --clients 1
#                        # everything at once (--all first): each layout with Sail and
#                        # ROAPI, then the result cache (benches/result_cache.sh; --sf,
#                        # --runs, --only with exact query names, and --smoke reach it
#                        # too); about an hour at SF1
#
# Results: benches/results/tpch-<time>.{json,md,png} and benches/results/tpch-latest.*.
#
# Environment:
#   MESHGATE_BENCH_VENV  Python virtual environment of the harness
#                        (default ~/.cache/meshgate/bench-venv)
#   MESHGATE_BENCH_DATA  cache of generated meshes (default ~/.cache/meshgate/tpch)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
venv="${MESHGATE_BENCH_VENV:-$HOME/.cache/meshgate/bench-venv}"
requirements="$repo/benches/python/requirements.txt"
constraints="$repo/benches/python/constraints.txt"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
want="$( (sha256sum "$requirements" "$constraints"; "$venv/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ "$want" != "$(cat "$venv/.meshgate-bench.sha256" 2>/dev/null || true)" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" -c "$constraints"
    printf '%s\n' "$want" > "$venv/.meshgate-bench.sha256"
fi

if [ "${1:-}" = "--all" ]; then
    shift
    # The result cache benchmark takes --sf, --runs and --only (exact query names) too;
    # --smoke wins over them, as it does in the harness.
    cache_args=()
    smoke=false
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[i]}" in
            --sf | --runs | --only) cache_args+=("${args[i]}" "${args[i + 1]:-}") ;;
            --sf=* | --runs=* | --only=*) cache_args+=("${args[i]}") ;;
            --smoke) smoke=true ;;
        esac
    done
    if [ "$smoke" = true ]; then
        cache_args+=(--sf 0.01 --runs 1)
    fi
    for layout in meshgate tpchgen small-files; do
        bash "$repo/benches/tpch.sh" --layout "$layout" --peers sail,roapi "$@"
    done
    exec bash "$repo/benches/result_cache.sh" ${cache_args[@]+"${cache_args[@]}"}
fi

cargo build --release --locked --bin meshgate
MESHGATE_BIN="$target/release/meshgate" \
MESHGATE_BENCH_PYTHON="$venv/bin/python" \
MESHGATE_BENCH_DATA="${MESHGATE_BENCH_DATA:-$HOME/.cache/meshgate/tpch}" \
    cargo bench --locked -p meshgate-benches --bench tpch -- "$@"
