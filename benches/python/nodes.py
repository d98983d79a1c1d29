"""Federation benchmark: TPC-H with its product served by a domain node, against the
same product read directly from its files, in one interleaved run.

One meshgate process is the domain node (it reads the files); one gateway serves the
product three ways: directly from the files (`tpch.direct`), federated to the node with
whole parts of plans sent (`tpchplans.direct`, `pushdown: plans`) and federated with
per-table scans only (`tpchscans.direct`, `pushdown: scans`). Every query's answers are
checked against the direct answer first; then each run times the three in a shuffled
order per query, through ADBC. Bytes on the wire are the node's own count (its audit's
`bytes`: the Arrow IPC it sent the gateway).

    python benches/python/nodes.py --bin target/release/meshgate --sf 1 --runs 3
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.parquet as pq
from adbc_driver_flightsql import DatabaseOptions

REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "benches" / "queries" / "tpch"
TABLES = ["customer", "orders", "lineitem", "part", "partsupp", "supplier", "nation", "region"]
VARIANTS = {"direct": "tpch", "plans": "tpchplans", "scans": "tpchscans"}
ISSUER, AUDIENCE = "bench-issuer", "meshgate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contract_type(arrow_type) -> str:
    text = str(arrow_type)
    if text.startswith("decimal128"):
        return "Decimal128" + text[len("decimal128"):]
    return {"int64": "Int64", "int32": "Int32", "string_view": "Utf8", "string": "Utf8",
            "date32[day]": "Date32"}[text]


def generate(data: Path, sf: str) -> None:
    if (data / "lineitem").is_dir():
        return
    tool = Path(sys.executable).parent / "tpchgen-cli"
    subprocess.run([str(tool), "parquet", "-s", sf, "--parts", "2", "-o", str(data)], check=True)


def descriptor(domain: str, data: Path, endpoint: str | None) -> str:
    text = (f"domain: {domain}\nproduct: direct\nversion: 1.0.0\ndescription: TPC-H.\n"
            "owner: { team: bench, contact: bench@example.org }\ntables:\n")
    for table in TABLES:
        schema = pq.read_schema(next((data / table).glob("*.parquet")))
        text += f"  - name: {table}\n"
        if endpoint is None:
            text += f"    format: parquet\n    location: {(data / table).as_uri()}/\n"
        else:
            text += f"    format: flightsql\n    endpoint: {endpoint}\n    remote_table: tpch.direct.{table}\n"
        text += "    columns:\n"
        for field in schema:
            text += (f"      - {{ name: {field.name}, type: \"{contract_type(field.type)}\", "
                     f"nullable: {str(field.nullable).lower()} }}\n")
    return text + "policy:\n  read: { any_role: [admin] }\n"


def jwk(key_pem: Path, kid: str) -> dict:
    """The public JWK of an Ed25519 PEM key (the last 32 bytes of its DER public key)."""
    der = subprocess.run(["openssl", "pkey", "-in", str(key_pem), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    x = base64.urlsafe_b64encode(der[-32:]).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


class Server:
    def __init__(self, argv, log: Path, ready: str = "meshgate: serving Flight SQL on "):
        self.log = open(log, "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHGATE_")}
        env["MESHGATE_LOG"] = "warn"
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while ready not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def bench_args(description: str, runs: int) -> argparse.Namespace:
    """The options every TPC-H bench of this folder takes."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "meshgate")
    args.add_argument("--sf", default="1")
    args.add_argument("--runs", type=int, default=runs)
    args.add_argument("--only", default="")
    args.add_argument("--work", type=Path, default=Path.home() / ".cache" / "meshgate" / "nodes-bench")
    args.add_argument("--out", type=Path, default=REPO / "benches" / "results")
    return args.parse_args()


def issuer_config(secret: Path) -> str:
    """The gateway configuration's lines trusting the bench issuer (HS256, `secret`)."""
    return ("plaintext: true\n"
            "auth:\n  issuers:\n"
            f"    - {{ issuer: {ISSUER}, audience: [{AUDIENCE}], algorithms: [HS256], "
            f"key: {{ secret_file: {json.dumps(str(secret))} }}, roles_claim: roles }}\n")


