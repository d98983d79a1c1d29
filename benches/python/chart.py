"""Draws the chart of a benches/benches/tpch run: median time per query of the gateway
(Rust client), in-process DataFusion and DuckDB, on a log scale.

Usage: chart.py RESULTS.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PATHS = [
    ("inprocess", "in-process DataFusion", "#4c72b0"),
    ("gateway", "meshgate (Rust Flight SQL client)", "#dd8452"),
    ("adbc", "meshgate (ADBC, Python)", "#c44e52"),
    ("duckdb", "DuckDB in-process", "#55a868"),
]


def main():
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as f:
        run = json.load(f)
    queries = run["queries"]
    names = [q["name"] for q in queries]
    width = 0.8 / len(PATHS)
    fig, ax = plt.subplots(figsize=(max(10, len(names) * 0.55), 5.5))
    for i, (path, label, color) in enumerate(PATHS):
        values = [
            (q["median_seconds"].get(path) or float("nan")) * 1000.0 for q in queries
        ]
        xs = [x + (i - (len(PATHS) - 1) / 2) * width for x in range(len(names))]
        ax.bar(xs, values, width, label=label, color=color)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms, log scale)")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_title(
        f"TPC-H SF{run['scale_factor']} and micro queries, {run['runs']} interleaved runs "
        f"({run['machine']['cores']} cores)"
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()
