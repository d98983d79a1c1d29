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

import argparse
import decimal
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa
from adbc_driver_flightsql import DatabaseOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodes import AUDIENCE, ISSUER, QUERIES, REPO, TABLES, Server, descriptor, generate  # noqa: E402

PATHS = ("duckdb", "miss", "hit")


def sql_for(name: str, sf: str) -> str:
    text = (QUERIES / f"{name}.sql").read_text().replace("{fraction}", str(0.0001 / float(sf)))
    for table in TABLES:
        text = text.replace("{" + table + "}", f"tpch.direct.{table}")
    return text


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
    args = argparse.ArgumentParser()
    args.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "meshgate")
    args.add_argument("--sf", default="1")
    args.add_argument("--runs", type=int, default=5)
    args.add_argument("--only", default="")
    args.add_argument("--work", type=Path, default=Path.home() / ".cache" / "meshgate" / "nodes-bench")
    args.add_argument("--out", type=Path, default=REPO / "benches" / "results")
    opts = args.parse_args()
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
        "plaintext: true\n"
        "auth:\n  issuers:\n"
        f"    - {{ issuer: {ISSUER}, audience: [{AUDIENCE}], algorithms: [HS256], "
        f"key: {{ secret_file: {json.dumps(str(secret))} }}, roles_claim: roles }}\n"
        "quality: { enabled: false }\n"
        "engine: { result_cache: { enabled: true } }\n")
    gateway = Server([opts.bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
                      "--config", work / "cache-gateway.yaml"], work / "cache-gateway.log")
    line = next(l for l in (work / "cache-gateway.log").read_text().splitlines()
                if l.startswith("meshgate: serving Flight SQL on "))
    uri = line.split(" on ", 1)[1].split()[0]
    token = subprocess.run([opts.bin, "token", "--secret-file", secret, "--issuer", ISSUER, "--audience",
                            AUDIENCE, "--sub", "bench", "--role", "admin", "--ttl", "6h"],
                           check=True, capture_output=True, text=True).stdout.strip()
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
            sql = sql_for(name, opts.sf) + "\n-- check"
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
                sql = sql_for(name, opts.sf) + f"\n-- run {r}"
                timings[(name, "duckdb")].append(duckdb_cold(data, sql)[0])
                timings[(name, "miss")].append(gateway_run(sql)[0])
                timings[(name, "hit")].append(gateway_run(sql)[0])
            print(f"run {r + 1}/{opts.runs} done", flush=True)
        cur.close()
        conn.close()
    finally:
        gateway.stop()

    med = {k: statistics.median(v) for k, v in timings.items()}
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
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
    report = "\n".join(lines) + "\n"
    print(report)
    opts.out.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    (opts.out / f"result-cache-{stamp}.md").write_text(report)
    (opts.out / "result-cache-latest.md").write_text(report)


if __name__ == "__main__":
    main()
