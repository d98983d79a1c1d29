"""Bigger-than-memory benchmark: queries that need more than their memory limit, through
the gateway under its default 1 GiB per query against DuckDB under `memory_limit='1GB'`,
interleaved in one run, over the same files.

Two sets, each optional: the demo mesh at `--demo-scale` (16: 96 million rows; the
cross-domain join of issue 26, a window and DISTINCT over 32 million visits, a global
sort, a self-join) and TPC-H at `--sf` (files as `tpchgen-cli` writes them in two parts),
served as `tpch.direct`. Every answer is checked against DuckDB's first; then each run
times both engines on every query, in an order shuffled per run. The gateway is one
`meshgate serve` (default configuration but for the issuer), read through ADBC; its
resident memory as each query starts and its peak during it are read from `/proc` (VmRSS,
and VmHWM reset before each),
and what it spilled from its audit record. DuckDB runs with as many threads as the
gateway has cores, spilling to a directory of the work folder.

Then, at each demo scale of `--operators`, every operator is checked once (operators.py):
each query answers equal to DuckDB or is refused naming a limit, and the gateway keeps
serving; the run fails otherwise.

    python benches/python/spill.py --bin target/release/meshgate --demo-scale 16 --sf 10 \
        --operators 16,64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import threading
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
from adbc_driver_flightsql import DatabaseOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodes import (  # noqa: E402
    REPO, TABLES, Server, admin_token, descriptor, free_port, generate, geomean, issuer_config, sql_for,
    start_gateway, write_report,
)
import operators  # noqa: E402
from result_cache import agree  # noqa: E402

MEMORY = "1GB"
DEMO_TABLES = {
    "clinical.encounters.visits": "clinical/encounters/visits",
    "billing.claims.claims": "billing/claims/claims",
}
DEMO_QUERIES = {
    "demo_join_by_region": """
        SELECT v.region, count(*) AS visits, sum(c.amount) AS billed
        FROM clinical.encounters.visits v
        JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id
        GROUP BY v.region""",
    "demo_window_first_visit": """
        SELECT count(*) AS first_visits FROM (
          SELECT row_number() OVER (PARTITION BY patient_id ORDER BY encounter_id) AS n
          FROM clinical.encounters.visits) WHERE n = 1""",
    "demo_distinct_pairs": """
        SELECT count(*) AS pairs FROM
          (SELECT DISTINCT encounter_id, patient_id FROM clinical.encounters.visits)""",
    "demo_global_sort": """
        SELECT claim_id, amount FROM (
          SELECT claim_id, amount, row_number() OVER (ORDER BY amount DESC, claim_id) AS n
          FROM billing.claims.claims) WHERE n BETWEEN 1000001 AND 1000005""",
    "demo_claims_self_join": """
        SELECT count(*) AS pairs, sum(a.amount - b.amount) AS drift
        FROM billing.claims.claims a JOIN billing.claims.claims b ON a.claim_id = b.claim_id""",
}


def args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "meshgate")
    parser.add_argument("--demo-scale", default="16", help="0 for none")
    parser.add_argument("--sf", default="10", help="TPC-H scale factor; 0 for none")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="")
    parser.add_argument("--operators", default="16",
                        help="demo scales at which every operator is checked once (operators.py); 0 for none")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "meshgate" / "spill-bench")
    parser.add_argument("--out", type=Path, default=REPO / "benches" / "results")
    return parser.parse_args()


def demo_mesh(bin_: Path, work: Path, scale: str) -> Path:
    """The demo mesh at `scale`, its base products (written once, by the demo itself)."""
    mesh = work / f"demo-{scale}" / "mesh"
    if not (mesh / "clinical").is_dir():
        shutil.rmtree(mesh.parent, ignore_errors=True)
        mesh.parent.mkdir(parents=True)
        demo = Server([bin_, "demo", "--dir", mesh, "--scale", scale, "--listen", "127.0.0.1:0",
                       "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0",
                       "--portal-listen", "127.0.0.1:0"], mesh.parent / "demo.log")
        demo.stop()
    # The derived product is materialized by a gateway over time; only base products.
    shutil.rmtree(mesh / "analytics", ignore_errors=True)
    return mesh


def demo_views(mesh: Path) -> dict[str, str]:
    """The demo's tables as DuckDB reads them: a glob of each one's Parquet files."""
    return {fqtn: str(mesh / "data" / path / "**" / "*.parquet") for fqtn, path in DEMO_TABLES.items()}


def tpch_mesh(work: Path, sf: str) -> Path:
    """TPC-H at `sf` as `tpch.direct` (generated once)."""
    data = work / f"tpch-sf{sf}" / "data"
    generate(data, sf)
    mesh = data.parent / "mesh"
    (mesh / "tpch").mkdir(parents=True, exist_ok=True)
    (mesh / "tpch" / "direct.yaml").write_text(descriptor("tpch", data, None))
    return mesh


def duckdb_connection(work: Path, views: dict[str, str]):
    con = duckdb.connect(":memory:")
    spill = work / "duckdb-spill"
    shutil.rmtree(spill, ignore_errors=True)
    con.execute(f"SET memory_limit = '{MEMORY}'; SET threads = {os.cpu_count()}; "
                f"SET temp_directory = '{spill}'; SET preserve_insertion_order = false")
    for fqtn, files in views.items():
        domain, product, table = fqtn.split(".")
        con.execute(f'ATTACH IF NOT EXISTS \':memory:\' AS "{domain}"')
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{domain}"."{product}"')
        con.execute(f'CREATE VIEW "{domain}"."{product}"."{table}" AS '
                    f"SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
    return con


@contextlib.contextmanager
def serving(opts: argparse.Namespace, mesh: Path, views: dict[str, str], secret: Path):
    """A fresh gateway over `mesh` and a DuckDB connection over `views`, in a clean run
    directory; both stopped on leaving."""
    run_dir = opts.work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    gateway = Gateway(opts.bin, mesh, run_dir, secret)
    con = duckdb_connection(run_dir, views)
    try:
        yield gateway, con
    finally:
        con.close()
        gateway.stop()


class MemoryPeaks:
    """While in use, polls the gateway's `/metrics` every 50 ms; `peaks` then holds the
    highest pool reservation and the highest live allocation seen (MiB)."""

    def __init__(self, gateway: "Gateway"):
        self.gateway = gateway
        self.peaks = {"pool": 0.0, "allocated": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while True:
            for k, v in self.gateway.memory_mib().items():
                self.peaks[k] = max(self.peaks[k], v)
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> "MemoryPeaks":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


class Gateway:
    """One `meshgate serve` over `mesh`, its default limits, read through ADBC; every query
    runs (no result cache)."""

    def __init__(self, bin_: Path, mesh: Path, work: Path, secret: Path):
        self.work = work
        self.audit = work / "audit.jsonl"
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        self.audit.unlink(missing_ok=True)
        config = work / "gateway.yaml"
        config.write_text(issuer_config(secret)
                          + f"audit: {{ file: {json.dumps(str(self.audit))}, statements: full }}\n"
                          + "quality: { enabled: false }\n"
                          + f"observability: {{ listen: {self.metrics_url.split('/')[2]} }}\n"
                          + f"engine: {{ spill_dir: {json.dumps(str(work / 'spill'))}, "
                          + "result_cache: { enabled: false } }\n")
        self.server, uri = start_gateway(bin_, mesh, config, work / "gateway.log")
        self.conn = flightsql.connect(uri, db_kwargs={
            DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {admin_token(bin_, secret)}"})

    def peak_reset(self) -> None:
        Path(f"/proc/{self.server.proc.pid}/clear_refs").write_text("5")

    def _status_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.server.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def memory_mib(self) -> dict[str, float]:
        """The pool's reservations and the allocator's live bytes, from `/metrics`."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        names = {"meshgate_memory_pool_reserved_bytes": "pool",
                 "meshgate_allocator_allocated_bytes": "allocated"}
        return {names[k]: float(v) / 2**20 for k, v in
                (line.split(" ", 1) for line in text.splitlines() if line.split(" ", 1)[0] in names)}

    def resident_mib(self) -> float:
        return self._status_mib("VmRSS")

    def peak_mib(self) -> float:
        return self._status_mib("VmHWM")

    def spilled_mib(self, sql: str) -> float:
        records = [json.loads(l) for l in self.audit.read_text().splitlines() if l.strip()]
        done = [r for r in records if r.get("statement") == sql and r["rpc"].startswith("DoGet")]
        return (done[-1].get("spilled") or {}).get("bytes", 0) / 2**20 if done else float("nan")

    def query(self, sql: str, parameters: tuple | None = None):
        """`sql`'s answer; `parameters` are bound to a prepared statement through DoPut."""
        with self.conn.cursor() as cur:
            cur.execute(sql, parameters)
            return cur.fetch_arrow_table()

    def spill_files_left(self) -> list[Path]:
        return [p for p in (self.work / "spill").glob("gateway-*/*") if p.name != "lock"]

    def stop(self) -> None:
        self.conn.close()
        self.server.stop()


