#!/usr/bin/env bash
# What usage and budget accounting costs: the load benchmark's small-query phase
# (benches/benches/load.rs: 32 clients, each its own principal and connection) against a
# release build of `meshgate demo`, with accounting on (the default) and off
# (`usage: { enabled: false }`), runs interleaved on,off,on,off,...; the ratio is of the
# medians of small queries per second and of their p50 and p99 latencies.
#
#   bash benches/accounting.sh                 # 3 runs each of 32 clients for 30 s
#   ROUNDS=5 PHASE=32x60s:small bash benches/accounting.sh
#
# Results: benches/results/accounting-<time>.md and benches/results/accounting-latest.md.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
rounds="${ROUNDS:-3}"
phase="${PHASE:-32x30s:small}"
cargo build --release --locked --bin meshgate
cargo bench --locked -p meshgate-benches --bench load --no-run
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf 'usage: { enabled: true }\n' >"$work/on.yaml"
printf 'usage: { enabled: false }\n' >"$work/off.yaml"
runs=()
for round in $(seq "$rounds"); do
    for mode in on off; do
        before="$(ls benches/results/load-*.json 2>/dev/null | sort | tail -n 1 || true)"
        MESHGATE_CONFIG="$work/$mode.yaml" MESHGATE_BIN="$target/release/meshgate" \
            cargo bench --locked -p meshgate-benches --bench load -- --phases "$phase" --idle 1s >/dev/null
        after="$(ls benches/results/load-*.json | sort | tail -n 1)"
        if [ "$after" = "$before" ]; then
            echo "round $round ($mode): the load benchmark wrote no result" >&2
            exit 1
        fi
        runs+=("$mode=$after")
        echo "round $round, accounting $mode: $after"
    done
done
python3 - "$phase" "${runs[@]}" <<'PY'
import json, statistics, sys, time
phase, runs = sys.argv[1], sys.argv[2:]
by_mode = {"on": [], "off": []}
for run in runs:
    mode, path = run.split("=", 1)
    result = json.load(open(path))["results"][0]
    small = next(k for k in result["kinds"] if k["kind"] == "small query")
    by_mode[mode].append((result["actions_per_second"], small["p50_seconds"], small["p99_seconds"]))
def med(mode, i):
    return statistics.median(r[i] for r in by_mode[mode])
lines = [
    "# Usage and budget accounting: cost",
    "",
    f"`meshgate demo` (release) on loopback, load phase `{phase}`, accounting on (default) and off "
    f"(`usage: {{ enabled: false }}`), {len(by_mode['on'])} runs each, interleaved.",
    "",
    "| | accounting on | accounting off | on / off |",
    "| --- | ---: | ---: | ---: |",
]
for name, i, unit, scale in [("small queries/s", 0, "", 1), ("p50", 1, " ms", 1000), ("p99", 2, " ms", 1000)]:
    on, off = med("on", i), med("off", i)
    lines.append(f"| {name} (median) | {on * scale:.1f}{unit} | {off * scale:.1f}{unit} | {on / off:.3f} |")
lines += ["", "Runs (queries/s, p50 s, p99 s): " + json.dumps(by_mode)]
text = "\n".join(lines) + "\n"
stamp = int(time.time())
for path in (f"benches/results/accounting-{stamp}.md", "benches/results/accounting-latest.md"):
    open(path, "w").write(text)
print(text)
PY
