"""Result cache benchmark: a TPC-H query asked again of the gateway (answered from its
result cache) against the same query run cold by DuckDB, and against the gateway's own
first run, interleaved in one run.

One gateway (`meshgate serve`, the result cache on as by default) serves TPC-H as
`tpch.direct`. Each run, for each query in a shuffled order: DuckDB on a fresh
connection over the same Parquet files (cold: nothing kept between runs); the gateway
with the statement made new for this run (a comment naming the run: a miss, it runs);
the gateway with that same statement again (a hit). Answers are checked first (the
gateway's miss and hit against DuckDB). Client: ADBC, one connection.

    python benches/python/result_cache.py --bin target/release/meshgate --sf 1 --runs 5
"""

from __future__ import annotations

import decimal
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa
from adbc_driver_flightsql import DatabaseOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodes import (  # noqa: E402
    TABLES, admin_token, bench_args, descriptor, generate, geomean, issuer_config, sql_for,
    start_gateway, write_report,
)

PATHS = ("duckdb", "miss", "hit")


def agree(a: pa.Table, b: pa.Table) -> bool:
    """The same rows in any order; numbers within the rounding of a decimal of scale 6
    (DuckDB averages as doubles, DataFusion as decimals)."""
    if a.num_rows != b.num_rows or a.num_columns != b.num_columns:
        return False

    def value(v):
        return float(v) if isinstance(v, decimal.Decimal) else v

    def rows(t):
        return sorted((tuple(map(value, r.values())) for r in t.to_pylist()), key=repr)

    def same(p, q):
        if isinstance(p, float) or isinstance(q, float):
            return p is not None and q is not None and math.isclose(p, q, rel_tol=1e-5, abs_tol=1e-6)
        return p == q

    return all(all(map(same, x, y)) for x, y in zip(rows(a), rows(b)))


def duckdb_cold(data: Path, sql: str):
    """`sql` on a fresh DuckDB connection over the Parquet files; (seconds, table)."""
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS tpch; CREATE SCHEMA tpch.direct")
    for table in TABLES:
        files = (data / table).as_posix() + "/*.parquet"
        con.execute(f"CREATE VIEW tpch.direct.{table} AS SELECT * FROM read_parquet('{files}')")
    result = con.sql(sql).to_arrow_table()
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed, result


def main() -> None:
    opts = bench_args(__doc__.splitlines()[0], runs=5)
    names = opts.only.split(",") if opts.only else [f"q{i:02d}" for i in range(1, 23)]
    work = opts.work / f"sf{opts.sf}"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    generate(data, opts.sf)

    mesh = work / "cache-mesh"
    (mesh / "tpch").mkdir(parents=True, exist_ok=True)
    (mesh / "tpch" / "direct.yaml").write_text(descriptor("tpch", data, None))
    secret = work / "cache-issuer-secret"
    secret.write_bytes(os.urandom(32))
    (work / "cache-gateway.yaml").write_text(
        issuer_config(secret)
        + "quality: { enabled: false }\n"
        + "engine: { result_cache: { enabled: true } }\n")
    gateway, uri = start_gateway(opts.bin, mesh, work / "cache-gateway.yaml", work / "cache-gateway.log")
    token = admin_token(opts.bin, secret)
    timings = {(n, p): [] for n in names for p in PATHS}
    try:
        conn = flightsql.connect(uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"})
        cur = conn.cursor()

        def gateway_run(sql: str):
            start = time.perf_counter()
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            return time.perf_counter() - start, table

        for name in names:  # answers first: the miss against DuckDB, the hit against the miss
            sql = sql_for(name, "tpch", opts.sf) + "\n-- check"
            _, expected = duckdb_cold(data, sql)
            for path in ("miss", "hit"):
                _, got = gateway_run(sql)
                if path == "hit" and not got.equals(kept):
                    raise SystemExit(f"{name}: the answer asked again differs from the first")
                kept = got
                if not agree(got, expected):
                    raise SystemExit(f"{name} ({path}): the gateway's answer differs from DuckDB's:\n"
                                     f"{got.slice(0, 2).to_pylist()}\n{expected.slice(0, 2).to_pylist()}")
            print(f"{name}: answers agree", flush=True)
        for r in range(opts.runs):
            order = list(names)
            random.shuffle(order)
            for name in order:
                sql = sql_for(name, "tpch", opts.sf) + f"\n-- run {r}"
                timings[(name, "duckdb")].append(duckdb_cold(data, sql)[0])
                timings[(name, "miss")].append(gateway_run(sql)[0])
                timings[(name, "hit")].append(gateway_run(sql)[0])
            print(f"run {r + 1}/{opts.runs} done", flush=True)
        cur.close()
        conn.close()
    finally:
        gateway.stop()

    med = {k: statistics.median(v) for k, v in timings.items()}
    geo = geomean
    lines = [
        f"# Result cache: TPC-H SF{opts.sf}, a query asked again vs DuckDB cold",
        "",
        f"Binary `{opts.bin}` ({os.cpu_count()} cores); {opts.runs} interleaved runs (median); ADBC client",
        "for the gateway; DuckDB in this process on a fresh connection per run over the same files.",
        "`miss`: the gateway's first run of a statement (it runs); `hit`: the same statement again.",
        "",
        "| query | DuckDB cold ms | gateway miss ms | gateway hit ms | hit / DuckDB | hit / miss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        d, m, h = med[(n, "duckdb")], med[(n, "miss")], med[(n, "hit")]
        lines.append(f"| {n} | {d * 1e3:.1f} | {m * 1e3:.1f} | {h * 1e3:.1f} | {h / d:.3f} | {h / m:.3f} |")
    hit_duck = geo([med[(n, "hit")] / med[(n, "duckdb")] for n in names])
    hit_miss = geo([med[(n, "hit")] / med[(n, "miss")] for n in names])
    worst = max(names, key=lambda n: med[(n, "hit")] / med[(n, "duckdb")])
    lines += ["", f"Geomean hit / DuckDB cold: **{hit_duck:.3f}**; hit / miss: **{hit_miss:.3f}**. "
              f"Worst hit / DuckDB: {worst} at {med[(worst, 'hit')] / med[(worst, 'duckdb')]:.3f}."]
    write_report(opts.out, "result-cache", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