def start_gateway(bin_: Path, mesh: Path, config: Path, log: Path) -> tuple[Server, str]:
    """`meshgate serve` over `mesh` with `config`; the server and its Flight SQL URI."""
    gateway = Server([bin_, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
                      "--config", config], log)
    line = next(l for l in log.read_text().splitlines()
                if l.startswith("meshgate: serving Flight SQL on "))
    return gateway, line.split(" on ", 1)[1].split()[0]


def admin_token(bin_: Path, secret: Path) -> str:
    """A token of the bench issuer for an admin (sees every product as stored)."""
    return subprocess.run([bin_, "token", "--secret-file", secret, "--issuer", ISSUER, "--audience",
                           AUDIENCE, "--sub", "bench", "--role", "admin", "--ttl", "6h"],
                          check=True, capture_output=True, text=True).stdout.strip()


def write_report(out: Path, stem: str, report: str) -> None:
    """Prints `report` and writes it as `<stem>-<time>.md` and `<stem>-latest.md`."""
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    (out / f"{stem}-{stamp}.md").write_text(report)
    (out / f"{stem}-latest.md").write_text(report)


def geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def setup(work: Path, bin_: Path, data: Path):
    secret = work / "issuer-secret"
    secret.write_bytes(os.urandom(32))
    key = work / "gateway-node-key.pem"
    if not key.exists():
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True)
    (work / "gateway-jwks.json").write_text(json.dumps({"keys": [jwk(key, "bench-1")]}))
    node_port = free_port()
    node_mesh = work / "node-mesh" / "tpch"
    node_mesh.mkdir(parents=True, exist_ok=True)
    (node_mesh / "direct.yaml").write_text(descriptor("tpch", data, None))
    node_audit = work / "node-audit.jsonl"
    node_audit.unlink(missing_ok=True)
    (work / "node.yaml").write_text(
        "plaintext: true\n"
        "auth:\n  issuers:\n"
        f"    - {{ issuer: bench-gateway, audience: [tpch-node], algorithms: [EdDSA], "
        f"key: {{ jwks_file: {json.dumps(str(work / 'gateway-jwks.json'))} }}, roles_claim: roles }}\n"
        f"audit: {{ file: {json.dumps(str(node_audit))} }}\n"
        "quality: { enabled: false }\n"
        # Every run executes: answers kept from an earlier run would time the cache.
        "engine: { result_cache: { enabled: false } }\n")
    node = Server([bin_, "serve", "--mesh", work / "node-mesh", "--listen", f"127.0.0.1:{node_port}",
                   "--plaintext", "--config", work / "node.yaml"], work / "node.log")
    mesh = work / "gateway-mesh"
    for domain, endpoint in [("tpch", None), ("tpchplans", f"grpc://127.0.0.1:{node_port}"),
                             ("tpchscans", f"grpc://localhost:{node_port}")]:
        (mesh / domain).mkdir(parents=True, exist_ok=True)
        (mesh / domain / "direct.yaml").write_text(descriptor(domain, data, endpoint))
    (work / "gateway.yaml").write_text(
        issuer_config(secret)
        + "quality: { enabled: false }\n"
        "engine:\n  result_cache: { enabled: false }\n  derived:\n    principals:\n"
        "      tpchplans: { subject: 'domain:tpch', roles: [admin] }\n"
        "      tpchscans: { subject: 'domain:tpch', roles: [admin] }\n"
        "nodes:\n"
        f"  tokens: {{ issuer: bench-gateway, key_file: {json.dumps(str(key))}, key_id: bench-1 }}\n"
        "  endpoints:\n"
        f"    - {{ endpoint: 'grpc://127.0.0.1:{node_port}', audience: tpch-node, pushdown: plans }}\n"
        f"    - {{ endpoint: 'grpc://localhost:{node_port}', audience: tpch-node, pushdown: scans }}\n")
    gateway, uri = start_gateway(bin_, mesh, work / "gateway.yaml", work / "gateway.log")
    return node, gateway, uri, admin_token(bin_, secret), node_audit


def sql_for(name: str, domain: str, sf: str) -> str:
    text = (QUERIES / f"{name}.sql").read_text().replace("{fraction}", str(0.0001 / float(sf)))
    for table in TABLES:
        text = text.replace("{" + table + "}", f"{domain}.direct.{table}")
    return text


