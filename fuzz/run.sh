#!/usr/bin/env bash
# Runs each cargo-fuzz target for a while (default 300 s each):
#
#   bash fuzz/run.sh            # all targets
#   bash fuzz/run.sh 60 ticket  # one target, 60 s
#
# Installs cargo-fuzz if missing. The machine has a stable toolchain only, so the
# targets build without a sanitizer (-s none) and with RUSTC_BOOTSTRAP=1 for the
# coverage flags libFuzzer needs; Rust's own checks (bounds, overflow in debug
# assertions) still turn bugs into crashes. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
seconds="${1:-300}"
shift || true
targets=("${@:-sql_to_plan descriptor ticket}")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Longest one input may take before libFuzzer reports it as a hang. Planning a
# statement must stay well under a second (a statement whose plan explodes is refused
# by its size before it is optimized), so sql_to_plan gets 5 s: a 1 KB chain of common
# table expressions that took 13 s to plan is a finding there.
timeout_of() {
    case "$1" in
        sql_to_plan) echo 5 ;;
        *) echo 30 ;;
    esac
}
for target in ${targets[@]}; do
    # The corpus grows in corpus/<target> (not committed), seeded from seeds/<target>.
    mkdir -p "corpus/$target"
    cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    echo "== $target for ${seconds}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --debug-assertions "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout="$(timeout_of "$target")" -print_final_stats=1
done