def measure(name_sql: dict[str, str], gateway: Gateway, con, runs: int) -> list[dict]:
    """Checks every answer, then times both engines `runs` times, interleaved."""
    rows = {name: {"gateway": [], "duckdb": [], "before": [], "peak": [], "spilled": [],
                   "pool": [], "allocated": []}
            for name in name_sql}
    for name, sql in name_sql.items():
        want = con.sql(sql).to_arrow_table()
        got = gateway.query(sql)
        if not agree(got, want):
            raise SystemExit(f"{name}: the gateway's answer differs from DuckDB's:\n{got}\n{want}")
        print(f"{name}: answers agree", flush=True)
    for run in range(runs):
        order = list(name_sql)
        random.shuffle(order)
        for name in order:
            sql = name_sql[name]
            engines = ["gateway", "duckdb"]
            random.shuffle(engines)
            for engine in engines:
                if engine == "gateway":
                    gateway.peak_reset()
                    rows[name]["before"].append(gateway.resident_mib())
                started = time.perf_counter()
                if engine == "gateway":
                    with MemoryPeaks(gateway) as memory:
                        gateway.query(sql)
                else:
                    con.sql(sql).to_arrow_table()
                rows[name][engine].append(time.perf_counter() - started)
                if engine == "gateway":
                    rows[name]["pool"].append(memory.peaks["pool"])
                    rows[name]["allocated"].append(memory.peaks["allocated"])
                    rows[name]["peak"].append(gateway.peak_mib())
                    rows[name]["spilled"].append(gateway.spilled_mib(sql))
            print(f"run {run + 1} {name}: gateway {rows[name]['gateway'][-1]:.2f} s, "
                  f"duckdb {rows[name]['duckdb'][-1]:.2f} s", flush=True)
    return [{"name": name, **{k: v for k, v in r.items()}} for name, r in rows.items()]