def node_bytes(audit: Path, offset: int) -> tuple[int, int]:
    """Bytes the node sent since `offset` (a position in its audit), and the new offset."""
    with open(audit) as f:
        f.seek(offset)
        text = f.read()
        end = f.tell()
    total = sum(json.loads(l).get("bytes") or 0 for l in text.splitlines() if l.strip())
    return total, end


def same(a: pa.Table, b: pa.Table) -> bool:
    if a.num_rows != b.num_rows or a.num_columns != b.num_columns:
        return False
    rows = lambda t: sorted(tuple(round(v, 6) if isinstance(v, float) else
                                  (float(v) if hasattr(v, "as_tuple") else v) for v in r.values())
                            for r in t.to_pylist())
    return all(x == y or all((isinstance(p, float) and isinstance(q, float) and math.isclose(p, q, rel_tol=1e-6))
                             or p == q for p, q in zip(x, y)) for x, y in zip(rows(a), rows(b)))


def main() -> None:
    opts = bench_args(__doc__.splitlines()[0], runs=3)
    names = opts.only.split(",") if opts.only else [f"q{i:02d}" for i in range(1, 23)]
    work = opts.work / f"sf{opts.sf}"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    generate(data, opts.sf)
    node, gateway, uri, token, audit = setup(work, opts.bin, data)
    try:
        conn = flightsql.connect(uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"})
        cur = conn.cursor()
        offset = 0

        def run(name: str, variant: str) -> tuple[float, pa.Table, int]:
            nonlocal offset
            _, offset = node_bytes(audit, offset)
            start = time.perf_counter()
            cur.execute(sql_for(name, VARIANTS[variant], opts.sf))
            table = cur.fetch_arrow_table()
            elapsed = time.perf_counter() - start
            time.sleep(0.05)  # the node's audit record lands after its stream ends
            sent, offset = node_bytes(audit, offset)
            return elapsed, table, sent

        timings = {(n, v): [] for n in names for v in VARIANTS}
        wire = {}
        for name in names:  # answers first (and a warm-up of each)
            direct = run(name, "direct")[1]
            for variant in ("plans", "scans"):
                _, got, sent = run(name, variant)
                if not same(got, direct):
                    raise SystemExit(f"{name} {variant}: the answer differs from the direct one")
                wire[(name, variant)] = sent
            print(f"{name}: answers agree; node sent {wire[(name, 'plans')]:,} B with plans, "
                  f"{wire[(name, 'scans')]:,} B with scans", flush=True)
        for r in range(opts.runs):
            for name in names:
                order = list(VARIANTS)
                random.shuffle(order)
                for variant in order:
                    timings[(name, variant)].append(run(name, variant)[0])
            print(f"run {r + 1}/{opts.runs} done", flush=True)
        cur.close()
        conn.close()
    finally:
        gateway.stop()
        node.stop()

    med = {k: statistics.median(v) for k, v in timings.items()}
    geo = geomean
    lines = [
        f"# Federation: TPC-H SF{opts.sf}, one product federated vs read directly",
        "",
        f"Binary `{opts.bin}` ({os.cpu_count()} cores); {opts.runs} interleaved runs (median); ADBC client; the node and",
        "the gateway are separate meshgate processes on loopback. Bytes: Arrow IPC the node sent.",
        "",
        "| query | direct ms | plans ms | scans ms | plans / direct | scans / direct | bytes (plans) | bytes (scans) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in names:
        d, p, s = med[(n, "direct")], med[(n, "plans")], med[(n, "scans")]
        lines.append(f"| {n} | {d * 1e3:.0f} | {p * 1e3:.0f} | {s * 1e3:.0f} | {p / d:.2f} | {s / d:.2f} | "
                     f"{wire[(n, 'plans')]:,} | {wire[(n, 'scans')]:,} |")
    gp = geo([med[(n, "plans")] / med[(n, "direct")] for n in names])
    gs = geo([med[(n, "scans")] / med[(n, "direct")] for n in names])
    bp = sum(wire[(n, "plans")] for n in names)
    bs = sum(wire[(n, "scans")] for n in names)
    lines += ["", f"Geomean plans / direct: **{gp:.2f}**; scans / direct: **{gs:.2f}**. "
              f"Bytes over all queries: {bp:,} with plans, {bs:,} with scans ({bs / max(bp, 1):.1f}x)."]
    write_report(opts.out, "nodes", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
