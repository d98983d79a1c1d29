"""A domain node that is not meshgate: Sail's Flight SQL server (`pysail`).

The gateway federates a table to Sail (`dialect: spark`), which knows nothing of
meshgate: it takes no token (the gateway sends one anyway), speaks Spark SQL
(back-quoted names) and lists no tables (the gateway reads the schema with a probe).
Queries through the gateway answer what DuckDB reads from the same Parquet file, the
filters Sail reads as the gateway does go to it, the others run in the gateway, and the
mesh's policies apply on top.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import start_server
from mesh_helpers import DEMO_SECRET_FILE, assert_rows_equal, free_port, query_once

ROWS = 5000


def sail_bin() -> Path:
    return Path(sys.executable).parent / "sail"


class Sail:
    """`sail flight server` on loopback, its catalog filled over Flight SQL."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.log = open(workdir / "sail.log", "w")
        self.proc = subprocess.Popen(
            [sail_bin(), "flight", "server", "--ip", "127.0.0.1", "--port", str(self.port),
             "-C", workdir],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.uri = f"grpc://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise
                time.sleep(0.3)

    def execute(self, sql: str):
        import adbc_driver_flightsql.dbapi as flightsql

        conn = flightsql.connect(self.uri)
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetch_arrow_table()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def write_trips(path: Path) -> Path:
    path.mkdir(parents=True)
    ids = pa.array(range(ROWS), pa.int64())
    table = pa.table({
        "trip_id": ids,
        "region": pa.array([["north", "south", "east", "west"][i % 4] if i % 11 else None for i in range(ROWS)]),
        "rider": pa.array([f"r{i % 97}" for i in range(ROWS)]),
        "fare": pa.array([round(3.5 + (i % 40) * 0.25, 2) for i in range(ROWS)], pa.float64()),
    })
    pq.write_table(table, path / "part-0.parquet", row_group_size=1000)
    return path


DESCRIPTOR = """\
domain: mobility
product: trips
version: 1.0.0
description: Trips, served by the mobility domain's own Sail node.
owner: {{ team: mobility, contact: mobility@example.org }}
tables:
  - name: trips
    description: One row per trip.
    format: flightsql
    endpoint: grpc://127.0.0.1:{port}
    remote_table: trips
    columns:
      - {{ name: trip_id, type: Int64, nullable: false }}
      - {{ name: region, type: Utf8, nullable: true }}
      - {{ name: rider, type: Utf8, nullable: false, tags: [pii] }}
      - {{ name: fare, type: Float64, nullable: false }}
policy:
  read: {{ any_role: [analyst, admin] }}
  rows:
    - {{ filter: "region = principal.region", unless_role: [admin] }}
"""


def gateway_config(secret_file: Path, key_file: Path, port: int) -> str:
    return f"""\
plaintext: true
auth:
  issuers:
    - issuer: meshgate-demo
      audience: [meshgate]
      algorithms: [HS256]
      key: {{ secret_file: {json.dumps(str(secret_file))} }}
      roles_claim: roles
      attribute_claims: {{ region: region }}
platform_policies:
  - {{ name: pii-redaction, tag: pii, column: {{ mask: redact, unless_role: [pii_reader] }} }}
engine:
  derived:
    principals: {{ mobility: {{ subject: "domain:mobility", roles: [admin] }} }}
nodes:
  tokens: {{ issuer: test-gateway, key_file: {json.dumps(str(key_file))} }}
  endpoints:
    - {{ endpoint: "grpc://127.0.0.1:{port}", audience: mobility-node, dialect: spark }}
"""


@pytest.fixture(scope="module")
def federated(tmp_path_factory, demo, meshgate_bin, mint):
    root = tmp_path_factory.mktemp("generic-node")
    data = write_trips(root / "data" / "trips")
    sail = Sail(root)
    try:
        sail.execute(f"CREATE TABLE trips USING parquet LOCATION '{data}'")
        mesh = root / "mesh"
        (mesh / "mobility").mkdir(parents=True)
        (mesh / "mobility" / "trips.yaml").write_text(DESCRIPTOR.format(port=sail.port))
        key = root / "gateway-node-key.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True)
        config = root / "meshgate.yaml"
        config.write_text(gateway_config(demo.mesh_dir / DEMO_SECRET_FILE, key, sail.port))
        server = start_server(
            [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
             "--config", config],
            "generic-node", env={"MESHGATE_LOG": "warn,meshgate_nodes=debug"})
        try:
            yield server, data, {
                "admin": mint("--sub", "ada", "--role", "admin", "--role", "pii_reader"),
                "analyst": mint("--sub", "ana", "--role", "analyst", "--attr", "region=north"),
            }
        finally:
            server.stop()
    finally:
        sail.stop()


def query(server, token: str, sql: str):
    return query_once(server.uri, token, sql)


def duck(data: Path, sql: str):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW trips AS SELECT * FROM read_parquet('{data}/*.parquet')")
    return con.execute(sql).to_arrow_table()


def sent_statements(server) -> list[str]:
    return [line for line in server.output().splitlines() if "remote scan" in line]


def test_queries_through_a_sail_node_answer_what_the_files_hold(federated):
    server, data, tokens = federated
    cases = [
        ("SELECT region, count(*) AS n, sum(fare) AS total FROM mobility.trips.trips "
         "WHERE trip_id >= 1000 GROUP BY region",
         "SELECT region, count(*) AS n, sum(fare) AS total FROM trips WHERE trip_id >= 1000 GROUP BY region"),
        ("SELECT trip_id, rider FROM mobility.trips.trips WHERE region = 'east' AND trip_id < 200",
         "SELECT trip_id, rider FROM trips WHERE region = 'east' AND trip_id < 200"),
        ("SELECT count(*) AS n FROM mobility.trips.trips WHERE rider > 'r5' AND fare * 2 > 20",
         "SELECT count(*) AS n FROM trips WHERE rider > 'r5' AND fare * 2 > 20"),
    ]
    for sql, oracle in cases:
        got = query(server, tokens["admin"], sql)
        assert got.num_rows > 0, sql
        assert_rows_equal(got, duck(data, oracle), context=f"{sql}: ")


def test_sail_is_sent_what_it_reads_as_the_gateway_does(federated):
    server, _, tokens = federated
    before = len(sent_statements(server))
    query(server, tokens["admin"],
          "SELECT trip_id FROM mobility.trips.trips WHERE region = 'east' AND trip_id < 200 "
          "AND rider > 'r5'")
    [line] = sent_statements(server)[before:]
    # Spark SQL: back-quoted names; text compared for equality only (ordering follows
    # the node's collation, so `rider > 'r5'` runs in the gateway).
    assert "FROM `trips`" in line, line
    assert "`trips`.`region` = 'east'" in line and "`trips`.`trip_id` < 200" in line, line
    assert "r5" not in line, line


def test_the_mesh_policies_apply_on_top_of_the_node(federated):
    server, data, tokens = federated
    got = query(server, tokens["analyst"],
                "SELECT region, count(*) AS n, min(rider) AS rider FROM mobility.trips.trips GROUP BY region")
    # The row filter keeps the analyst's region; the platform rule redacts pii.
    assert got["region"].to_pylist() == ["north"]
    expected = duck(data, "SELECT count(*) AS n FROM trips WHERE region = 'north'")
    assert got["n"].to_pylist() == expected["n"].to_pylist()
    assert got["rider"].to_pylist() == ["REDACTED"]
