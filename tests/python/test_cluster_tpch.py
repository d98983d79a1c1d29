"""TPC-H 1-22 distributed and local give the same answers, for an administrator and for
a principal under row filters and masks.

The data is TPC-H SF 0.01 as `tpchgen-cli` writes it (two Parquet files per table,
strings as views), published as three products of a `tpch` domain; the queries are the
benchmark's own (`benches/queries/tpch/`). One gateway sends every query it can to a
scheduler and two executors; another runs everything itself.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster_helpers import FALLBACK, GATEWAY_LOG, cluster_runs, query, start_cluster
from conftest import REPO_ROOT
from mesh_helpers import ServerProcess, assert_rows_equal, craft_jwt, demo_claims, hermetic_env, venv_tool

SCALE = "0.01"
QUERIES = REPO_ROOT / "benches" / "queries" / "tpch"
ISSUER, AUDIENCE = "meshgate-tpch-test", "meshgate"
PRODUCTS = {
    "sales": ["customer", "orders", "lineitem"],
    "supply": ["part", "partsupp", "supplier"],
    "geo": ["nation", "region"],
}
POLICIES = {
    "sales": """policy:
  read: { any_role: [admin, analyst] }
  rows:
    - { filter: "c_mktsegment = principal.segment", unless_role: [admin], tables: [customer] }
  columns:
    c_phone: { mask: hash, unless_role: [admin] }
    c_address: { mask: "null", unless_role: [admin] }
    o_clerk: { mask: redact, unless_role: [admin] }
""",
    "supply": """policy:
  read: { any_role: [admin, analyst] }
  columns:
    s_phone: { mask: partial, unless_role: [admin] }
""",
    "geo": "policy:\n  read: { any_authenticated: true }\n",
}
# TPC-H queries whose plans hold a scalar subquery, which stay in the gateway.
IN_THE_GATEWAY = {"q11", "q15", "q22"}


def _contract_type(arrow_type) -> str:
    """The descriptor's name for a column type tpchgen writes (strings declared as
    Utf8, as a domain would; the files hold views)."""
    text = str(arrow_type)
    if text.startswith("decimal128"):
        return "Decimal128" + text[len("decimal128"):]
    return {"int64": "Int64", "int32": "Int32", "string_view": "Utf8", "string": "Utf8",
            "date32[day]": "Date32"}[text]


def _write_mesh(root: Path) -> Path:
    data = root / "data"
    subprocess.run([str(venv_tool("tpchgen-cli")), "parquet", "-s", SCALE, "--parts", "2", "-o", str(data)],
                   check=True, capture_output=True, timeout=300)
    mesh = root / "mesh" / "tpch"
    mesh.mkdir(parents=True)
    for product, tables in PRODUCTS.items():
        text = (f"domain: tpch\nproduct: {product}\nversion: 1.0.0\ndescription: TPC-H {product}.\n"
                "owner: { team: tests, contact: tests@example.org }\ntables:\n")
        for table in tables:
            schema = pq.read_schema(next((data / table).glob("*.parquet")))
            text += f"  - name: {table}\n    format: parquet\n    location: {(data / table).as_uri()}/\n    columns:\n"
            for field in schema:
                text += (f"      - {{ name: {field.name}, type: \"{_contract_type(field.type)}\", "
                         f"nullable: {str(field.nullable).lower()} }}\n")
        (mesh / f"{product}.yaml").write_text(text + POLICIES[product])
    return root / "mesh"


def _sql(name: str) -> str:
    text = (QUERIES / f"{name}.sql").read_text().replace("{fraction}", str(0.0001 / float(SCALE)))
    for product, tables in PRODUCTS.items():
        for table in tables:
            text = text.replace("{" + table + "}", f"tpch.{product}.{table}")
    assert "{" not in text, text
    return text


class TpchMesh:
    def __init__(self, local, distributed, cluster, secret: bytes):
        self.local, self.distributed, self.cluster, self.secret = local, distributed, cluster, secret

    def token(self, roles, **attributes) -> str:
        return craft_jwt(demo_claims("tpch-test", roles, iss=ISSUER, aud=AUDIENCE, **attributes), self.secret)


@pytest.fixture(scope="module")
def tpch(meshgate_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("tpch")
    mesh = _write_mesh(work)
    secret = secrets.token_bytes(32)
    (work / "issuer-secret").write_bytes(secret)
    (work / "masking-key").write_bytes(secrets.token_bytes(32))
    base = (
        "plaintext: true\n"
        "auth:\n  issuers:\n"
        f"    - {{ issuer: {ISSUER}, audience: [{AUDIENCE}], algorithms: [HS256], "
        f"key: {{ secret_file: {json.dumps(str(work / 'issuer-secret'))} }}, roles_claim: roles, "
        "attribute_claims: { segment: segment } }\n"
        f"masking: {{ key_file: {json.dumps(str(work / 'masking-key'))} }}\n"
    )
    (work / "local.yaml").write_text(base)
    cluster = start_cluster(meshgate_bin, work, work / "local.yaml")
    servers = []
    try:
        (work / "distributed.yaml").write_text(
            base + f"engine:\n  distributed: {{ scheduler: 127.0.0.1:{cluster.scheduler_port}, min_scan_bytes: 0 }}\n")
        for name in ("local", "distributed"):
            server = ServerProcess(
                [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--config", work / f"{name}.yaml"],
                name=f"tpch {name} gateway", env={**hermetic_env(), "MESHGATE_LOG": GATEWAY_LOG})
            servers.append(server)
            server.start()
        cluster.gateway = servers[1]
        yield TpchMesh(servers[0], servers[1], cluster, secret)
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


@pytest.mark.parametrize("persona", ["admin", "analyst"])
@pytest.mark.parametrize("name", [f"q{i:02d}" for i in range(1, 23)])
def test_tpch_answers_the_same_distributed_and_local(tpch, name, persona):
    token = tpch.token(["admin"]) if persona == "admin" else tpch.token(["analyst"], segment="BUILDING")
    sql = _sql(name)
    before = cluster_runs(tpch.distributed)
    distributed = query(tpch.distributed, token, sql)
    local = query(tpch.local, token, sql)
    assert distributed.schema.names == local.schema.names
    assert_rows_equal(distributed, local, context=f"{name} as {persona}: ")
    ran_there = cluster_runs(tpch.distributed) > before
    assert ran_there == (name not in IN_THE_GATEWAY), f"{name} on the cluster: {ran_there}"
    assert FALLBACK not in tpch.distributed.output(tail=1_000_000), "a job failed and ran in the gateway"
