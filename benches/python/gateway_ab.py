"""Gateway A/B: the same release build started once per engine setting over one mesh,
TPC-H 1-22 read from each in turn through ADBC, interleaved, in one run.

Each `--variant NAME=SETTINGS` starts its own `meshgate serve` (the result cache off,
the quality agent off) with SETTINGS added to its `engine` section, in YAML flow form.
The mesh is one `benches/tpch.sh` laid out (its products `tpch.sales`, `tpch.supply`,
`tpch.geo`), so every layout it writes can be compared. Every query's answers are
checked against the first variant's before timing; then each run reads the query from
every gateway, the order rotating run by run. Medians; ratios against the first
variant. The gateways share the machine with each other and the client, idle but for
the query being read.

    python benches/python/gateway_ab.py --bin target/release/meshgate \\
        --mesh ~/.cache/meshgate/tpch/sf1-tpchgen/mesh --runs 5 \\
        --variant "never=parquet_string_views: never" \\
        --variant "hinted=parquet_string_views: hinted"
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nodes import QUERIES, REPO, admin_token, geomean, issuer_config, start_gateway, write_report  # noqa: E402
from result_cache import agree  # noqa: E402

# The product of each table in the meshes `benches/tpch.sh` lays out.
PRODUCTS = {
    "customer": "sales", "orders": "sales", "lineitem": "sales",
    "part": "supply", "partsupp": "supply", "supplier": "supply",
    "nation": "geo", "region": "geo",
}


def query(name: str, sf: str) -> str:
    text = (QUERIES / f"{name}.sql").read_text().replace("{fraction}", str(0.0001 / float(sf)))
    for table, product in PRODUCTS.items():
        text = text.replace("{" + table + "}", f"tpch.{product}.{table}")
    return text


def args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "meshgate")
    parser.add_argument("--mesh", type=Path, required=True, help="a mesh benches/tpch.sh laid out")
    parser.add_argument("--sf", default="1", help="its scale factor (for Q11's fraction)")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=SETTINGS")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", type=Path, default=REPO / "benches" / "results")
    opts = parser.parse_args()
    if len(opts.variant) < 2:
        parser.error("give at least two --variant")
    return opts


def main() -> None:
    opts = args()
    variants = dict(v.split("=", 1) for v in opts.variant)
    names = opts.only.split(",") if opts.only else [f"q{i:02d}" for i in range(1, 23)]
    work = Path(tempfile.mkdtemp(prefix="gateway-ab-"))
    secret = work / "secret"
    secret.write_text(secrets.token_hex(32))
    token = admin_token(opts.bin, secret)
    servers, conns = [], {}
    try:
        for name, settings in variants.items():
            config = work / f"{name}.yaml"
            config.write_text(issuer_config(secret)
                              + f"engine: {{ result_cache: {{ enabled: false }}, {settings} }}\n"
                              + "quality: { enabled: false }\nreload: { watch: false }\n")
            server, uri = start_gateway(opts.bin, opts.mesh, config, work / f"{name}.log")
            servers.append(server)
            conns[name] = flightsql.connect(uri, db_kwargs={
                DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}, autocommit=True)

        def read(variant: str, sql: str):
            with conns[variant].cursor() as cur:
                start = time.perf_counter()
                cur.execute(sql)
                table = cur.fetch_arrow_table()
                return time.perf_counter() - start, table

        order = list(variants)
        base = order[0]
        rows, ratios = [], {v: [] for v in order[1:]}
        for name in names:
            sql = query(name, opts.sf)
            answers = {v: read(v, sql)[1] for v in order}
            for v in order[1:]:
                if not agree(answers[base], answers[v]):
                    raise SystemExit(f"{name}: {v} answers differently from {base}")
            times = {v: [] for v in order}
            for run in range(opts.runs):
                turn = run % len(order)
                for v in order[turn:] + order[:turn]:
                    times[v].append(read(v, sql)[0])
            medians = {v: statistics.median(t) * 1000 for v, t in times.items()}
            for v in order[1:]:
                ratios[v].append(medians[v] / medians[base])
            cells = " | ".join(f"{medians[v]:.1f}" for v in order)
            shares = " | ".join(f"{medians[v] / medians[base]:.3f}" for v in order[1:])
            rows.append(f"| {name} | {cells} | {shares} |")
            print(rows[-1], flush=True)
    finally:
        for conn in conns.values():
            conn.close()
        for server in servers:
            server.stop()

    header = " | ".join(order)
    shares = " | ".join(f"{v} / {base}" for v in order[1:])
    report = [
        f"# Gateway A/B over `{opts.mesh}`",
        "",
        f"`meshgate serve` once per variant, the same build; {opts.runs} runs per query, the order "
        "rotating run by run; medians in ms, read through ADBC; answers checked against "
        f"`{base}` first. Variants (added to `engine`):",
        "",
        *[f"- `{v}`: `{s}`" for v, s in variants.items()],
        "",
        f"| query | {header} | {shares} |",
        "|---|" + "---:|" * (len(order) * 2 - 1),
        *rows,
        "",
        *[f"Geometric mean of {v} / {base} over {len(r)} queries: **{geomean(r):.3f}**"
          for v, r in ratios.items()],
        "",
    ]
    write_report(opts.out, "gateway-ab", "\n".join(report))


if __name__ == "__main__":
    main()