def table(title: str, results: list[dict]) -> str:
    lines = [f"### {title}", "",
             "| query | meshgate (s) | DuckDB (s) | meshgate / DuckDB | meshgate RSS before (MiB) "
             "| peak pool (MiB) | peak allocated (MiB) | peak RSS (MiB) | spilled (MiB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios = []
    for r in results:
        g, d = statistics.median(r["gateway"]), statistics.median(r["duckdb"])
        ratios.append(g / d)
        lines.append(f"| {r['name']} | {g:.2f} | {d:.2f} | {g / d:.2f} | "
                     f"{statistics.median(r['before']):.0f} | {max(r['pool']):.0f} | "
                     f"{max(r['allocated']):.0f} | {max(r['peak']):.0f} | "
                     f"{max(r['spilled']):.0f} |")
    lines += ["", f"Geometric mean of meshgate / DuckDB: **{geomean(ratios):.2f}** "
              f"over {len(results)} queries.", ""]
    return "\n".join(lines)


def main() -> None:
    opts = args()
    opts.work.mkdir(parents=True, exist_ok=True)
    wanted = [w for w in opts.only.split(",") if w]
    pick = lambda names: [n for n in names if not wanted or any(w in n for w in wanted)]
    secret = opts.work / "issuer-secret"
    if not secret.exists():
        secret.write_bytes(os.urandom(32))
    sections = []
    failed = 0
    sets = []
    if opts.demo_scale not in ("", "0"):
        mesh = demo_mesh(opts.bin, opts.work, opts.demo_scale)
        sets.append((f"Demo mesh, scale {opts.demo_scale}", mesh, demo_views(mesh),
                     {n: DEMO_QUERIES[n] for n in pick(DEMO_QUERIES)}))
    if opts.sf not in ("", "0"):
        mesh = tpch_mesh(opts.work, opts.sf)
        data = mesh.parent / "data"
        views = {f"tpch.direct.{t}": str(data / t / "*.parquet") for t in TABLES}
        names = pick([f"q{i:02d}" for i in range(1, 23)])
        sets.append((f"TPC-H SF{opts.sf} (tpchgen-cli, two parts per table)", mesh, views,
                     {n: sql_for(n, "tpch", opts.sf) for n in names}))
    for title, mesh, views, queries in sets:
        if not queries:
            continue
        with serving(opts, mesh, views, secret) as (gateway, con):
            sections.append(table(title, measure(queries, gateway, con, opts.runs)))
    for scale in [s for s in opts.operators.split(",") if s not in ("", "0")]:
        checks = {n: c for n, c in operators.CHECKS.items() if n in pick(operators.CHECKS)}
        checks.update({n: operators.Check("the spill benchmark's", DEMO_QUERIES[n])
                       for n in pick(DEMO_QUERIES)})
        if not checks:
            continue
        mesh = demo_mesh(opts.bin, opts.work, scale)
        with serving(opts, mesh, demo_views(mesh), secret) as (gateway, con):
            outcomes = operators.run(gateway, con, checks, MemoryPeaks)
            sections.append(operators.table(f"Every operator once, demo mesh at scale {scale}",
                                            outcomes, gateway.spill_files_left()))
            failed += sum(not o.passed for o in outcomes)
    cores = os.cpu_count()
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    report = "\n".join([
        "# Bigger than memory: meshgate vs DuckDB at 1 GiB per query", "",
        f"meshgate {revision} (release build, default configuration: `engine.query_memory_limit` "
        f"1 GiB) through ADBC; DuckDB {duckdb.__version__} in process with `memory_limit='{MEMORY}'` "
        f"and {cores} threads; {cores} cores. Medians of {opts.runs} interleaved runs; answers "
        "checked against DuckDB's first. RSS before is the gateway process's resident memory "
        "as the query starts (jemalloc returns freed memory after about a second); peak RSS is its highest during the "
        "query (the largest over the runs). Peak pool is the most the query memory pool held "
        "(what `engine.query_memory_limit` bounds) and peak allocated the most the allocator "
        "had handed out, both polled from `/metrics` every 50 ms; the difference is what "
        "no operator reserves: batches in flight, Parquet pages being decoded.", "", *sections])
    write_report(opts.out, "spill", report)
    if failed:
        raise SystemExit(f"{failed} operator checks failed")


if __name__ == "__main__":
    main()
